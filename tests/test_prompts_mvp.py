"""MVP prompt modules, the prefilled baseline, LoRA targets and the differentiable semantic loss on tiny models."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from genvpt.prompts.mvp import (
    FramePrompt,
    PromptedVAR,
    apply_lora,
    base_state_dict,
    build_prompted,
    clip_contrastive_loss,
    soft_fhat,
    state_hash,
)
from genvpt.prompts.params import PromptConfig, PromptsParams
from genvpt.prompts.positions import prompt_positions

from _prompts_tiny import PATCH_NUMS, tiny_data, tiny_tokenizer, tiny_var

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def batch(tok):
    data = tiny_data(tok, n=6)
    with torch.no_grad():
        x = tok.idxBl_to_var_input(data.scales)
    return data.labels, x


def _seq_len_seen(model: PromptedVAR, labels, x) -> tuple[torch.Tensor, int]:
    seen = {}

    def hook(module, args):
        seen["T"] = args[0].shape[1]

    h = model.var.blocks[0].register_forward_pre_hook(hook)
    try:
        logits = model(labels, x)
    finally:
        h.remove()
    return logits, seen["T"]


def test_mvp_adds_no_sequence_length_prefilled_does(batch):
    labels, x = batch
    L = sum(p * p for p in PATCH_NUMS)
    mvp = build_prompted(tiny_var(), PromptConfig(method="mvp", tau=4))
    pre = build_prompted(tiny_var(), PromptConfig(method="prefilled", tau=4))
    n_tokens = mvp.prompt.num_tokens
    assert n_tokens == sum(len(p) for p in prompt_positions(PATCH_NUMS, 4)) == 12  # 4 + 4 + 4
    assert pre.prompt.num_tokens == n_tokens  # the same budget of learnable tokens
    lm, tm = _seq_len_seen(mvp, labels, x)
    lp, tp = _seq_len_seen(pre, labels, x)
    assert tm == L and tp == L + n_tokens
    assert lm.shape == lp.shape == (len(labels), L, 32)


def test_frame_prompt_maps_and_causality(batch):
    labels, x = batch
    var = tiny_var()
    model = build_prompted(var, PromptConfig(method="mvp", tau=4))
    with torch.no_grad():
        frozen = var(labels, x)
        assert torch.equal(model(labels, x), frozen)  # zero-initialised prompts: exactly the frozen VAR
        maps = model.prompt.feature_maps()
        assert maps[0] is None and [m.shape for m in maps[1:]] == [(1, S * S, 32) for S in PATCH_NUMS[1:]]
        # scale 3 (4x4): the corners only (tau=4); rows off the frame stay zero
        model.prompt.tokens[8:12] = torch.randn(4, 32)
        m3 = model.prompt.feature_maps()[3][0]
        assert torch.equal(m3.abs().sum(1).nonzero().flatten(), torch.tensor([0, 3, 12, 15]))
        prompted = model(labels, x)
    # VAR is block-causal: a prompt on scale 3 changes scale 3's logits and leaves the earlier scales untouched
    L012 = 1 + 4 + 9
    assert torch.equal(prompted[:, :L012], frozen[:, :L012])
    assert not torch.allclose(prompted[:, L012:], frozen[:, L012:])


def test_frame_prompt_rejects_bad_positions():
    with pytest.raises(ValueError, match="distinct"):
        FramePrompt((1, 2), 8, [torch.zeros(0, dtype=torch.long), torch.tensor([0, 4])])


@pytest.mark.parametrize("target", ["attn.proj", "ffn.fc1", "ffn.fc2", "ada_lin.1", "head"])
def test_lora_targets_change_outputs(batch, target):
    labels, x = batch
    var = tiny_var()
    with torch.no_grad():
        before = var(labels, x)
    names = apply_lora(var, rank=2, alpha=4, dropout=0.0, targets=[target])
    assert names and all(n.endswith(target) for n in names)
    with torch.no_grad():
        assert torch.allclose(var(labels, x), before)  # lora_B starts at zero
        for n, p in var.named_parameters():
            if ".lora_B." in n:
                p.normal_(0, 0.5)
        assert not torch.allclose(var(labels, x), before, atol=1e-5)
    assert {n for n, p in var.named_parameters() if p.requires_grad} == {n for n, _ in var.named_parameters() if ".lora_" in n}


def test_lora_on_mat_qkv_would_do_nothing_and_is_refused(batch):
    """Why mat_qkv is not a target: VAR's attention reads mat_qkv.weight directly, bypassing the LoRA wrapper."""
    from peft import LoraConfig, inject_adapter_in_model

    labels, x = batch
    var = tiny_var()
    with torch.no_grad():
        before = var(labels, x)
    inject_adapter_in_model(LoraConfig(r=2, lora_alpha=4, target_modules=["mat_qkv"]), var)
    with torch.no_grad():
        for n, p in var.named_parameters():
            if ".lora_B." in n:
                p.normal_(0, 1.0)
        assert torch.equal(var(labels, x), before)
    with pytest.raises(ValueError, match="silently"):
        PromptConfig(method="lora", lora_targets=["attn.mat_qkv"])


def test_base_state_dict_folds_lora_names():
    var = tiny_var()
    h = state_hash(var)
    apply_lora(var, 2, 4, 0.0, ["attn.proj", "head"])
    assert set(base_state_dict(var)) == set(tiny_var().state_dict())
    assert state_hash(var) == h


def test_soft_fhat_of_confident_logits_is_the_tokenizers_fhat(tok):
    data = tiny_data(tok, n=5)
    gt = torch.cat(data.scales, dim=1)
    logits = 60.0 * F.one_hot(gt, 32).float()
    with torch.no_grad():
        ref = tok.embed_to_fhat(tok.idxBl_to_h(data.scales), all_to_max_scale=True, last_one=False)
    f2, f4 = soft_fhat(logits, tok, [2, 4])
    assert torch.allclose(f2, ref[1], atol=1e-4) and torch.allclose(f4, ref[3], atol=1e-4)
    g = torch.Generator().manual_seed(0)
    (f4g,) = soft_fhat(logits, tok, [4], mode="gumbel", generator=g)
    assert torch.allclose(f4g, ref[3], atol=1e-4)  # straight-through forward = the hard codes


def test_soft_fhat_is_differentiable(tok):
    logits = torch.randn(2, 30, 32, requires_grad=True)
    for mode in ("softmax", "gumbel"):
        (f,) = soft_fhat(logits, tok, [4], mode=mode, generator=torch.Generator().manual_seed(1))
        img = tok.fhat_to_img(f)
        (g,) = torch.autograd.grad(img.square().mean(), logits)
        assert g.abs().sum() > 0


def test_clip_loss_matches_open_clip_for_distinct_texts_and_handles_duplicates():
    import open_clip

    torch.manual_seed(0)
    img = F.normalize(torch.randn(6, 16), dim=-1)
    txt = F.normalize(torch.randn(6, 16), dim=-1)
    ours = clip_contrastive_loss(img, txt, torch.arange(6), 10.0)
    ref = open_clip.ClipLoss()(img, txt, torch.tensor(10.0))
    assert torch.allclose(ours, ref, atol=1e-6)
    # duplicated texts: images 0 and 1 share text 0 -> both are positives of it, neither is the other's negative
    ids = torch.tensor([0, 0, 1, 2])
    t3 = F.normalize(torch.randn(3, 16), dim=-1)
    good = F.normalize(t3[ids] + 0.01 * torch.randn(4, 16), dim=-1)
    # optimum: text 0 splits its probability over its two images, so the floor is log(2) / 3 texts / 2 directions
    floor = torch.log(torch.tensor(2.0)) / 3 / 2
    assert clip_contrastive_loss(good, t3, ids, 50.0) < floor + 0.01
    assert clip_contrastive_loss(good[[2, 3, 0, 1]], t3, ids, 50.0) > 1.0


def test_params_merge_and_errors():
    p = PromptsParams()
    assert p.config("lora").method == "lora" and p.config("mvp-tau4").tau == 4
    assert p.config("mvp").kappa(6) == 3 and p.config("mvp").kappa(10) == 6  # floor(0.6 K)
    with pytest.raises(ValueError, match="method"):
        PromptsParams(configs={"x": {"tau": 4}})
    with pytest.raises(ValueError, match="configs.x: tua: unknown key"):
        PromptsParams(configs={"x": {"method": "mvp", "tua": 4}})
    with pytest.raises(ValueError, match="tau"):
        PromptsParams(configs={"x": {"method": "mvp", "tau": 2}})
    with pytest.raises(KeyError, match="has: "):
        p.config("nope")


def test_prefix_init_copies_the_input_embeddings_of_the_frame(batch):
    from genvpt.prompts.mvp import init_prefix_from_embeddings

    labels, x = batch
    var = tiny_var()
    model = build_prompted(var, PromptConfig(method="prefilled", tau=4))
    positions = prompt_positions(PATCH_NUMS, 4)
    init_prefix_from_embeddings(model, x[:1], positions)
    # token 0 of the prefix = scale 1 (2x2), position 0 = global index 1 = teacher-forcing input 0
    with torch.no_grad():
        expect = var.word_embed(x[0, 0]) + var.lvl_embed.weight[1] + var.pos_1LC[0, 1]
        # the last prefix token: scale 3 (4x4) corner 15 = global index 1 + 4 + 9 + 15
        g = 1 + 4 + 9 + 15
        expect_last = var.word_embed(x[0, g - 1]) + var.lvl_embed.weight[3] + var.pos_1LC[0, g]
    assert torch.allclose(model.prompt.tokens[0], expect, atol=1e-6)
    assert torch.allclose(model.prompt.tokens[-1], expect_last, atol=1e-6)
