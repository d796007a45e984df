"""MVP (multi-scale visual prompts) on a frozen VAR: frame prompts on every scale and the multi-level semantic loss.

**Frame prompts** (:class:`FramePrompt`). For every prompted scale t a prompt feature map F_t (S_t x S_t x D, zero off
the frame positions of genvpt/adaptation/positions.py) is ADDED to that scale's input token map (the backbone's
``input_offsets`` injection), after VAR's ``word_embed`` projection together with the level and position embeddings
(this matches the paper's parameter counts, Table 1: d16 310M -> 310.4M). The sequence length does not change. Frame
prompts start at zero by default, so training starts exactly at the frozen VAR.

**Semantic loss.** L = CE + lambda_sen * L_CLIP(I_sen, "a photo of {class}") + lambda_cap * L_CLIP(I_cap, caption), with
I_sen / I_cap decoded differentiably from the teacher-forced logits after kappa = floor(beta K) and K scales (the
backbone's ``soft_images``). Rows whose class was dropped to the null class (guidance's branch) are left out of the
CLIP terms: they are not images of their class.
"""
from __future__ import annotations

import math
from typing import Any, Literal, Optional, Sequence

import torch
from pydantic import Field
from torch import nn

from ...backbones.base import Injections
from ...schema import StrictModel
from ..method import Method
from ..positions import prompt_positions
from ..semantic import clip_contrastive_loss

__all__ = ["FramePrompt", "MVPParams", "MVP"]


class FramePrompt(nn.Module):
    """Learnable prompt tokens at fixed positions of each scale, added to VAR's input token maps.

    ``positions``: one LongTensor of flat (row-major) positions per scale (empty = unprompted scale).
    ``tokens`` [N, C] holds all scales' prompt vectors back to back; ``positions`` (a buffer) is saved with them.
    """

    def __init__(self, patch_nums: Sequence[int], C: int, positions: Sequence[torch.Tensor], init_std: float = 0.0,
                 generator: Optional[torch.Generator] = None):
        super().__init__()
        if len(positions) != len(patch_nums):
            raise ValueError(f"need one position set per scale ({len(patch_nums)}), got {len(positions)}")
        for si, (S, p) in enumerate(zip(patch_nums, positions)):
            if p.numel() and (int(p.min()) < 0 or int(p.max()) >= S * S or p.unique().numel() != p.numel()):
                raise ValueError(f"scale {si} ({S}x{S}): positions must be distinct indices in [0, {S * S})")
        self.patch_nums = tuple(int(p) for p in patch_nums)
        self.C = int(C)
        self.counts = [int(p.numel()) for p in positions]
        self.register_buffer("positions", torch.cat([p.long().reshape(-1) for p in positions]))
        tokens = torch.zeros(sum(self.counts), self.C)
        if init_std > 0:
            tokens.normal_(0.0, init_std, generator=generator)
        self.tokens = nn.Parameter(tokens)

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.shape[0])

    def feature_maps(self) -> list[Optional[torch.Tensor]]:
        """F_t per scale: [1, S_t^2, C] (zero off the frame) or None for an unprompted scale."""
        out: list[Optional[torch.Tensor]] = []
        start = 0
        for S, k in zip(self.patch_nums, self.counts):
            if k == 0:
                out.append(None)
                continue
            pos = self.positions[start:start + k]
            fmap = self.tokens.new_zeros(S * S, self.C).index_copy(0, pos, self.tokens[start:start + k])
            out.append(fmap.unsqueeze(0))
            start += k
        return out

    def var_kwargs(self) -> dict[str, Any]:
        return {"input_offsets": self.feature_maps()}


class MVPParams(StrictModel):
    tau: int = Field(default=20, ge=4)  # most prompt tokens one scale may hold; above it the ring becomes 4 L-shapes
    first_scale: bool = False  # also prompt the 1x1 first scale (off for class-to-image: Table 6)
    positions: Literal["outermost", "random", "innermost", "center_to_outer", "sub_outermost"] = "outermost"
    positions_seed: int = 0  # the seed of the random variant
    init_std: float = Field(default=0.0, ge=0.0)  # 0: training starts at the frozen VAR
    lambda_sen: float = Field(default=0.02, ge=0.0)  # weight of CLIP loss(I_sen, "a photo of {class}")
    lambda_cap: float = Field(default=0.02, ge=0.0)  # weight of CLIP loss(I_cap, caption)
    beta: float = Field(default=0.6, gt=0.0, lt=1.0)  # kappa = floor(beta * K): the scale I_sen is decoded after
    soft_codes: Literal["softmax", "gumbel"] = "softmax"  # logits -> code vectors for the decoded images
    # images of each batch decoded for the CLIP terms (the first ones; null: all); the CE uses the whole batch
    clip_batch_size: Optional[int] = Field(default=8, ge=2)
    code_temperature: float = Field(default=1.0, gt=0.0)

    def kappa(self, K: int) -> int:
        """kappa = floor(beta K), clipped to 1..K-1 (the paper's range)."""
        return min(max(1, math.floor(self.beta * K)), K - 1)


class MVP(Method):
    name = "mvp"
    Params = MVPParams

    @classmethod
    def required_features(cls, params: MVPParams) -> set[str]:
        need = {"input_offsets"}
        if params.lambda_sen > 0 or params.lambda_cap > 0:
            need.add("soft_decode")
        return need

    @classmethod
    def needs_clip(cls, params: MVPParams) -> bool:
        return params.lambda_sen > 0 or params.lambda_cap > 0

    @classmethod
    def needs_captions(cls, params: MVPParams) -> bool:
        return params.lambda_cap > 0

    def __init__(self, params: MVPParams, backbone, info, *, seed: int = 0):
        super().__init__(params, backbone, info, seed=seed)
        pn = backbone.patch_nums
        positions = prompt_positions(pn, params.tau, params.positions, first_scale=params.first_scale,
                                     seed=params.positions_seed)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + 17)
        self.prompt = FramePrompt(pn, backbone.width, positions, init_std=params.init_std, generator=g)
        self.to(backbone.device)

    def offsets(self) -> list[Optional[torch.Tensor]]:
        return self.prompt.feature_maps()

    def injections(self, labels, *, idx=None, drop=None) -> Injections:
        return Injections(input_offsets=self.offsets())

    def sampling_injections(self, labels) -> Injections:
        return Injections(input_offsets=self.offsets())

    def extra_losses(self, ctx, *, logits, labels, idx, drop, generator) -> dict[str, torch.Tensor]:
        p = self.params
        out: dict[str, torch.Tensor] = {}
        if not (p.lambda_sen > 0 or p.lambda_cap > 0):
            return out
        keep = (~drop).nonzero().view(-1)  # dropped rows are not images of their class: no CLIP term
        if p.clip_batch_size is not None:
            keep = keep[: p.clip_batch_size]
        if keep.numel() < 2:
            return out
        K = len(self.backbone.patch_nums)
        upto = []
        if p.lambda_sen > 0:
            upto.append(p.kappa(K))
        if p.lambda_cap > 0:
            upto.append(K)
        imgs = self.backbone.soft_images(logits[keep], upto, mode=p.soft_codes, temperature=p.code_temperature,
                                         generator=generator)
        clip = ctx.clip
        if p.lambda_sen > 0:
            img = imgs.pop(0)
            out["clip_sen"] = p.lambda_sen * clip_contrastive_loss(clip.encode_images(img), ctx.sentence_emb,
                                                                   labels[keep], ctx.logit_scale)
        if p.lambda_cap > 0:
            img = imgs.pop(0)
            ids = ctx.caption_ids.to(logits.device)[idx[keep]]
            present, inv = torch.unique(ids, return_inverse=True)
            out["clip_cap"] = p.lambda_cap * clip_contrastive_loss(clip.encode_images(img), ctx.caption_emb[present],
                                                                   inv, ctx.logit_scale)
        return out
