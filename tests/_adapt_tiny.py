"""Tiny random backbones of every family, sharing small tokenizers, and class-dependent token data (milliseconds)."""
from __future__ import annotations

import torch

from genvpt.adaptation.data import TrainData
from genvpt.backbones import backbone_class
from genvpt.generators.ar import GPT, ARConfig
from genvpt.generators.maskgit import MaskGIT, MaskGITConfig
from genvpt.generators.var import VAR, VARConfig
from genvpt.tokenizers import VQGAN, MSVQConfig, MultiScaleVQVAE, VQGANConfig

V = 16
CLASSES = ["circle", "square", "star"]
PATCH_NUMS = (1, 2, 4)


def tiny_vqgan():
    torch.manual_seed(0)
    return VQGAN(VQGANConfig(resolution=16, ch=8, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(),
                             z_channels=8, n_embed=V, embed_dim=4, norm_groups=4)).eval()


def tiny_msvq():
    torch.manual_seed(0)
    return MultiScaleVQVAE(MSVQConfig(vocab_size=V, z_channels=4, ch=8, ch_mult=(1, 2, 2), num_res_blocks=1,
                                      patch_nums=PATCH_NUMS, using_sa=False, using_mid_sa=False, norm_groups=4)).eval()


def tiny_generator(family: str, num_classes: int = len(CLASSES), seed: int = 0):
    torch.manual_seed(seed)
    if family == "ar":
        return GPT(ARConfig(vocab_size=V, grid=4, num_classes=num_classes, n_layer=2, n_head=2, n_embd=32)).eval()
    if family == "maskgit":
        return MaskGIT(MaskGITConfig(vocab_size=V, grid=4, num_classes=num_classes, hidden_dim=32, depth=2, heads=2,
                                     mlp_dim=64, dropout=0.0)).eval()
    var = VAR(VARConfig(vocab_size=V, Cvae=4, num_classes=num_classes, depth=2, embed_dim=32, num_heads=2,
                        patch_nums=PATCH_NUMS, drop_path_rate=0.0))
    with torch.no_grad():  # VAR's init makes AdaLN gates ~1e-5 (blocks nearly identity); wake them up for tests
        for blk in var.blocks:
            blk.ada_lin[-1].weight.normal_(0, 0.05)
            blk.ada_lin[-1].bias.normal_(0, 0.3)
        var.head.weight.normal_(0, 0.2)
    return var.eval()


def tiny_backbone(family: str, seed: int = 0, sample_defaults=None):
    tok = tiny_msvq() if family == "var" else tiny_vqgan()
    defaults = sample_defaults if sample_defaults is not None else (
        {"steps": 4, "cfg": 1.0} if family == "maskgit" else {"cfg": 1.0, "top_k": 0})
    return backbone_class(family)(tiny_generator(family, seed=seed), tok, defaults)


def tiny_data(family: str, n: int = 24, seed: int = 3, noise_seed: int | None = None, noise: float = 0.1) -> TrainData:
    """Token data determined by the class (a fixed random map per class and scale) with ``noise`` of the positions
    re-drawn (from ``noise_seed``)."""
    grid = list(PATCH_NUMS) if family == "var" else [4]
    g = torch.Generator().manual_seed(seed)
    protos = [torch.randint(0, V, (len(CLASSES), s * s), generator=g) for s in grid]
    g = torch.Generator().manual_seed(noise_seed if noise_seed is not None else seed + 1)
    labels = torch.arange(n) % len(CLASSES)
    scales = []
    for p in protos:
        t = p[labels].clone()
        m = torch.rand(t.shape, generator=g) < noise
        t[m] = torch.randint(0, V, (int(m.sum()),), generator=g)
        scales.append(t)
    caps = [f"a {'big' if i % 2 else 'small'} {CLASSES[int(c)]} number {i}" for i, c in enumerate(labels)]
    return TrainData(scales, labels, CLASSES, caps)
