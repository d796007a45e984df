"""AR / MaskGIT / VAR models: official layouts, numerics against reference formulas, caches, hooks."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from genvpt.generators import GPT, VAR, ARConfig, MaskGIT, MaskGITConfig, VARConfig, build_var_config
from genvpt.generators.common import KVCache, filter_logits, sample_logits
from genvpt.generators.var import VAR_512_PATCH_NUMS
from genvpt.tokenizers import MSVQConfig, MultiScaleVQVAE

torch.set_grad_enabled(True)

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_ar(**kw):
    cfg = dict(vocab_size=32, grid=4, num_classes=3, n_layer=2, n_head=2, n_embd=16, order="spiral_out")
    cfg.update(kw)
    torch.manual_seed(0)
    return GPT(ARConfig(**cfg)).eval()


def tiny_maskgit(**kw):
    cfg = dict(vocab_size=32, grid=4, num_classes=3, hidden_dim=16, depth=2, heads=2, mlp_dim=32, dropout=0.0)
    cfg.update(kw)
    torch.manual_seed(0)
    return MaskGIT(MaskGITConfig(**cfg)).eval()


def tiny_msvq():
    torch.manual_seed(0)
    cfg = MSVQConfig(vocab_size=32, z_channels=4, ch=8, ch_mult=(1, 2, 2), num_res_blocks=1, patch_nums=(1, 2, 4, 8),
                     using_sa=False, using_mid_sa=False, norm_groups=4)
    return MultiScaleVQVAE(cfg).eval()


def tiny_var(**kw):
    cfg = dict(vocab_size=32, Cvae=4, num_classes=3, depth=2, embed_dim=16, num_heads=2, patch_nums=(1, 2, 4, 8),
               init_adaln_gamma=0.5, drop_path_rate=0.0)
    cfg.update(kw)
    torch.manual_seed(0)
    return VAR(VARConfig(**cfg)).eval()



# ------------------------------------------------------------------------------------------------ common
def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, top_k=2)[0, 2:]).all()
    assert torch.isfinite(filter_logits(logits, top_k=2)[0, :2]).all()
    kept = torch.isfinite(filter_logits(logits, top_p=0.7))[0].tolist()
    assert kept == [True, True, False, False]  # 0.5 < 0.7 -> keep the next; 0.8 >= 0.7 -> stop
    assert torch.isfinite(filter_logits(logits, top_p=0.4))[0].tolist() == [True, False, False, False]
    g = torch.Generator().manual_seed(0)
    draws = sample_logits(logits.expand(500, -1), generator=g, top_k=2)
    assert set(draws.tolist()) == {0, 1}


def test_kv_cache_refuses_overflow():
    c = KVCache(3)
    c.update(torch.zeros(1, 1, 2, 4), torch.zeros(1, 1, 2, 4))
    with pytest.raises(RuntimeError, match="KV cache full"):
        c.update(torch.zeros(1, 1, 2, 4), torch.zeros(1, 1, 2, 4))


# ------------------------------------------------------------------------------------------------ AR
def _reference_gpt_logits(m: GPT, idx: torch.Tensor) -> torch.Tensor:
    """minGPT's forward written out: explicit masked softmax attention with the saved mask buffer."""
    x = m.tok_emb(idx) + m.pos_emb[:, : idx.shape[1]]
    for blk in m.blocks:
        a = blk.attn
        h = blk.ln1(x)
        B, T, C = h.shape
        nh = a.n_head
        k = a.key(h).view(B, T, nh, -1).transpose(1, 2)
        q = a.query(h).view(B, T, nh, -1).transpose(1, 2)
        v = a.value(h).view(B, T, nh, -1).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.shape[-1])
        att = att.masked_fill(a.mask[:, :, :T, :T] == 0, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + a.proj(y)
        x = x + blk.mlp(blk.ln2(x))
    return m.head(m.ln_f(x))


def test_ar_layout_and_reference_numerics():
    m = tiny_ar()
    keys = set(m.state_dict())
    for n in range(2):
        for k in ("ln1.weight", "attn.key.weight", "attn.query.bias", "attn.value.weight", "attn.proj.weight", "attn.mask",
                  "ln2.bias", "mlp.0.weight", "mlp.2.bias"):
            assert f"blocks.{n}.{k}" in keys
    assert {"tok_emb.weight", "pos_emb", "ln_f.weight", "ln_f.bias", "head.weight"} <= keys
    assert "head.bias" not in keys
    assert m.tok_emb.weight.shape == (32 + 3 + 1, 16) and m.head.weight.shape == (32, 16)
    tok = torch.randint(0, 32, (2, 4, 4))
    lab = torch.tensor([0, 2])
    logits, loss = m(tok, lab)
    seq = m.order.to_sequence(tok.view(2, -1))
    idx = torch.cat([lab[:, None] + 32, seq[:, :-1]], 1)
    ref = _reference_gpt_logits(m, idx)
    assert torch.allclose(logits, ref, atol=1e-5)
    assert torch.allclose(loss, F.cross_entropy(ref.reshape(-1, 32), seq.reshape(-1)), atol=1e-5)


def test_ar_is_causal_in_sequence_order():
    m = tiny_ar()
    tok = torch.randint(0, 32, (1, 4, 4))
    lab = torch.tensor([1])
    base, _ = m(tok, lab)
    seq = m.order.to_sequence(tok.view(1, -1)).clone()
    seq[0, 9] = (seq[0, 9] + 1) % 32
    changed, _ = m(m.order.to_raster(seq), lab)
    assert torch.allclose(base[:, :10], changed[:, :10], atol=1e-6)  # positions <= 9 do not see token 9
    assert not torch.allclose(base[:, 10:], changed[:, 10:])


def test_ar_kv_cache_matches_uncached_and_teacher_forcing():
    m = tiny_ar()
    lab = torch.tensor([0, 1, 2])
    prefix = torch.randn(1, 3, 16)
    for kw in ({}, {"prefix_embeds": prefix}, {"cfg": 1.5}, {"prefix_embeds": prefix, "cfg": 2.0, "top_p": 0.9}):
        a = m.sample(lab, generator=torch.Generator().manual_seed(3), **kw)
        b = m.sample(lab, generator=torch.Generator().manual_seed(3), use_cache=False, **kw)
        assert torch.equal(a, b), kw
    greedy = m.sample(lab, generator=None, temperature=0, prefix_embeds=prefix)
    logits, _ = m(greedy, lab, prefix_embeds=prefix)
    assert torch.equal(logits.argmax(-1), m.order.to_sequence(greedy.view(3, -1)))


def test_ar_prefix_keeps_image_positions_and_changes_predictions():
    m = tiny_ar()
    tok = torch.randint(0, 32, (2, 4, 4))
    lab = torch.tensor([0, 1])
    plain, _ = m(tok, lab)
    prompted, _ = m(tok, lab, prefix_embeds=torch.randn(2, 5, 16))
    assert prompted.shape == plain.shape == (2, 16, 32)
    assert not torch.allclose(plain, prompted)


def test_ar_taming_layout_checkpoint_loads(tmp_path):
    from genvpt.generators import load_generator, load_pretrained

    m = tiny_ar(token_layout="taming", num_classes=10, order="row_major")
    sd = {f"transformer.{k}": v for k, v in m.state_dict().items()}
    sd["first_stage_model.encoder.conv_in.weight"] = torch.zeros(2, 3, 3, 3)
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": sd, "global_step": 5}, path)
    loaded = load_pretrained("ar", path, n_head=2, num_classes=10)
    assert loaded.cfg.token_layout == "taming" and loaded.cfg.grid == 4
    tok, lab = torch.randint(0, 32, (2, 4, 4)), torch.tensor([3, 9])
    assert torch.allclose(loaded(tok, lab)[0], m(tok, lab)[0])
    assert load_generator(path, n_head=2).family == "ar"


# ------------------------------------------------------------------------------------------------ MaskGIT
def test_maskgit_valeoai_layout():
    m = tiny_maskgit()
    sd = m.state_dict()
    rows = 32 + 1 + 3 + 1
    expect = {
        "tok_emb.weight": (rows, 16),
        "pos_emb": (1, 17, 16),
        "bias": (17, rows),
        "first_layer.0.weight": (16,), "first_layer.0.bias": (16,), "first_layer.2.weight": (16, 16),
        "first_layer.2.bias": (16,), "first_layer.4.weight": (16,), "first_layer.4.bias": (16,),
        "first_layer.6.weight": (16, 16), "first_layer.6.bias": (16,),
        "last_layer.0.weight": (16,), "last_layer.0.bias": (16,), "last_layer.2.weight": (16, 16),
        "last_layer.2.bias": (16,), "last_layer.4.weight": (16,), "last_layer.4.bias": (16,),
    }
    for i in range(2):
        p = f"transformer.layers.{i}"
        expect.update({
            f"{p}.0.norm.weight": (16,), f"{p}.0.norm.bias": (16,),
            f"{p}.0.fn.mha.in_proj_weight": (48, 16), f"{p}.0.fn.mha.in_proj_bias": (48,),
            f"{p}.0.fn.mha.out_proj.weight": (16, 16), f"{p}.0.fn.mha.out_proj.bias": (16,),
            f"{p}.1.norm.weight": (16,), f"{p}.1.norm.bias": (16,),
            f"{p}.1.fn.net.0.weight": (32, 16), f"{p}.1.fn.net.0.bias": (32,),
            f"{p}.1.fn.net.3.weight": (16, 32), f"{p}.1.fn.net.3.bias": (16,),
        })
    assert {k: tuple(v.shape) for k, v in sd.items()} == expect


def test_maskgit_attention_matches_torch_multihead_attention():
    m = tiny_maskgit()
    ours = m.transformer.layers[0][0].fn.mha
    ref = nn.MultiheadAttention(16, 2, batch_first=True)
    ref.load_state_dict(ours.state_dict())  # same parameter names
    x = torch.randn(3, 17, 16)
    assert torch.allclose(ours(x), ref(x, x, x, need_weights=False)[0], atol=1e-5)


def test_maskgit_class_token_last_and_logits_tied():
    m = tiny_maskgit()
    tok = torch.randint(0, 32, (2, 16))
    lab = torch.tensor([0, 2])
    logits = m(tok, lab)
    x = m.tok_emb(torch.cat([tok, lab[:, None] + 33], 1)) + m.pos_emb
    x = m.last_layer(m.transformer(m.first_layer(x)))
    ref = x @ m.tok_emb.weight.T + m.bias
    assert torch.allclose(logits, ref[:, :16, :32], atol=1e-5)


def test_maskgit_masking_counts_and_loss_on_masked_only():
    m = tiny_maskgit()
    tok = torch.randint(0, 32, (64, 4, 4))
    g = torch.Generator().manual_seed(0)
    masked, mask = m.mask_tokens(tok, generator=g)
    g = torch.Generator().manual_seed(0)
    r = torch.rand(64, generator=g)
    want = torch.ceil(torch.cos(r * math.pi / 2).clamp(1e-6, 1) * 16).long().clamp(1, 16)
    assert torch.equal(mask.sum(1), want)
    assert (masked[mask] == m.mask_id).all() and torch.equal(masked[~mask], tok.view(64, -1)[~mask])
    # the loss ignores unmasked positions: their logits get no gradient
    m.train()
    captured = {}
    orig = m.forward

    def spy(*a, **k):
        out = orig(*a, **k)
        out.retain_grad()
        captured["logits"] = out
        return out

    m.forward = spy
    loss = m.loss(tok, torch.zeros(64, dtype=torch.long), generator=torch.Generator().manual_seed(0))
    loss.backward()
    grad = captured["logits"].grad.abs().sum(-1)
    assert (grad[~mask] == 0).all() and (grad[mask] > 0).all()


def test_maskgit_decoding_fills_every_token_and_accepts_per_step_prompts():
    m = tiny_maskgit()
    lab = torch.tensor([0, 1, 2])
    g = torch.Generator().manual_seed(0)
    out = m.sample(lab, generator=g, steps=4)
    assert out.shape == (3, 4, 4) and (out < 32).all()
    prompts = [torch.randn(1, 2, 16) for _ in range(4)]
    a = m.sample(lab, generator=torch.Generator().manual_seed(1), steps=4, prefix_embeds=prompts, cfg=1.0, cfg_schedule="linear")
    b = m.sample(lab, generator=torch.Generator().manual_seed(1), steps=4, prefix_embeds=prompts, cfg=1.0, cfg_schedule="linear")
    assert torch.equal(a, b) and (a < 32).all()
    with pytest.raises(ValueError, match="per-step prefix_embeds"):
        m.sample(lab, steps=3, prefix_embeds=prompts)


def test_maskgit_decoding_unmasks_on_the_cosine_schedule(monkeypatch):
    m = tiny_maskgit()
    seen = []
    orig = MaskGIT.forward

    def spy(self, tokens, labels=None, **kw):
        seen.append(int((tokens == self.mask_id).sum(1)[0]))
        return orig(self, tokens, labels, **kw)

    monkeypatch.setattr(MaskGIT, "forward", spy)
    m.sample(torch.tensor([0]), generator=torch.Generator().manual_seed(0), steps=4)
    # masked before step t: 16, then floor(16 * cos(pi/2 * t/4)) for t = 1..3
    assert seen == [16] + [math.floor(16 * math.cos(math.pi / 2 * t / 4)) for t in (1, 2, 3)]


# ------------------------------------------------------------------------------------------------ VAR
# The var_d16 state dict from the reference sheet (../shared/reference/var.md), in order.
D16_HEAD = [
    ("pos_start", (1, 1, 1024)), ("pos_1LC", (1, 680, 1024)), ("lvl_1L", (1, 680)),
    ("attn_bias_for_masking", (1, 1, 680, 680)), ("word_embed.weight", (1024, 32)), ("word_embed.bias", (1024,)),
    ("class_emb.weight", (1001, 1024)), ("lvl_embed.weight", (10, 1024)),
]
D16_BLOCK = [
    ("attn.scale_mul_1H11", (1, 16, 1, 1)), ("attn.q_bias", (1024,)), ("attn.v_bias", (1024,)),
    ("attn.zero_k_bias", (1024,)), ("attn.mat_qkv.weight", (3072, 1024)), ("attn.proj.weight", (1024, 1024)),
    ("attn.proj.bias", (1024,)), ("ffn.fc1.weight", (4096, 1024)), ("ffn.fc1.bias", (4096,)),
    ("ffn.fc2.weight", (1024, 4096)), ("ffn.fc2.bias", (1024,)), ("ada_lin.1.weight", (6144, 1024)),
    ("ada_lin.1.bias", (6144,)),
]
D16_TAIL = [
    ("head_nm.ada_lin.1.weight", (2048, 1024)), ("head_nm.ada_lin.1.bias", (2048,)),
    ("head.weight", (4096, 1024)), ("head.bias", (4096,)),
]


def test_var_d16_parity_with_reference_sheet():
    with torch.device("meta"):
        m = VAR(build_var_config(16))
    expect = D16_HEAD + [(f"blocks.{n}.{k}", s) for n in range(16) for k, s in D16_BLOCK] + D16_TAIL
    got = [(k, tuple(v.shape)) for k, v in m.state_dict().items()]
    assert len(got) == 220
    assert got == expect
    assert m.state_dict()["lvl_1L"].dtype == torch.int64
    assert sum(p.numel() for p in m.parameters()) == 310_283_520


@pytest.mark.parametrize("depth,keys,params,kw", [
    (20, 272, 600_917_136, {}),
    (24, 324, 1_033_399_360, {}),
    (30, 402, 2_010_020_356, {}),
    (36, 446, 2_353_893_904, {"patch_nums": VAR_512_PATCH_NUMS, "shared_aln": True}),
])
def test_var_sizes_match_reference_sheet(depth, keys, params, kw):
    with torch.device("meta"):
        m = VAR(build_var_config(depth, **kw))
    sd = m.state_dict()
    assert len(sd) == keys
    assert sum(p.numel() for p in m.parameters()) == params
    assert m.C == 64 * depth and m.blocks[0].attn.heads == depth
    if kw.get("shared_aln"):
        assert tuple(sd["shared_ada_lin.1.weight"].shape) == (13824, 2304) and "blocks.0.ada_gss" in sd
        assert "blocks.0.ada_lin.1.weight" not in sd and sd["pos_1LC"].shape[1] == 2240


def test_var_block_causal_mask():
    m = tiny_var(patch_nums=(1, 2, 3))
    bias = m.attn_bias_for_masking[0, 0]
    lvl = [0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2]
    for i in range(14):
        for j in range(14):
            assert (bias[i, j] == 0) == (lvl[i] >= lvl[j])


def test_var_forward_is_block_causal_and_offsets_act_from_their_scale():
    m = tiny_var()
    x = torch.randn(2, m.L - 1, 4)
    lab = torch.tensor([0, 2])
    base = m(lab, x)
    assert base.shape == (2, 85, 32)
    x2 = x.clone()
    x2[:, 4:20] += 1.0  # scale 2 (4x4) = tokens 5..20 of the full sequence
    changed = m(lab, x2)
    assert torch.allclose(base[:, :5], changed[:, :5], atol=1e-5) and not torch.allclose(base[:, 5:], changed[:, 5:])
    offsets = [None, None, torch.randn(1, 16, 16), None]
    prompted = m(lab, x, input_offsets=offsets)
    assert torch.allclose(base[:, :5], prompted[:, :5], atol=1e-5) and not torch.allclose(base[:, 5:21], prompted[:, 5:21])
    with pytest.raises(ValueError, match="input_offsets"):
        m(lab, x, input_offsets=[None, torch.randn(1, 3, 16), None, None])


def test_var_kv_cache_matches_uncached_with_hooks():
    m, vq = tiny_var(), tiny_msvq()
    lab = torch.tensor([0, 1, 2])
    offsets = [None, torch.randn(1, 4, 16), None, torch.randn(3, 64, 16)]
    for kw in ({}, {"prefix_embeds": torch.randn(1, 3, 16)}, {"input_offsets": offsets, "top_k": 8, "top_p": 0.9},
               {"cfg": 0.0}):
        a = m.sample(lab, tokenizer=vq, generator=torch.Generator().manual_seed(5), **kw)
        b = m.sample(lab, tokenizer=vq, generator=torch.Generator().manual_seed(5), use_cache=False, **kw)
        assert [t.shape for t in a] == [(3, 1), (3, 4), (3, 16), (3, 64)]
        assert all(torch.equal(i, j) for i, j in zip(a, b)), kw


def test_var_greedy_sample_agrees_with_teacher_forcing():
    m, vq = tiny_var(), tiny_msvq()
    lab = torch.tensor([1, 2])
    toks = m.sample(lab, tokenizer=vq, temperature=0, cfg=0.0)
    logits = m(lab, vq.idxBl_to_var_input(toks))
    assert torch.equal(logits.argmax(-1), torch.cat(toks, 1))


def test_var_prefix_tokens_see_only_themselves():
    bias = VAR._prefix_bias(torch.zeros(1, 1, 3, 3), 2)
    assert torch.isinf(bias[0, 0, :2, 2:]).all() and (bias[0, 0, 2:, :2] == 0).all()


def test_categorical_draws_follow_the_probabilities():
    from genvpt.generators.common import categorical

    probs = torch.tensor([[0.0, 0.2, 0.0, 0.8]]).expand(20000, -1)
    draws = categorical(probs, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(draws, minlength=4).float() / 20000
    assert counts[0] == 0 and counts[2] == 0
    assert abs(counts[1] - 0.2) < 0.015 and abs(counts[3] - 0.8) < 0.015


def test_var_cond_and_null_embeds_replace_the_class_embedding():
    m, vq = tiny_var(), tiny_msvq()
    lab = torch.tensor([0, 2])
    cond = m.class_emb(lab).detach()
    null = m.class_emb.weight[3:4].detach()
    kw = dict(tokenizer=vq, cfg=2.0, temperature=0)
    by_label = m.sample(lab, **kw)
    by_embeds = m.sample(None, cond_embeds=cond, null_embeds=null, **kw)
    assert all(torch.equal(a, b) for a, b in zip(by_label, by_embeds))
    other_null = m.sample(None, cond_embeds=cond, null_embeds=torch.randn(1, 16) * 5, **kw)
    assert not all(torch.equal(a, b) for a, b in zip(by_label, other_null))


@pytest.mark.parametrize("case", ["none", "bool", "float", "causal", "causal_chunk"])
def test_cpu_math_attention_matches_sdpa(case, monkeypatch):
    import genvpt.generators.common as common

    g = torch.Generator().manual_seed(0)
    Tq = 5 if case == "causal_chunk" else 9
    q = torch.randn(2, 3, Tq, 8, generator=g)
    k, v = torch.randn(2, 3, 9, 8, generator=g), torch.randn(2, 3, 9, 8, generator=g)
    kw: dict = {"scale": 0.3}
    if case == "bool":
        kw["attn_mask"] = torch.rand(Tq, 9, generator=g) < 0.7
        kw["attn_mask"][:, 0] = True  # every query sees at least one key
    elif case == "float":
        kw["attn_mask"] = torch.where(torch.ones(9, 9).tril().bool(), 0.0, float("-inf"))
    elif case.startswith("causal"):
        kw["causal"] = True
    monkeypatch.setattr(common, "MATH_ATTENTION_MAX_ENTRIES", 1 << 30)
    math_out = common.attend(q, k, v, **kw)
    monkeypatch.setattr(common, "MATH_ATTENTION_MAX_ENTRIES", 0)  # forces torch's SDPA
    sdpa_out = common.attend(q, k, v, **kw)
    torch.testing.assert_close(math_out, sdpa_out, rtol=1e-5, atol=1e-5)
    if case == "causal_chunk":  # the chunk is aligned to the end of the keys: its last row sees every key
        full = F.scaled_dot_product_attention(q[:, :, -1:], k, v, scale=0.3)
        torch.testing.assert_close(math_out[:, :, -1:], full, rtol=1e-5, atol=1e-5)
