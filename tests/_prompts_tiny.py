"""Tiny random VAR / multi-scale VQ-VAE / CLIP and token data for the prompt tests (built in milliseconds)."""
from __future__ import annotations

import pytest
import torch

from genvpt.generators.var import VAR, VARConfig
from genvpt.tokenizers.msvq import MSVQConfig, MultiScaleVQVAE

PATCH_NUMS = (1, 2, 3, 4)  # latent 4x4, images 8x8 (downsample 2)
CLASSES = ["circle", "square", "star", "heart"]


def tiny_var(seed: int = 0, **kw) -> VAR:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=32, Cvae=8, num_classes=len(CLASSES), depth=2, embed_dim=32, num_heads=2,
               patch_nums=PATCH_NUMS)
    cfg.update(kw)
    var = VAR(VARConfig(**cfg))
    with torch.no_grad():  # VAR's init makes AdaLN gates ~1e-5 (blocks nearly identity); wake them up for tests
        for blk in var.blocks:
            blk.ada_lin[-1].weight.normal_(0, 0.05)
            blk.ada_lin[-1].bias.normal_(0, 0.3)
        var.head.weight.normal_(0, 0.2)
    return var.eval()


def tiny_tokenizer(seed: int = 1) -> MultiScaleVQVAE:
    torch.manual_seed(seed)
    tok = MultiScaleVQVAE(MSVQConfig(vocab_size=32, z_channels=8, ch=16, ch_mult=(1, 2), num_res_blocks=1,
                                     patch_nums=PATCH_NUMS, norm_groups=8, using_sa=False, using_mid_sa=False))
    with torch.no_grad():
        tok.quantize.embedding.weight.normal_(0, 1.0)
    return tok.eval().requires_grad_(False)


def tiny_clip():
    from genvpt.clip import build_clip

    torch.manual_seed(2)
    return build_clip("genvpt-tiny-vit", model_cfg={
        "embed_dim": 16,
        "vision_cfg": {"image_size": 8, "layers": 1, "width": 32, "head_width": 16, "patch_size": 4},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }).freeze()


def tiny_data(tokenizer, n: int = 24, seed: int = 3, noise_seed: int | None = None):
    """Class-dependent images (a random template per class, from ``seed``, plus noise from ``noise_seed``)."""
    from genvpt.prompts.train import TrainData

    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % len(CLASSES)
    base = torch.rand(len(CLASSES), 3, 8, 8, generator=g) * 2 - 1
    if noise_seed is not None:
        g = torch.Generator().manual_seed(noise_seed)
    imgs = (base[labels] + 0.3 * torch.randn(n, 3, 8, 8, generator=g)).clamp(-1, 1)
    with torch.no_grad():
        scales = tokenizer.img_to_idxBl(imgs)
    caps = [f"a {'big' if i % 2 else 'small'} {CLASSES[int(c)]} number {i}" for i, c in enumerate(labels)]
    return TrainData(scales, labels, CLASSES, caps)

