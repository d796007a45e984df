"""Linear probe on frozen features: a linear layer on the L2-normalised image features of the frozen CLIP (no
gradient reaches the tower). ``init: zeroshot`` starts from the zero-shot classifier (weights = logit scale x the
class-prompt embeddings, bias 0), so step 0 scores as zero-shot CLIP does; ``zeros`` starts at chance."""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ...schema import StrictModel
from ..method import ClassifyMethod

__all__ = ["LinearProbeParams", "LinearProbe"]


class LinearProbeParams(StrictModel):
    init: Literal["zeroshot", "zeros"] = "zeroshot"


class LinearProbe(ClassifyMethod):
    name = "linear_probe"
    Params = LinearProbeParams

    def __init__(self, params: LinearProbeParams, clip, class_emb, *, seed: int = 0):
        super().__init__(params, clip, class_emb, seed=seed)
        C, E = self.class_emb.shape
        self.linear = nn.Linear(E, C)
        with torch.no_grad():
            if params.init == "zeroshot":
                self.linear.weight.copy_(self.class_emb * self.logit_scale.to(self.class_emb.device))
            else:
                self.linear.weight.zero_()
            self.linear.bias.zero_()
        self.to(clip.device)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return super().features(x)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(F.normalize(features.float(), dim=-1))
