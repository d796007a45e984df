"""Official generator checkpoints and samplers: MaskGIT v2 (Halton-MaskGIT) layout, the valeoai v1.0 sampler,
taming GPT head counts from the run's project config, and head counts that are never guessed."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from genvpt.checkpoint import CheckpointError, CheckpointMismatch
from genvpt.generators import (
    GPT,
    ARConfig,
    MaskGIT,
    MaskGITConfig,
    MaskGITv2,
    MaskGITv2Config,
    detect_family,
    detect_layout,
    load_generator,
    load_pretrained,
    sample_settings,
    save_generator,
)
from genvpt.generators.maskgit import official_unmask_counts
from genvpt.generators.maskgit_halton import swiglu_width
from genvpt.generators.params import GeneratorParams, MaskGITSampleParams

pytestmark = pytest.mark.usefixtures("one_thread")

V, NC, D, HEADS, DEPTH = 32, 3, 32, 4, 2


def tiny_v1(**kw):
    cfg = dict(vocab_size=V, grid=4, num_classes=NC, hidden_dim=16, depth=2, heads=2, mlp_dim=32, dropout=0.0)
    cfg.update(kw)
    torch.manual_seed(0)
    return MaskGIT(MaskGITConfig(**cfg)).eval()


def tiny_v2(randomize=True, **kw):
    cfg = dict(vocab_size=V, grid=4, num_classes=NC, hidden_dim=D, depth=DEPTH, heads=HEADS, mlp_dim=4 * D, register=1)
    cfg.update(kw)
    torch.manual_seed(0)
    m = MaskGITv2(MaskGITv2Config(**cfg)).eval()
    if randomize:  # the official init zeroes the adaLN layers (blocks = identity): make every weight matter
        with torch.no_grad():
            for p in m.parameters():
                p.normal_(0.0, 0.3)
    return m


# ------------------------------------------------------------------------------------------------ MaskGIT v2
def v2_expected_shapes(depth=DEPTH, register=1, F_=256):
    exp = {
        "cls_emb.weight": (NC + 1, D), "tok_emb.weight": (V + 1, D), "pos_emb.weight": (16, D),
        "last_norm.norm_final.weight": (D,), "last_norm.norm_final.bias": (D,),
        "last_norm.mlp.1.weight": (2 * D, D), "last_norm.mlp.1.bias": (2 * D,),
        "head.weight": (V + 1, D), "head.bias": (V + 1,),
    }
    if register:
        exp["reg_tokens.weight"] = (register, D)
    for i in range(depth):
        p = f"transformer.layers.{i}."
        exp.update({
            p + "mlp.1.weight": (6 * D, D), p + "mlp.1.bias": (6 * D,), p + "ln1.weight": (D,), p + "ln2.weight": (D,),
            p + "attn.wq.weight": (D, D), p + "attn.wk.weight": (D, D), p + "attn.wv.weight": (D, D),
            p + "attn.wo.weight": (D, D),
            p + "ff.w1.weight": (F_, D), p + "ff.w2.weight": (D, F_), p + "ff.w3.weight": (F_, D),
        })
    return exp


def test_v2_state_dict_layout_matches_halton_maskgit():
    m = tiny_v2(randomize=False)
    assert swiglu_width(4 * D) == 256 and swiglu_width(3072) == 2048 and swiglu_width(4096) == 2816
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == v2_expected_shapes()
    assert m.head.weight is m.tok_emb.weight  # tied, as the official model
    assert m.cfg.layout == "v2" and m.family == "maskgit" and m.mask_id == V and m.null_label == NC
    assert "reg_tokens.weight" not in tiny_v2(randomize=False, register=0).state_dict()
    sd = m.state_dict()
    assert detect_family(sd) == "maskgit" and detect_layout(sd) == "v2"
    assert detect_layout(tiny_v1().state_dict()) == "v1" and detect_family(tiny_v1().state_dict()) == "maskgit"


def _reference_v2(sd, tokens, labels, heads=HEADS, register=1):
    """Halton-MaskGIT's Transformer.forward written out from its source, on a state dict."""
    B = tokens.shape[0]
    x = tokens.reshape(B, -1)
    N = x.shape[1]
    y = sd["cls_emb.weight"][labels]

    def rms(t, w=None, b=None):
        o = t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-5)
        o = o if w is None else w * o
        return o if b is None else o + b

    def mod(t, shift, scale):
        return t * (1 + scale[:, None]) + shift[:, None]

    h = sd["tok_emb.weight"][x] + sd["pos_emb.weight"][:N]
    if register:
        h = torch.cat([h, sd["reg_tokens.weight"].expand(B, -1, -1)], 1)
    depth = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("transformer.layers."))
    for i in range(depth):
        p = f"transformer.layers.{i}."
        g1, b1, a1, g2, b2, a2 = F.linear(F.silu(y), sd[p + "mlp.1.weight"], sd[p + "mlp.1.bias"]).chunk(6, 1)
        a = mod(rms(h, sd[p + "ln1.weight"]), g1, b1)
        q, k, v = rms(a @ sd[p + "attn.wq.weight"].T), rms(a @ sd[p + "attn.wk.weight"].T), a @ sd[p + "attn.wv.weight"].T
        T, hd = h.shape[1], D // heads
        q, k, v = (t.view(B, T, heads, hd).transpose(1, 2) for t in (q, k, v))
        att = ((q @ k.transpose(-1, -2)) / math.sqrt(hd)).softmax(-1) @ v
        h = h + a1[:, None] * (att.transpose(1, 2).reshape(B, T, D) @ sd[p + "attn.wo.weight"].T)
        a = mod(rms(h, sd[p + "ln2.weight"]), g2, b2)
        f = (F.silu(a @ sd[p + "ff.w1.weight"].T) * (a @ sd[p + "ff.w3.weight"].T)) @ sd[p + "ff.w2.weight"].T
        h = h + a2[:, None] * f
    h = h[:, :N]
    shift, scale = F.linear(F.silu(y), sd["last_norm.mlp.1.weight"], sd["last_norm.mlp.1.bias"]).chunk(2, 1)
    h = mod(rms(h, sd["last_norm.norm_final.weight"], sd["last_norm.norm_final.bias"]), shift, scale)
    return h @ sd["head.weight"].T + sd["head.bias"]


def test_v2_forward_matches_the_official_formulas():
    m = tiny_v2()
    tok = torch.randint(0, V + 1, (3, 4, 4))
    lab = torch.tensor([0, 2, NC])
    ref = _reference_v2({k: v.detach() for k, v in m.state_dict().items()}, tok, lab)
    with torch.no_grad():
        assert torch.allclose(m(tok, lab, with_mask_logit=True), ref, atol=1e-4)
        assert torch.allclose(m(tok, lab), ref[..., :V], atol=1e-4)


def test_v2_official_checkpoint_loads_with_layout_and_same_outputs(tmp_path, caplog):
    m = tiny_v2()
    sd = {f"module._orig_mod.{k}": v for k, v in m.state_dict().items()}  # DDP + torch.compile prefixes
    path = tmp_path / "ImageNet_384_large.pth"
    torch.save({"iter": 10, "global_epoch": 1, "model_state_dict": sd, "optimizer_state_dict": None}, path)
    with caplog.at_level("INFO", logger="genvpt.generators"):
        loaded = load_generator(path, heads=HEADS)
    assert isinstance(loaded, MaskGITv2) and loaded.cfg.layout == "v2" and loaded.family == "maskgit"
    assert "Halton-MaskGIT v2 layout" in caplog.text
    c = loaded.cfg
    assert (c.vocab_size, c.grid, c.num_classes, c.hidden_dim, c.depth, c.heads, c.ff_dim, c.register) == \
        (V, 4, NC, D, DEPTH, HEADS, 256, 1)
    tok, lab = torch.randint(0, V + 1, (2, 4, 4)), torch.tensor([1, 2])
    pe = torch.randn(1, 3, D)
    with torch.no_grad():
        assert torch.equal(loaded(tok, lab), m(tok, lab))
        assert torch.equal(loaded(tok, lab, prefix_embeds=pe), m(tok, lab, prefix_embeds=pe))
        assert torch.equal(loaded(tok, None, prefix_embeds=pe, replace_class=True),
                           m(tok, torch.tensor([1, 2]), prefix_embeds=pe, replace_class=True))
    # the size the caller expects is checked, and the family name works for load_pretrained too
    assert load_pretrained("maskgit", path, heads=HEADS, depth=DEPTH).cfg.layout == "v2"
    with pytest.raises(CheckpointError, match=r"Halton-MaskGIT v2 layout\) model of another size \(depth=2\)"):
        load_pretrained("maskgit", path, heads=HEADS, depth=12)
    # heads cannot be read from v2 weights (QK-norm over the full width): required, never guessed
    with pytest.raises(CheckpointError, match=r"MaskGIT v2 \(valeoai Halton-MaskGIT layout\).*heads="):
        load_generator(path)
    # our own file of a v2 model round-trips with its layout
    save_generator(tmp_path / "model.pt", loaded)
    back = load_generator(tmp_path / "model.pt")
    assert isinstance(back, MaskGITv2) and back.cfg == loaded.cfg
    with torch.no_grad():
        assert torch.equal(back(tok, lab), m(tok, lab))


def test_v2_wrong_shapes_are_listed(tmp_path):
    m = tiny_v2()
    sd = m.state_dict()
    sd["transformer.layers.1.attn.wk.weight"] = torch.zeros(D, D + 1)
    del sd["transformer.layers.0.ln2.weight"]
    sd["transformer.layers.0.extra.weight"] = torch.zeros(3)
    path = tmp_path / "bad.pth"
    torch.save({"model_state_dict": sd}, path)
    with pytest.raises(CheckpointMismatch) as err:
        load_generator(path, heads=HEADS)
    msg = str(err.value)
    assert "v2 layout" in msg
    assert "transformer.layers.1.attn.wk.weight: (32, 33) vs (32, 32)" in msg
    assert "transformer.layers.0.ln2.weight" in msg and "transformer.layers.0.extra.weight" in msg
    # a projected (proj > 1) v2 checkpoint is refused by name
    sd = m.state_dict()
    sd["in_proj.weight"] = torch.zeros(D, D, 2, 2)
    torch.save({"model_state_dict": sd}, path)
    with pytest.raises(CheckpointError, match=r"v2.*proj > 1"):
        load_generator(path, heads=HEADS)


def test_v2_trains_and_samples_through_the_maskgit_interface():
    m = tiny_v2()
    tok, lab = torch.randint(0, V, (4, 4, 4)), torch.tensor([0, 1, 2, 0])
    pe = torch.randn(1, 2, D, requires_grad=True)
    loss = m.loss(tok, None, prefix_embeds=pe, replace_class=True, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and pe.grad.abs().sum() > 0
    for sampler in ("genvpt", "official_v1"):
        a = m.sample(lab, generator=torch.Generator().manual_seed(1), steps=4, cfg=2.0, sampler=sampler)
        b = m.sample(lab, generator=torch.Generator().manual_seed(1), steps=4, cfg=2.0, sampler=sampler)
        assert a.shape == (4, 4, 4) and torch.equal(a, b) and (a < V).all()
    out = m.sample(lab, generator=torch.Generator().manual_seed(1), steps=3, prefix_embeds=pe.detach(),
                   uncond_prefix_embeds=torch.zeros(1, 2, D), replace_class=True, cfg=1.0)
    assert out.shape == (4, 4, 4)


def test_v1_heads_are_required_not_guessed(tmp_path):
    m = tiny_v1()
    path = tmp_path / "MaskGIT_ImageNet_256.pth"
    torch.save({"iter": 1, "global_epoch": 0, "model_state_dict": m.state_dict(), "optimizer_state_dict": None}, path)
    with pytest.raises(CheckpointError, match=r"MaskGIT v1 \(valeoai Maskgit-pytorch v1.0 layout\).*heads="):
        load_pretrained("maskgit", path, vocab_size=V)
    loaded = load_generator(path, heads=2, vocab_size=V)
    assert isinstance(loaded, MaskGIT) and loaded.cfg.layout == "v1"


# ------------------------------------------------------------------------------------------------ official sampler
def _adap_sche(step, n, mode):
    """valeoai v1.0 Trainer/vit.py adap_sche, transcribed."""
    r = torch.linspace(1, 0, step)
    val = {"linear": 1 - r, "square": 1 - r ** 2, "cosine": torch.cos(r * math.pi * 0.5),
           "arccos": torch.arccos(r) / (math.pi * 0.5), "root": 1 - r ** 0.5}[mode]
    sche = ((val / val.sum()) * n).round()
    sche[sche == 0] = 1
    sche[-1] += n - sche.sum()
    return sche.int().tolist()


@pytest.mark.parametrize("mode", ["arccos", "cosine", "linear", "square", "root"])
@pytest.mark.parametrize("steps,n", [(8, 256), (12, 256), (15, 1024), (4, 16), (12, 16)])
def test_official_counts_follow_adap_sche(mode, steps, n):
    counts = official_unmask_counts(steps, n, mode)
    assert counts == _adap_sche(steps, n, mode) and sum(counts) == n
    assert all(c >= 1 for c in counts[:-1])


def test_official_counts_known_values():
    # the published setting: 8 arccos steps over 16x16 tokens
    assert official_unmask_counts(8, 256, "arccos") == [1, 18, 26, 32, 38, 43, 48, 50]
    assert official_unmask_counts(4, 16, "arccos") == [1, 4, 5, 6]
    with pytest.raises(ValueError, match="steps >= 2"):
        official_unmask_counts(1, 16)


@pytest.mark.parametrize("steps,schedule", [(4, "arccos"), (8, "cosine"), (12, "arccos")])
def test_official_sampler_reveals_the_scheduled_count_per_step(monkeypatch, steps, schedule):
    m = tiny_v1()
    with torch.no_grad():
        m.bias[:, V] = -1e4  # never sample MASK, so the still-masked count is visible in the inputs
    seen = []
    orig = MaskGIT.forward

    def spy(self, tokens, labels=None, **kw):
        assert kw.get("with_mask_logit") is True
        seen.append((tokens == self.mask_id).sum(1).tolist())
        return orig(self, tokens, labels, **kw)

    monkeypatch.setattr(MaskGIT, "forward", spy)
    m.sample(torch.tensor([0, 1]), generator=torch.Generator().manual_seed(0), steps=steps, schedule=schedule,
             sampler="official_v1")
    counts = official_unmask_counts(steps, 16, schedule)
    masked = [16 - sum(counts[:t]) for t in range(steps) if 16 - sum(counts[:t]) > 0]
    assert seen == [[k, k] for k in masked]


@pytest.mark.parametrize("sampler,cfg,steps", [("official_v1", 3.0, 4), ("official_v1_2023", 4.0, 4),
                                                ("official_v1", 6.0, 7)])
def test_official_sampler_ramps_guidance(monkeypatch, sampler, cfg, steps):
    """Fake logits make the guided argmax equal round(w): cond_k = -k^2/2, uncond_k = cond_k - k, so
    (1+w) cond - w uncond = k w - k^2/2 peaks at k = w. Tokens revealed at step t then carry code w_t."""
    m = tiny_v1()
    K = torch.arange(V + 1, dtype=torch.float32)
    cond = torch.where(K < 8, -K ** 2 / 2, torch.full_like(K, -1e9))
    uncond = torch.where(K < 8, cond - K, cond)
    calls = []

    def fake(self, tokens, labels=None, *, prefix_embeds=None, replace_class=False, with_mask_logit=False):
        B = tokens.shape[0]
        calls.append(labels.tolist())
        is_cond = (labels != self.null_label).float()[:, None, None]
        out = is_cond * cond + (1 - is_cond) * uncond
        out = out.expand(B, 16, V + 1)
        return out if with_mask_logit else out[..., :V]

    monkeypatch.setattr(MaskGIT, "forward", fake)
    out = m.sample(torch.tensor([1, 2]), generator=torch.Generator().manual_seed(0), steps=steps, cfg=cfg,
                   temperature=0, choice_temperature=0, schedule="arccos", sampler=sampler)
    assert all(c == [1, 2, NC, NC] for c in calls)  # cond and null-class branches in one batch
    denom = steps - 1 if sampler == "official_v1" else steps
    w = [cfg * t / denom for t in range(steps)]
    assert all(abs(x - round(x)) < 1e-9 for x in w)
    counts = official_unmask_counts(steps, 16, "arccos")
    want = np.zeros(V, dtype=int)
    for t, c in enumerate(counts):
        want[int(round(w[t]))] += c
    for row in out.view(2, -1):
        assert np.array_equal(np.bincount(row.numpy(), minlength=V), want)


def test_official_sampler_keeps_the_mask_row_and_clamps_like_the_official_decode():
    m = tiny_v1()
    with torch.no_grad():
        m.bias[:, V] = 1e4  # MASK always sampled
    out = m.sample(torch.tensor([0]), generator=torch.Generator().manual_seed(0), steps=4, sampler="official_v1")
    assert (out == V - 1).all()
    out = m.sample(torch.tensor([0]), generator=torch.Generator().manual_seed(0), steps=4)  # genvpt: codes only
    assert (out < V).all()


def test_official_sampler_is_deterministic_and_the_default_is_unchanged():
    m = tiny_v1()
    lab = torch.tensor([0, 1, 2])
    kw = dict(steps=6, cfg=3.0, schedule="arccos", sampler="official_v1")
    a = m.sample(lab, generator=torch.Generator().manual_seed(5), **kw)
    b = m.sample(lab, generator=torch.Generator().manual_seed(5), **kw)
    c = m.sample(lab, generator=torch.Generator().manual_seed(6), **kw)
    assert torch.equal(a, b) and not torch.equal(a, c)
    d = m.sample(lab, generator=torch.Generator().manual_seed(5), steps=6)
    e = m.sample(lab, generator=torch.Generator().manual_seed(5), steps=6, sampler="genvpt")
    assert torch.equal(d, e)
    with pytest.raises(ValueError, match="sampler"):
        m.sample(lab, steps=4, sampler="halton")
    with pytest.raises(ValueError, match="steps >= 2"):
        m.sample(lab, steps=1, sampler="official_v1")


def test_sampler_option_in_params():
    assert MaskGITSampleParams().sampler == "genvpt"
    assert sample_settings(GeneratorParams(), "maskgit")["sampler"] == "genvpt"
    p = MaskGITSampleParams(sampler="official_v1", schedule="arccos", steps=8, cfg=3.0)
    m = tiny_v1()
    out = m.sample(torch.tensor([0]), generator=torch.Generator().manual_seed(0), **p.model_dump())
    assert out.shape == (1, 4, 4)
    with pytest.raises(ValueError, match="steps >= 2"):
        MaskGITSampleParams(sampler="official_v1", steps=1)


# ------------------------------------------------------------------------------------------------ taming GPT heads
def _taming_run(tmp_path, *, n_head=2, with_yaml=True, permuter=None, yaml_over=None):
    torch.manual_seed(0)
    m = GPT(ARConfig(vocab_size=V, grid=4, num_classes=10, n_layer=2, n_head=n_head, n_embd=16, order="row_major",
                     token_layout="taming")).eval()
    run = tmp_path / "logs" / "2021-01-01T00-00-00_cin_transformer"
    (run / "checkpoints").mkdir(parents=True)
    sd = {f"transformer.{k}": v for k, v in m.state_dict().items()}
    sd["first_stage_model.quantize.embedding.weight"] = torch.zeros(V, 4)
    path = run / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": sd, "global_step": 100, "epoch": 3}, path)
    if with_yaml:
        params = {
            "cond_stage_key": "class_label",
            "transformer_config": {"target": "taming.modules.transformer.mingpt.GPT",
                                   "params": {"vocab_size": V, "block_size": 16, "n_layer": 2, "n_head": n_head, "n_embd": 16}},
            "first_stage_config": {"target": "taming.models.vqgan.VQModel", "params": {"embed_dim": 4, "n_embed": V}},
            "cond_stage_config": {"target": "taming.modules.util.Labelator", "params": {"n_classes": 10}},
        }
        if permuter:
            params["permuter_config"] = {"target": f"taming.modules.transformer.permuter.{permuter}"}
        doc = {"model": {"base_learning_rate": 4.5e-06, "target": "taming.models.cond_transformer.Net2NetTransformer",
                         "params": params}}
        if yaml_over:
            doc["model"]["params"]["transformer_config"]["params"].update(yaml_over)
        (run / "configs").mkdir()
        (run / "configs" / "2021-01-01T00-00-00-project.yaml").write_text(yaml.safe_dump(doc))
        (run / "configs" / "2021-01-01T00-00-00-lightning.yaml").write_text("lightning: {trainer: {gpus: 1}}\n")
    return m, path


def test_taming_heads_come_from_the_project_config(tmp_path):
    m, path = _taming_run(tmp_path, n_head=2)
    loaded = load_generator(path)  # no hints at all
    assert loaded.cfg.n_head == 2 and loaded.cfg.num_classes == 10 and loaded.cfg.order == "row_major"
    tok, lab = torch.randint(0, V, (2, 4, 4)), torch.tensor([3, 9])
    with torch.no_grad():
        assert torch.equal(loaded(tok, lab)[0], m(tok, lab)[0])
    assert load_pretrained("ar", path, n_head=2, order="row_major").cfg.n_head == 2  # agreeing hints are fine
    with pytest.raises(CheckpointError, match=r"n_head=4 was asked for.*project config.*n_head=2"):
        load_pretrained("ar", path, n_head=4)


def test_taming_without_config_or_hint_refuses_to_guess(tmp_path):
    m, path = _taming_run(tmp_path, n_head=2, with_yaml=False)
    with pytest.raises(CheckpointError, match=r"n_head cannot be read from its weights.*generator\.ar\.n_head"):
        load_generator(path)
    tok, lab = torch.randint(0, V, (2, 4, 4)), torch.tensor([3, 9])
    with torch.no_grad():
        right = load_generator(path, n_head=2, num_classes=10)
        assert torch.equal(right(tok, lab)[0], m(tok, lab)[0])
        wrong = load_generator(path, n_head=4, num_classes=10)  # what the old silent default did: other logits
        assert not torch.allclose(wrong(tok, lab)[0], m(tok, lab)[0])


def test_taming_project_config_must_describe_the_weights(tmp_path):
    _, path = _taming_run(tmp_path, yaml_over={"n_layer": 24})
    with pytest.raises(CheckpointError, match=r"describes another transformer: n_layer=24 \(weights: 2\)"):
        load_generator(path)


def test_taming_permuter_gives_the_order(tmp_path):
    _, path = _taming_run(tmp_path, permuter="SpiralOut")
    assert load_generator(path).cfg.order == "spiral_out"
    with pytest.raises(CheckpointError, match=r"order='row_major' was asked for.*SpiralOut"):
        load_pretrained("ar", path, order="row_major")


def test_taming_project_config_beside_the_checkpoint(tmp_path):
    m, path = _taming_run(tmp_path, n_head=4)
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "model.ckpt").write_bytes(path.read_bytes())
    src = next((path.parent.parent / "configs").glob("*-project.yaml"))
    (flat / "project.yaml").write_text(src.read_text())
    assert load_generator(flat / "model.ckpt").cfg.n_head == 4
