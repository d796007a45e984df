"""The prefilled-prompt baseline (MVP's Table 4): P learnable tokens prepended to the sequence of any backbone with
the ``prefix`` feature (every token sees them; on VAR they see only themselves). The class token stays.

``num_tokens`` null: as many tokens as MVP's frame prompts at ``tau`` (backbones with scales), else 32.
``init``: ``embeddings`` starts every token at the frozen backbone's mean input embedding of the training data
(in-distribution tokens, "init from the vocabulary"), ``normal`` at N(0, init_std).
``gate``: the tokens enter every attention layer through a learned per-layer, per-head gate that starts at 0
(zero-init gated attention, ``generators.common.gated_prefix_attend``): training starts exactly at the frozen
backbone, as MVP's zero-initialised frame prompts do, instead of at a network perturbed by the tokens.
"""
from __future__ import annotations

from typing import Literal, Optional

import torch
from pydantic import Field
from torch import nn

from ...backbones.base import Injections
from ...schema import StrictModel
from ..method import Method


class PrefilledParams(StrictModel):
    num_tokens: Optional[int] = Field(default=None, ge=1)
    tau: int = Field(default=20, ge=4)  # (num_tokens null, backbones with scales) MVP's budget to match
    first_scale: bool = False
    init: Literal["embeddings", "normal"] = "embeddings"
    init_std: float = Field(default=0.02, ge=0.0)
    gate: bool = False


class Prefilled(Method):
    name = "prefilled"
    Params = PrefilledParams

    @classmethod
    def required_features(cls, params: PrefilledParams) -> set[str]:
        return {"prefix", "prefix_gate"} if params.gate else {"prefix"}

    def __init__(self, params: PrefilledParams, backbone, info, *, seed: int = 0):
        super().__init__(params, backbone, info, seed=seed)
        n = params.num_tokens
        if n is None:
            pn = getattr(backbone, "patch_nums", None)
            if pn is not None:
                from ..positions import prompt_positions

                n = sum(int(p.numel()) for p in prompt_positions(pn, params.tau, "outermost",
                                                                  first_scale=params.first_scale))
            else:
                n = 32
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + 17)
        self.tokens = nn.Parameter(torch.randn(int(n), backbone.width, generator=g) * params.init_std)
        self.gate = nn.Parameter(torch.zeros(*backbone.gate_shape)) if params.gate else None
        self.to(backbone.device)

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.shape[0])

    @torch.no_grad()
    def setup(self, ctx) -> None:
        """``embeddings`` init: the frozen backbone's input embeddings averaged over (up to) 256 training samples,
        taken at MVP's frame positions on backbones with scales, else at the first positions of the sequence."""
        if self.params.init != "embeddings":
            return
        emb = self.backbone.input_embeddings(ctx.sample_batch(256)).mean(0)  # [L, D]
        pn = getattr(self.backbone, "patch_nums", None)
        if pn is not None and self.params.num_tokens is None:
            from ..positions import prompt_positions

            pos = prompt_positions(pn, self.params.tau, "outermost", first_scale=self.params.first_scale)
            flat = torch.cat([p + s for p, s in zip(pos, self.backbone.scale_starts())]).to(emb.device)
        else:
            flat = torch.arange(self.num_tokens, device=emb.device) % emb.shape[0]
        self.tokens.copy_(emb[flat].to(self.tokens.dtype))

    def injections(self, labels, *, idx=None, drop=None) -> Injections:
        return Injections(prefix=self.tokens.unsqueeze(0), prefix_gate=self.gate)

    def sampling_injections(self, labels) -> Injections:
        return Injections(prefix=self.tokens.unsqueeze(0), prefix_gate=self.gate)
