"""Visual prompting with a learned pixel padding (Bahng et al. 2022, ``PadPrompter`` of hjbahng/visual_prompting):
four border strips of width ``pad`` (30 px on a 224 image), initialised N(0, 1), *added* to the normalised image;
the centre is untouched. Parameters: 2*3*pad*W + 2*3*(H-2*pad)*pad (69,840 at 224 / 30).

The official recipe trains it with SGD lr 40 (momentum 0.9, no weight decay, 1000 warm-up steps then cosine): set
``train: {lr: 40}`` on the configuration; the official PGN recipe's lr 0.1 barely moves unit-scale pixels.
``pad`` null: round(30 / 224 * image size), at least 1."""
from __future__ import annotations

from typing import Optional

import torch
from pydantic import Field
from torch import nn

from ...schema import StrictModel
from ..method import ClassifyMethod

__all__ = ["VPParams", "VisualPrompt", "pad_param_count"]


class VPParams(StrictModel):
    pad: Optional[int] = Field(default=None, ge=1)
    init_std: float = Field(default=1.0, ge=0.0)


def pad_param_count(height: int, width: int, pad: int) -> int:
    return 2 * 3 * pad * width + 2 * 3 * (height - 2 * pad) * pad


class VisualPrompt(ClassifyMethod):
    name = "vp"
    Params = VPParams

    def __init__(self, params: VPParams, clip, class_emb, *, seed: int = 0):
        super().__init__(params, clip, class_emb, seed=seed)
        H, W = (int(s) for s in clip.image_size)
        pad = params.pad if params.pad is not None else max(1, round(30 / 224 * min(H, W)))
        if 2 * pad >= min(H, W):
            raise ValueError(f"vp pad {pad} leaves no image inside a {H}x{W} input")
        self.pad = pad
        g = self.seeded(31)
        s = params.init_std
        self.pad_up = nn.Parameter(torch.randn(1, 3, pad, W, generator=g) * s)
        self.pad_down = nn.Parameter(torch.randn(1, 3, pad, W, generator=g) * s)
        self.pad_left = nn.Parameter(torch.randn(1, 3, H - 2 * pad, pad, generator=g) * s)
        self.pad_right = nn.Parameter(torch.randn(1, 3, H - 2 * pad, pad, generator=g) * s)
        self.to(clip.device)

    def prompt_image(self) -> torch.Tensor:
        """The additive prompt ``[1, 3, H, W]`` (zero in the centre)."""
        H = self.pad_left.shape[2] + 2 * self.pad
        W = self.pad_up.shape[3]
        centre = torch.zeros(1, 3, H - 2 * self.pad, W - 2 * self.pad, device=self.pad_up.device,
                             dtype=self.pad_up.dtype)
        mid = torch.cat([self.pad_left, centre, self.pad_right], dim=3)
        return torch.cat([self.pad_up, mid, self.pad_down], dim=2)

    def transform_input(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.prompt_image().to(x.dtype)

    def describe(self) -> dict:
        H, W = self.pad_left.shape[2] + 2 * self.pad, self.pad_up.shape[3]
        return {"pad": self.pad, "param_formula": pad_param_count(H, W, self.pad)}
