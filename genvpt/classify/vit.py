"""The frozen open_clip vision tower run with extra tokens appended to its input sequence (PGN, IIP).

open_clip 3.3.0's ``VisionTransformer`` (open_clip/transformer.py) computes, in ``_embeds`` / ``forward``::

    x = conv1(image)                    # [B, D, gh, gw]   patch embedding, no bias
    x = x.flatten(2).transpose(1, 2)    # [B, G, D]        raster order (row by row)
    x = cat([class_embedding, x], 1)    # [B, 1+G, D]
    x = x + positional_embedding        # [1+G, D]
    x = patch_dropout(x)                # identity in eval mode or when patch_dropout == 0
    x = ln_pre(x)
    x = transformer(x)                  # batch_first (Transformer.batch_first, True in 3.3.0); the vision
                                        # tower passes no attn_mask (only the text tower has one)
    pooled = ln_post(x[:, 0]) @ proj    # pool_type 'tok' (CLIP); 'avg' pools x[:, 1:]

:func:`prompted_features` inserts ``[B, K, D]`` prompt tokens after the positional embedding is added and before
``ln_pre``, as the official PGN code does (``pgn_clip.py::_modified_visual_encode``): the prompts carry no position
embedding of their own, go through ``ln_pre`` with the other tokens, and the class token's output is pooled. With
``pool_type='avg'`` the mean is over the image patches only (the prompts are left out). Attentional pooling
(CoCa) is not supported.

The transformer applies no attention mask here, so it is permutation-equivariant over its input tokens: the class
token's output does not depend on where in the sequence the prompts sit (prompt inversion relies on this).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

__all__ = ["is_vit", "check_vit", "vit_width", "patch_tokens", "run_tokens", "prompted_features",
           "forward_canvas", "PromptedViT"]


def is_vit(visual: nn.Module) -> bool:
    """True for an open_clip ``VisionTransformer`` (the towers prompts can be appended to)."""
    try:
        from open_clip.transformer import VisionTransformer
    except ImportError:  # pragma: no cover
        return False
    return isinstance(visual, VisionTransformer)


def check_vit(visual: nn.Module) -> None:
    """Raise a clear error for towers :func:`prompted_features` cannot prompt."""
    if not is_vit(visual):
        raise TypeError(f"token prompts need an open_clip VisionTransformer vision tower, got {type(visual).__name__} "
                        f"(e.g. the embedded default's genvpt-tiny-cnn; use genvpt-tiny-vit or a ViT-B-32 CLIP)")
    if getattr(visual, "attn_pool", None) is not None:
        raise NotImplementedError("vision towers with attentional pooling (CoCa) are not supported")
    if visual.pool_type not in ("tok", "avg"):
        raise NotImplementedError(f"pool_type {visual.pool_type!r} is not supported (tok or avg)")


def vit_width(visual: nn.Module) -> int:
    return int(visual.conv1.out_channels)


def patch_tokens(visual: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``[cls, patches] + positional_embedding`` (patch dropout applied as the model does), before ``ln_pre``:
    ``[B, 1+G, D]``. ``x`` is the normalised model input ``[B, 3, H, W]`` at the tower's image size."""
    x = x.to(visual.conv1.weight.dtype)
    t = visual.conv1(x)
    t = t.reshape(t.shape[0], t.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.to(t.dtype).view(1, 1, -1).expand(t.shape[0], -1, -1)
    t = torch.cat([cls, t], dim=1)
    if t.shape[1] != visual.positional_embedding.shape[0]:
        raise ValueError(f"input {tuple(x.shape[-2:])} gives {t.shape[1] - 1} patches; the tower's positional "
                         f"embedding has {visual.positional_embedding.shape[0] - 1} (image size {visual.image_size})")
    t = t + visual.positional_embedding.to(t.dtype)
    return visual.patch_dropout(t)


def run_tokens(visual: nn.Module, seq: torch.Tensor, num_image_tokens: int) -> torch.Tensor:
    """``ln_pre`` -> transformer -> pool -> ``proj`` on a full token sequence ``[B, L, D]`` whose first
    ``num_image_tokens`` entries are ``[cls, patches]``; returns the pooled features ``[B, output_dim]``."""
    x = visual.ln_pre(seq)
    x = visual.transformer(x)
    if visual.pool_type == "tok":  # ln_post is per token: before or after taking the class token is the same
        pooled = visual.ln_post(x[:, 0])
    elif getattr(visual, "final_ln_after_pool", False):  # 'avg' over the image patches only
        pooled = visual.ln_post(x[:, 1:num_image_tokens].mean(dim=1))
    else:
        pooled = visual.ln_post(x[:, 1:num_image_tokens]).mean(dim=1)
    if visual.proj is not None:
        pooled = pooled @ visual.proj
    return pooled


def prompted_features(visual: nn.Module, x: torch.Tensor, prompts: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Image features of the frozen tower with ``prompts`` ``[B, K, D]`` (or ``[K, D]``) appended after
    ``[cls, patches]`` (after the positional embedding, before ``ln_pre``). ``prompts=None`` or ``K == 0``: the
    tower's own forward pass (any open_clip vision tower, CNNs included)."""
    if prompts is None or prompts.shape[-2] == 0:
        if not is_vit(visual):
            return visual(x.to(next(visual.parameters()).dtype))
        check_vit(visual)
        seq = patch_tokens(visual, x)
        return run_tokens(visual, seq, seq.shape[1])
    check_vit(visual)
    seq = patch_tokens(visual, x)
    if prompts.ndim == 2:
        prompts = prompts.unsqueeze(0)
    prompts = prompts.to(seq.dtype).expand(seq.shape[0], -1, -1)
    if prompts.shape[-1] != seq.shape[-1]:
        raise ValueError(f"prompts have width {prompts.shape[-1]}, the tower {seq.shape[-1]}")
    return run_tokens(visual, torch.cat([seq, prompts], dim=1), seq.shape[1])


def forward_canvas(visual: nn.Module, canvas: torch.Tensor, extra_pos: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The frozen tower on a canvas taller than its image size by whole patch rows (prompt inversion's ``append``
    placement): the first ``gh`` patch rows get the tower's own positional embedding, every further patch slot gets
    ``extra_pos`` ``[E, D]`` (zeros when None: the appended slots carry no position, as token prompts do). Nothing
    else changes: same conv1, class token, ``ln_pre``, transformer and pooling (over the class token; 'avg' pools
    the original image patches only)."""
    check_vit(visual)
    x = canvas.to(visual.conv1.weight.dtype)
    t = visual.conv1(x)
    t = t.reshape(t.shape[0], t.shape[1], -1).permute(0, 2, 1)  # [B, G', D], raster order
    g = visual.positional_embedding.shape[0] - 1
    extra = t.shape[1] - g
    if extra < 0 or canvas.shape[-1] != visual.image_size[1]:
        raise ValueError(f"canvas {tuple(canvas.shape[-2:])} must be the tower's width {visual.image_size[1]} and at "
                         f"least its height {visual.image_size[0]}")
    pos_extra = torch.zeros(extra, t.shape[-1], dtype=t.dtype, device=t.device) if extra_pos is None else \
        extra_pos.to(t.dtype).reshape(extra, t.shape[-1])
    cls = visual.class_embedding.to(t.dtype).view(1, 1, -1).expand(t.shape[0], -1, -1)
    seq = torch.cat([cls, t], dim=1) + torch.cat([visual.positional_embedding.to(t.dtype), pos_extra], dim=0)
    return run_tokens(visual, visual.patch_dropout(seq), 1 + g)


class PromptedViT(nn.Module):
    """``PromptedViT(clip.model.visual)(x, prompts)``: :func:`prompted_features` as a module. The tower is held by
    reference (not a submodule), so a method's state never includes the frozen weights."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self._visual = [visual]

    @property
    def visual(self) -> nn.Module:
        return self._visual[0]

    @property
    def width(self) -> int:
        return vit_width(self.visual)

    @property
    def grid_size(self) -> tuple[int, int]:
        return tuple(self.visual.grid_size)

    def forward(self, x: torch.Tensor, prompts: Optional[torch.Tensor] = None) -> torch.Tensor:
        return prompted_features(self.visual, x, prompts)

