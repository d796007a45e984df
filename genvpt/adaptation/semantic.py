"""Pieces shared by the methods: the CLIP loss of MVP's multi-level semantic terms and state hashes (the frozen
check)."""
from __future__ import annotations

import hashlib
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["clip_contrastive_loss", "state_hash", "base_state_dict"]


def clip_contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor, text_ids: torch.Tensor,
                          logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric CLIP loss between B images and T distinct texts; ``text_ids`` [B] names each image's text.
    Texts without an image in the batch are negatives for image->text only."""
    logits = float(logit_scale) * image_features @ text_features.T  # [B, T]
    l_i2t = F.cross_entropy(logits, text_ids)
    present = torch.unique(text_ids)
    target = (text_ids.view(1, -1) == present.view(-1, 1)).float()
    target = target / target.sum(1, keepdim=True)
    l_t2i = -(target * F.log_softmax(logits.T[present], dim=1)).sum(1).mean()
    return 0.5 * (l_i2t + l_t2i)


def base_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` without LoRA adapter entries and with peft's ``.base_layer`` names folded back, so a
    LoRA-injected model compares key by key with the model before injection."""
    out = {}
    for k, v in module.state_dict().items():
        if ".lora_" in k:
            continue
        out[k.replace(".base_layer.", ".")] = v
    return out


def state_hash(state: nn.Module | Mapping[str, torch.Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of a state dict (bit-for-bit identity check)."""
    sd = base_state_dict(state) if isinstance(state, nn.Module) else state
    h = hashlib.sha256()
    for k in sorted(sd):
        t = sd[k].detach().cpu().contiguous().reshape(-1)
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
