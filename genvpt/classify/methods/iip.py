"""IIP, the official PGN code's input-independent baseline (``pgn/pgn_models/iip.py``): K learned tokens, N(0, 0.02),
shared by every image, appended after ``[cls, patches]`` exactly where PGN's prompts go (K*D parameters)."""
from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from ...schema import StrictModel
from ..method import ClassifyMethod
from ..vit import vit_width

__all__ = ["IIPParams", "IIP"]


class IIPParams(StrictModel):
    num_prompts: int = Field(default=16, ge=1)
    init_std: float = Field(default=0.02, ge=0.0)


class IIP(ClassifyMethod):
    name = "iip"
    Params = IIPParams
    needs_vit = True

    def __init__(self, params: IIPParams, clip, class_emb, *, seed: int = 0):
        super().__init__(params, clip, class_emb, seed=seed)
        width = vit_width(self.visual)
        self.tokens = nn.Parameter(torch.randn(params.num_prompts, width, generator=self.seeded(21)) * params.init_std)
        self.to(self.visual.conv1.weight.device)

    def prompt_tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.tokens.unsqueeze(0).expand(x.shape[0], -1, -1)

    def describe(self) -> dict:
        return {"num_prompts": self.params.num_prompts, "width": int(self.tokens.shape[1])}
