"""PGN on a randomly initialised open_clip ViT-B-32 (no weights needed): the appended-token forward pass equals a
hand-written reference, and training steps leave the vision and text towers bit-for-bit unchanged. Plus PGN's
parameter-count formula (the official CLIP ViT-B/32 PGN: 1,032,304)."""
from __future__ import annotations

import math

import pytest
import torch

from genvpt.classify.methods.pgn import ResNet10, pgn_param_count, resnet_param_count


def _layer_norm(x, ln):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def reference_features(visual, x, prompts):
    """open_clip's ViT forward written out by hand, with ``prompts`` [B, K, D] appended after the positional
    embedding and before ln_pre (official PGN ``_modified_visual_encode``)."""
    W = visual.conv1.weight  # [D, 3, P, P], no bias
    D, _, P, _ = W.shape
    B = x.shape[0]
    patches = x.unfold(2, P, P).unfold(3, P, P)  # [B, 3, gh, gw, P, P]
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(B, -1, 3 * P * P)  # raster order, (c, i, j) flattening
    tok = patches @ W.reshape(D, -1).T
    seq = torch.cat([visual.class_embedding.expand(B, 1, D), tok], dim=1) + visual.positional_embedding
    h = _layer_norm(torch.cat([seq, prompts], dim=1), visual.ln_pre)
    for blk in visual.transformer.resblocks:
        attn = blk.attn
        nh = attn.num_heads
        hd = D // nh
        a = _layer_norm(h, blk.ln_1)
        qkv = a @ attn.in_proj_weight.T + attn.in_proj_bias
        q, k, v = (t.reshape(B, -1, nh, hd).transpose(1, 2) for t in qkv.split(D, dim=-1))
        w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
        o = (w @ v).transpose(1, 2).reshape(B, -1, D)
        h = h + o @ attn.out_proj.weight.T + attn.out_proj.bias
        m = _layer_norm(h, blk.ln_2)
        m = m @ blk.mlp.c_fc.weight.T + blk.mlp.c_fc.bias
        m = 0.5 * m * (1.0 + torch.erf(m / math.sqrt(2.0)))  # nn.GELU (exact)
        h = h + m @ blk.mlp.c_proj.weight.T + blk.mlp.c_proj.bias
    return _layer_norm(h[:, 0], visual.ln_post) @ visual.proj


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for tiny models


@pytest.fixture(scope="module")
def vit_b32():
    from genvpt.clip import build_clip

    torch.manual_seed(0)
    return build_clip("ViT-B-32").freeze()  # random init: open_clip.create_model(..., pretrained=None)


def test_vit_b32_pgn_forward_matches_reference_and_training_keeps_towers_frozen(vit_b32, tmp_path):
    from genvpt.adaptation.semantic import state_hash
    from genvpt.classify.data import ClassifyData
    from genvpt.classify.params import ClassifyParams
    from genvpt.classify.train import build_method, frozen_hashes, train_classifier

    clip = vit_b32
    visual = clip.model.visual
    assert visual.transformer.batch_first and isinstance(visual.transformer.resblocks[0].mlp.gelu, torch.nn.GELU)
    assert visual.pool_type == "tok" and visual.attn_pool is None and visual.conv1.bias is None
    params = ClassifyParams(train={"steps": 2, "batch_size": 2, "checkpoint_every": 1000, "eval_before": False},
                            configs={"pgn": {"method": "pgn"}})  # official: K 16, N 256, ResNet10, input 224
    cfg = params.config("pgn")
    classes = ["cat", "dog", "ship"]

    # 1. the wrapper's appended-token forward == the hand-written reference (fp32)
    m = build_method(cfg, clip, classes, seed=0)
    assert sum(p.numel() for _, p in m.trainable_parameters()) == pgn_param_count(16, 256, 768) == 1_032_304
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 224, 224, generator=g)
    with torch.no_grad():
        prompts = m.prompt_tokens(x)
        assert prompts.shape == (2, 16, 768)
        ref = reference_features(visual, x, prompts)
        ours = m.features(x)  # = prompted_features(visual, x, m.prompt_tokens(x))
    scale = float(ref.abs().max())
    assert torch.allclose(ours, ref, atol=2e-5 * scale, rtol=1e-4), float((ours - ref).abs().max())
    # (the no-prompt path equals the tower's own forward and prompts change the output: tests/test_classify_methods.py)

    # 2. a couple of PGN training steps at batch 2: vision and text towers bit-for-bit unchanged
    sd = clip.model.state_dict()
    visual_before = state_hash({k: v for k, v in sd.items() if k.startswith("visual.")})
    text_before = state_hash({k: v for k, v in sd.items() if not k.startswith("visual.")})
    images = torch.randint(0, 256, (4, 3, 32, 32), generator=g, dtype=torch.uint8)
    data = ClassifyData(images, torch.tensor([0, 1, 2, 0]), classes)
    rec = train_classifier(cfg, clip=clip, train_data=data, out_dir=tmp_path / "pgn", seed=0)
    sd = clip.model.state_dict()
    assert state_hash({k: v for k, v in sd.items() if k.startswith("visual.")}) == visual_before
    assert state_hash({k: v for k, v in sd.items() if not k.startswith("visual.")}) == text_before
    assert rec["frozen_verified"] == ["text", "visual"] and rec["frozen_sha256"] == frozen_hashes(clip)
    assert rec["trainable_params"] == 1_032_304 and rec["method_info"]["param_formula"] == 1_032_304
    assert rec["steps"] == 2 and all(p.grad is None for p in clip.parameters())
    trained = torch.load(tmp_path / "pgn" / "model.pt", weights_only=True)["state_dict"]
    assert not torch.equal(trained["library"], m.library.detach().cpu())  # training moved the prompts


def test_pgn_param_count_formula():
    from genvpt.classify.methods.pgn import PGNParams

    assert pgn_param_count(16, 256, 768) == 1_032_304  # the released CLIP ViT-B/32 PGNs: (256, 768) + (4096, 128)
    assert resnet_param_count(16 * 256) == 1_032_304 - 256 * 768
    for K, N, ch, blocks in [(4, 16, (16, 32, 64, 128), 1), (8, 32, (8, 16), 2), (2, 5, (4, 4, 8), 1)]:
        net = ResNet10(K * N, ch, blocks)
        assert sum(p.numel() for p in net.parameters()) == resnet_param_count(K * N, ch, blocks)
    assert PGNParams().num_prompts == 16 and PGNParams().library_size == 256
    y = ResNet10(12)(torch.randn(2, 3, 64, 64))
    assert y.shape == (2, 12)
