"""LoRA on the vision tower where a LoRA wrapper takes effect; only the low-rank matrices train, the tower's own
weights are checked bit-for-bit unchanged (under their original names).

open_clip's default ViT block (``ResidualAttentionBlock``) uses ``nn.MultiheadAttention``, which reads its packed
``in_proj_weight`` and ``out_proj.weight`` as tensors (``F.multi_head_attention_forward``): a peft wrapper on
``out_proj`` would silently do nothing, and peft's own MultiheadAttention LoRA merges the delta into the base weight
before each forward and subtracts it afterwards, so the frozen weights drift by rounding (``(W + d) - d != W`` in
floating point; measured with peft 0.21.2: in_proj_weight and out_proj.weight off by up to 1.5e-8 after three
forward passes) and the bit-for-bit check fails. Targets:

* ``attn.in_proj``: q, k and v through our own wrapper :class:`LoRAInProj`, which calls
  ``F.multi_head_attention_forward`` with ``in_proj_weight + scale * B @ A`` (the base weight is never written);
* ``mlp.c_fc``, ``mlp.c_proj``: ``nn.Linear`` modules called as modules, wrapped by peft (``inject_adapter_in_model``).

``A`` is initialised as peft does (Kaiming-uniform, a=sqrt(5)), ``B`` at zero, so step 0 equals the frozen model.
Changes the given CLIP in place: build a fresh one per configuration.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from ...schema import StrictModel
from ..method import ClassifyMethod

__all__ = ["LoRAParams", "LoRA", "LoRAInProj", "LORA_TARGETS"]

LORA_TARGETS = ("attn.in_proj", "mlp.c_fc", "mlp.c_proj")


class LoRAParams(StrictModel):
    rank: int = Field(default=4, ge=1)
    alpha: float = Field(default=4.0, gt=0.0)  # scale alpha / rank
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)  # on the mlp targets (peft's lora_dropout)
    targets: list[str] = Field(default_factory=lambda: list(LORA_TARGETS))

    @field_validator("targets")
    @classmethod
    def _targets(cls, v: list[str]) -> list[str]:
        bad = [t for t in v if t not in LORA_TARGETS]
        if bad or not v:
            raise ValueError(f"LoRA targets {bad or v} do not take effect on an open_clip ViT; allowed: "
                             f"{', '.join(LORA_TARGETS)}")
        return v


class LoRAInProj(nn.Module):
    """``nn.MultiheadAttention`` with a LoRA delta on its packed q/k/v projection (the base module is kept, frozen,
    as ``base_layer``, so state-dict names fold back to the original ones as peft's do)."""

    def __init__(self, base_layer: nn.MultiheadAttention, rank: int, alpha: float, generator: torch.Generator):
        super().__init__()
        if not getattr(base_layer, "_qkv_same_embed_dim", True):
            raise NotImplementedError("LoRA on attention with separate q/k/v weights is not supported")
        self.base_layer = base_layer
        d = base_layer.embed_dim
        w = base_layer.in_proj_weight
        a = torch.empty(rank, d)
        bound = 1.0 / math.sqrt(d)  # kaiming_uniform_(a=sqrt(5)) on a [rank, d] matrix: U(-1/sqrt(d), 1/sqrt(d))
        a.uniform_(-bound, bound, generator=generator)
        self.lora_A = nn.Parameter(a.to(w.device, w.dtype))
        self.lora_B = nn.Parameter(torch.zeros(3 * d, rank, device=w.device, dtype=w.dtype))
        self.scaling = float(alpha) / float(rank)

    @property
    def batch_first(self) -> bool:
        return self.base_layer.batch_first

    def forward(self, query, key, value, key_padding_mask=None, need_weights: bool = True, attn_mask=None,
                average_attn_weights: bool = True, is_causal: bool = False):
        m = self.base_layer
        w = m.in_proj_weight + (self.lora_B @ self.lora_A) * self.scaling
        if m.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        out, weights = F.multi_head_attention_forward(
            query, key, value, m.embed_dim, m.num_heads, w, m.in_proj_bias, m.bias_k, m.bias_v, m.add_zero_attn,
            m.dropout, m.out_proj.weight, m.out_proj.bias, training=m.training, key_padding_mask=key_padding_mask,
            need_weights=need_weights, attn_mask=attn_mask, average_attn_weights=average_attn_weights,
            is_causal=is_causal)
        return (out.transpose(0, 1) if m.batch_first else out), weights


class LoRA(ClassifyMethod):
    name = "lora"
    Params = LoRAParams

    def __init__(self, params: LoRAParams, clip, class_emb, *, seed: int = 0):
        super().__init__(params, clip, class_emb, seed=seed)
        visual = self.visual
        blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
        if blocks is None:
            raise TypeError(f"LoRA here needs an open_clip transformer vision tower, got {type(visual).__name__}")
        adapted: list[str] = []
        mlp = [t for t in params.targets if t.startswith("mlp.")]
        if mlp:
            from ...adaptation.methods.lora import apply_lora

            with torch.random.fork_rng(devices=[]):  # peft initialises lora_A from the global generator
                torch.manual_seed(self.seed * 1_000_003 + 41)
                names = apply_lora(visual, params.rank, params.alpha, params.dropout, mlp)
            adapted += [f"visual.{n}" for n in names]
        if "attn.in_proj" in params.targets:
            g = self.seeded(42)
            for i, blk in enumerate(blocks):
                if not isinstance(blk.attn, nn.MultiheadAttention):
                    raise NotImplementedError(f"block {i}: attention {type(blk.attn).__name__} is not "
                                              f"nn.MultiheadAttention; drop 'attn.in_proj' from the LoRA targets")
                blk.attn = LoRAInProj(blk.attn, params.rank, params.alpha, g)
                adapted.append(f"visual.transformer.resblocks.{i}.attn")
        for n, p in visual.named_parameters():
            p.requires_grad_(".lora_" in n)
        self.modules_adapted = sorted(adapted)

    def describe(self) -> dict:
        return {"rank": self.params.rank, "alpha": self.params.alpha, "modules_adapted": len(self.modules_adapted),
                "targets": list(self.params.targets)}
