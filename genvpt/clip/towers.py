"""Small convolutional vision towers for the embedded default's CLIP, registered with timm.

open_clip builds a vision tower from ``vision_cfg.timm_model_name`` through ``timm.create_model``; registering these
with timm's ``register_model`` lets a plain open_clip JSON config (genvpt/clip/configs/genvpt-tiny-cnn.json) name
them, so the tiny CLIP is an ordinary open_clip ``CLIP`` (open_clip's text transformer, ``ClipLoss``, state dict
layout, ``create_model``) whose image tower suits 32 px images.

Why not a ViT or open_clip's ModifiedResNet at 32 px: both downsample early (8 px patches, or a stride-4 stem down to
1x1), and learned the shapes dataset's 12 classes far too slowly on 2 CPU cores (supervised linear probe after 300
steps of 128: ViT-p8 18 %, ModifiedResNet 17 %, this network 60 %+). Convolutions at full resolution with global
average + max pooling (small objects on large backgrounds) learn them quickly.

The network: ``conv3x3-BN-ReLU`` at full size, then per stage ``maxpool 2`` and two convs, widths ``(w, 2w, 4w)``;
pooling ``avg``, ``max`` or ``catavgmax`` (timm's names), so ``num_features`` is 4w or 8w.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

__all__ = ["ConvTower", "register_towers", "TOWERS"]


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class ConvTower(nn.Module):
    """A timm-style image trunk: ``forward_features`` -> ``forward_head`` (pooling, optional classifier)."""

    def __init__(self, width: int = 16, num_classes: int = 0, global_pool: str = "catavgmax", in_chans: int = 3, **_: Any):
        super().__init__()
        w = width
        self.stem = nn.Sequential(*_conv_bn_relu(in_chans, w))
        self.stage1 = nn.Sequential(nn.MaxPool2d(2), *_conv_bn_relu(w, 2 * w), *_conv_bn_relu(2 * w, 2 * w))
        self.stage2 = nn.Sequential(nn.MaxPool2d(2), *_conv_bn_relu(2 * w, 4 * w), *_conv_bn_relu(4 * w, 4 * w))
        self.channels = 4 * w
        self.default_cfg = {"pool_size": None, "num_classes": 0, "input_size": (in_chans, 32, 32)}
        self.pretrained_cfg = self.default_cfg
        self.reset_classifier(num_classes, global_pool)

    def reset_classifier(self, num_classes: int = 0, global_pool: str | None = None) -> None:
        if global_pool is not None:
            if global_pool not in ("avg", "max", "catavgmax"):
                raise ValueError(f"global_pool {global_pool!r}: use avg, max or catavgmax")
            self.global_pool = global_pool
        self.num_features = self.channels * (2 if self.global_pool == "catavgmax" else 1)
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage2(self.stage1(self.stem(x)))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=(2, 3))
        elif self.global_pool == "max":
            x = x.amax(dim=(2, 3))
        else:
            x = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
        return self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _entry(width: int):
    def build(pretrained: bool = False, **kwargs: Any) -> ConvTower:
        if pretrained:
            raise ValueError("genvpt conv towers have no pretrained weights (they are trained by pretrain_clip)")
        kwargs.pop("pretrained_cfg", None)
        kwargs.pop("pretrained_cfg_overlay", None)
        return ConvTower(width=width, **kwargs)

    return build


# timm model name -> base width
TOWERS = {"genvpt_convnet_w16": 16, "genvpt_convnet_w32": 32}
_REGISTERED = False


def register_towers() -> None:
    """Register the towers with timm (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from timm.models import register_model
    from timm.models._registry import is_model

    for name, width in TOWERS.items():
        if not is_model(name):
            fn = _entry(width)
            fn.__name__ = name
            fn.__module__ = __name__
            fn.__doc__ = f"genvpt ConvTower, base width {width}"
            register_model(fn)
    _REGISTERED = True
