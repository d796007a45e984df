"""Small stand-ins for the metrics / report tests: a tiny random CLIP (genvpt.clip.ClipModel around a 2-layer open_clip
model), a tiny class-conditional image sampler, and labelled images a CLIP can tell apart."""
from __future__ import annotations

import torch

TINY_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def tiny_clip(seed: int = 0):
    """genvpt's ClipModel around a 2-layer, 32-wide open_clip ViT / text transformer (random weights, frozen)."""
    from genvpt.clip import build_clip

    torch.manual_seed(seed)
    return build_clip("genvpt-tiny-vit", model_cfg=TINY_CLIP_CFG).freeze()


class TinySampler:
    """A class-conditional 'generator': a random per-class template plus seeded noise, uint8 [B,3,H,W]."""

    num_classes = 12

    def __init__(self, size: int = 16):
        g = torch.Generator().manual_seed(123)
        self.templates = torch.rand(self.num_classes, 3, size, size, generator=g)

    def sample_images(self, labels, *, seed, batch_size, **kw):
        g = torch.Generator().manual_seed(int(seed))
        base = self.templates[labels.cpu()]
        noise = torch.rand(base.shape, generator=g) * float(kw.get("noise", 0.3))
        return ((base * 0.7 + noise).clamp(0, 1) * 255).round().to(torch.uint8)


def class_images(n_per_class: int, num_classes: int = 4, size: int = 32, seed: int = 0, spread: float = 0.15):
    """Labelled uint8 images: class c = a fixed random colour pattern + noise (what CLIP can tell apart)."""
    g = torch.Generator().manual_seed(seed)
    pat = torch.rand(num_classes, 3, size, size, generator=torch.Generator().manual_seed(99))
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    x = pat[labels] + spread * torch.randn(len(labels), 3, size, size, generator=g)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8), labels
