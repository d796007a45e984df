"""Prompt inversion: token prompts -> RGB patches through conv1's pseudo-inverse. In conv1's range the patches
re-embed to the tokens (minus the slot's positional embedding) and the RGB-prompted model equals the token-prompted
one; out of range the gap is measured and the ln_pre-aware solve never does worse after ln_pre."""
from __future__ import annotations

import pytest
import torch

from genvpt.classify.inversion import (default_replace_slots, embed_patches, invert_tokens, inversion_report,
                                       patch_inverse, pixel_mode, place_append, place_replace, to_rgb)
from genvpt.classify.vit import forward_canvas, patch_tokens, prompted_features, run_tokens


def clip_with(width: int, patch: int, image: int, seed: int = 0):
    from genvpt.clip import build_clip

    torch.manual_seed(seed)
    return build_clip("genvpt-tiny-vit", model_cfg={
        "embed_dim": 32, "vision_cfg": {"image_size": image, "layers": 2, "width": width, "head_width": 32,
                                        "patch_size": patch},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}).freeze()


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for tiny models


@pytest.fixture(scope="module")
def full_rank():
    return clip_with(64, 8, 32)  # conv1: 64 x 192, full row rank: every token is in range


@pytest.fixture(scope="module")
def deficient():
    return clip_with(64, 4, 16)  # conv1: 64 x 48, rank 48: most tokens are not in range


def test_in_range_tokens_re_embed_exactly(full_rank, deficient):
    v = full_rank.model.visual
    inv = patch_inverse(v)
    assert inv.full_rank and inv.rank == 64
    g = torch.Generator().manual_seed(0)
    t = torch.randn(2, 4, 64, generator=g)
    pos = v.positional_embedding.detach()[1:5]
    patches = invert_tokens(inv, t, pos)
    assert patches.shape == (2, 4, 3, 8, 8)
    assert torch.allclose(embed_patches(v, patches), t - pos, atol=1e-5)  # conv1(x) = p - e_s
    # a rank-deficient conv1 still inverts tokens that lie in its range exactly
    vd = deficient.model.visual
    invd = patch_inverse(vd)
    assert not invd.full_rank and invd.rank == 48
    inside = embed_patches(vd, torch.randn(2, 3, 3, 4, 4, generator=g))  # [2, 3, 64], in range by construction
    assert torch.allclose(embed_patches(vd, invert_tokens(invd, inside, ln_invariant=False)), inside, atol=1e-5)


def test_a_conv1_bias_is_subtracted_before_the_solve():
    clip = clip_with(64, 8, 32)
    v = clip.model.visual
    conv = torch.nn.Conv2d(3, 64, 8, stride=8, bias=True)
    with torch.no_grad():
        conv.weight.copy_(v.conv1.weight)
        conv.bias.normal_(0, 0.5)
    v.conv1 = conv
    t = torch.randn(2, 4, 64, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(embed_patches(v, invert_tokens(patch_inverse(v), t)), t, atol=1e-5)


def test_append_placement_reproduces_the_token_prompted_model(full_rank):
    v = full_rank.model.visual
    inv = patch_inverse(v)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 3, 32, 32, generator=g)
    for k in (4, 8):  # whole rows of the 4-wide patch grid
        t = torch.randn(3, k, 64, generator=g) * 0.5
        with torch.no_grad():
            want = prompted_features(v, x, t)
            canvas = place_append(x, invert_tokens(inv, t), grid_width=4)
            got = forward_canvas(v, canvas)
        assert canvas.shape == (3, 3, 32 + 8 * (k // 4), 32)
        assert torch.allclose(canvas[..., :32, :], x)  # the image itself is untouched
        assert torch.allclose(got, want, atol=1e-4), float((got - want).abs().max())
    with pytest.raises(ValueError, match="multiple of the patch grid's width 4"):
        place_append(x, invert_tokens(inv, torch.randn(3, 3, 64)), grid_width=4)


def test_replace_placement_runs_the_unchanged_model(full_rank):
    v = full_rank.model.visual
    inv = patch_inverse(v)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 32, 32, generator=g)
    t = torch.randn(2, 3, 64, generator=g)
    slots = default_replace_slots((4, 4), 3)
    assert slots == [13, 14, 15]
    pos = v.positional_embedding.detach()[[1 + s for s in slots]]
    with torch.no_grad():
        got = v(place_replace(x, invert_tokens(inv, t, pos), slots, 4))  # the tower's own forward pass
        seq = patch_tokens(v, x)[:, :1 + 16 - 3]  # [cls, patches 0..12]: the overwritten slots are gone
        want = run_tokens(v, torch.cat([seq, t], dim=1), seq.shape[1])
    assert torch.allclose(got, want, atol=1e-4), float((got - want).abs().max())


def test_out_of_range_gap_is_reported_and_ln_aware_solve_helps(deficient):
    v = deficient.model.visual
    inv = patch_inverse(v)
    g = torch.Generator().manual_seed(3)
    t = torch.randn(4, 4, 64, generator=g)

    def post_ln_err(ln_invariant: bool) -> float:
        re = embed_patches(v, invert_tokens(inv, t, ln_invariant=ln_invariant))
        a, b = v.ln_pre(re), v.ln_pre(t)
        return float(((a - b).norm(dim=-1) / b.norm(dim=-1)).mean())

    plain, aware = post_ln_err(False), post_ln_err(True)
    assert 0.1 < aware <= plain + 1e-6  # 16 of 64 directions lost; the free per-token constant never hurts


def _trained(clip, method: str, tmp_path, **opts):
    from genvpt.classify.data import ClassifyData
    from genvpt.classify.params import ClassifyParams
    from genvpt.classify.train import load_classifier, train_classifier

    size = clip.image_size[0]
    g = torch.Generator().manual_seed(4)
    labels = torch.arange(24) % 2
    img = (torch.rand(24, 3, size, size, generator=g) * 80).to(torch.uint8)
    img[labels == 1, :, : size // 2] += 150  # class 1: bright top half
    data = ClassifyData(img, labels, ["dark", "bright top"])
    p = ClassifyParams(train={"steps": 8, "batch_size": 8, "augment": {"enabled": False}, "eval_before": False},
                       configs={"c": {"method": method, **opts}})
    train_classifier(p.config("c"), clip=clip, train_data=data, out_dir=tmp_path)
    return load_classifier(tmp_path / "model.pt", clip), data


def test_inversion_report_token_vs_rgb(full_rank, deficient, tmp_path):
    m, data = _trained(full_rank, "pgn", tmp_path / "pgn", num_prompts=4, library_size=8)
    rep = inversion_report(m, data, placement="append")
    assert rep["tokens_in_range"] and rep["conv1_rank"] == 64
    assert rep["top1_rgb_float"] == rep["top1_tokens"] and rep["agree_float"] == 1.0
    assert rep["max_logit_diff_float"] < 1e-3 and rep["token_rel_err_max"] < 1e-4
    assert 0.0 <= rep["pixels_out_of_range"] <= 1.0 and rep["agree_uint8"] >= 0.9
    rep_r = inversion_report(m, data, placement="replace")
    assert rep_r["top1_rgb_float"] == rep_r["top1_tokens_dropped"] and rep_r["slots"] == [12, 13, 14, 15]
    # rank-deficient conv1 (IIP, 4 prompts on a 4-wide grid): the gap is measured, not hidden
    mi, data_d = _trained(deficient, "iip", tmp_path / "iip", num_prompts=4)
    rep_d = inversion_report(mi, data_d, placement="append")
    assert not rep_d["tokens_in_range"] and rep_d["token_rel_err_mean"] > 0.05
    assert set(rep_d) >= {"top1_tokens", "top1_rgb_float", "top1_rgb_clamp", "top1_rgb_uint8", "agree_float",
                          "post_ln_rel_err_mean", "max_logit_diff_float"}


def test_pixel_modes(full_rank):
    p = torch.randn(2, 3, 3, 8, 8) * 3
    clamped = to_rgb(full_rank, pixel_mode(full_rank, p, "clamp"))
    assert clamped.min() >= -1e-6 and clamped.max() <= 1 + 1e-6
    q = to_rgb(full_rank, pixel_mode(full_rank, p, "uint8")) * 255
    assert torch.allclose(q, q.round(), atol=1e-3)
    assert torch.equal(pixel_mode(full_rank, p, "float"), p)
