"""LoRA (peft) on the frozen backbone's linear layers where a LoRA wrapper takes effect: the backbone names them
(``Backbone.lora_targets``; e.g. never VAR's ``mat_qkv`` or MaskGIT's packed ``in_proj``, read as weights by
``F.linear``, which bypasses a wrapper). Only the adapter matrices train; the base weights are checked unchanged."""
from __future__ import annotations

import re
from typing import Optional, Sequence

from pydantic import Field
from torch import nn

from ...schema import StrictModel
from ..method import Method


class LoRAParams(StrictModel):
    rank: int = Field(default=1, ge=1)  # rank 1: about as many trainable parameters as MVP on the embedded VAR
    alpha: float = Field(default=2.0, gt=0.0)  # scale alpha / rank
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    targets: Optional[list[str]] = None  # module-name suffixes (null: every one the backbone allows)


def lora_target_regex(targets: Sequence[str]) -> str:
    """A regex matching module names ending in one of ``targets`` (peft full-matches it against every name)."""
    return r"^(.*\.)?(" + "|".join(re.escape(t) for t in targets) + r")$"


def apply_lora(model: nn.Module, rank: int, alpha: float, dropout: float, targets: Sequence[str]) -> list[str]:
    """Inject LoRA adapters (peft) into ``model`` in place; return the adapted module names."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=int(rank), lora_alpha=float(alpha), lora_dropout=float(dropout),
                        target_modules=lora_target_regex(targets), bias="none")
    inject_adapter_in_model(config, model)
    names = sorted({n.rsplit(".lora_A", 1)[0] for n, _ in model.named_parameters() if ".lora_A." in n})
    if not names:
        raise RuntimeError(f"LoRA matched no module of {type(model).__name__} for targets {list(targets)}")
    for n, p in model.named_parameters():
        p.requires_grad_(".lora_" in n)
    return names


class LoRA(Method):
    name = "lora"
    Params = LoRAParams

    def __init__(self, params: LoRAParams, backbone, info, *, seed: int = 0):
        super().__init__(params, backbone, info, seed=seed)
        allowed = tuple(backbone.lora_targets)
        targets = list(params.targets) if params.targets is not None else list(allowed)
        bad = [t for t in targets if t not in allowed]
        if bad or not targets:
            raise ValueError(f"LoRA targets {bad or targets} do not take effect on the {backbone.name} backbone; "
                             f"allowed: {', '.join(allowed)}")
        import torch

        torch.manual_seed(self.seed * 1_000_003 + 31)  # peft initialises lora_A randomly
        self.modules_adapted = apply_lora(backbone.generator, params.rank, params.alpha, params.dropout, targets)
