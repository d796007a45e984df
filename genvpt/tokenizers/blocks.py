"""Convolutional encoder / decoder shared by both tokenizers (the LDM / taming "diffusionmodules" layout).

taming's VQGAN and VAR's VQVAE use the same network with two differences, both switches here:

* attention: taming has separate 1x1 ``q``, ``k``, ``v`` convs and puts attention at the levels whose resolution is
  in ``attn_resolutions``; VAR fuses them into one ``qkv`` conv (q, k, v stacked in that order along channels) and
  puts attention only at the lowest level (``using_sa``).
* the mid-block attention is always on in taming, optional in VAR (``using_mid_sa``, on in the released model).

State-dict names (``conv_in``, ``down.{i}.block.{j}.{norm1,conv1,norm2,conv2,nin_shortcut}``, ``down.{i}.attn.{j}``,
``down.{i}.downsample.conv``, ``mid.{block_1,attn_1,block_2}``, ``up.{i}.block.{j}`` with num_res_blocks + 1 blocks,
``up.{i}.upsample.conv``, ``norm_out``, ``conv_out``) follow the official code so official checkpoints load as is.
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["Normalize", "ResnetBlock", "AttnBlock", "Downsample", "Upsample", "Encoder", "Decoder"]


def Normalize(channels: int, num_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm as in the official code (eps 1e-6); ``num_groups`` shrinks to a divisor for tiny widths."""
    g = min(num_groups, channels)
    while channels % g:
        g -= 1
    return nn.GroupNorm(num_groups=g, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """norm-swish-conv twice plus a residual; a 1x1 ``nin_shortcut`` only when the width changes."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0, norm_groups: int = 32):
        super().__init__()
        self.norm1 = Normalize(in_channels, norm_groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.norm2 = Normalize(out_channels, norm_groups)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1, 1, 0)
        else:
            self.nin_shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with a residual. ``fused_qkv`` selects VAR's ``qkv`` conv over taming's
    separate ``q``/``k``/``v`` convs; the computation is the same (softmax(q^T k / sqrt(C)) v)."""

    def __init__(self, channels: int, fused_qkv: bool = False, norm_groups: int = 32):
        super().__init__()
        self.fused_qkv = fused_qkv
        self.norm = Normalize(channels, norm_groups)
        if fused_qkv:
            self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        else:
            self.q = nn.Conv2d(channels, channels, 1)
            self.k = nn.Conv2d(channels, channels, 1)
            self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.norm(x)
        if self.fused_qkv:
            q, k, v = self.qkv(h).reshape(B, 3, C, H * W).unbind(1)
        else:
            q, k, v = (m(h).reshape(B, C, H * W) for m in (self.q, self.k, self.v))
        # [B, 1, HW, C] single head; SDPA's default scale is 1/sqrt(C) as in the official code
        q, k, v = (t.transpose(1, 2).unsqueeze(1) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.squeeze(1).transpose(1, 2).reshape(B, C, H, W)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """3x3 stride-2 conv after padding right/bottom by one (the official asymmetric padding)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 2, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest 2x upsampling then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """One resolution level; a plain container so the keys read ``down.{i}.block.{j}`` etc."""


class Encoder(nn.Module):
    """Image [B, in_channels, H, W] -> latent [B, z_channels (x2 if double_z), H/2^(L-1), W/2^(L-1)].

    ``attn_levels``: indices of the levels (0 = full resolution) whose res blocks are each followed by attention.
    """

    def __init__(
        self,
        *,
        ch: int,
        ch_mult: Iterable[int],
        num_res_blocks: int,
        z_channels: int,
        in_channels: int = 3,
        attn_levels: Iterable[int] = (),
        mid_attn: bool = True,
        fused_qkv: bool = False,
        double_z: bool = False,
        dropout: float = 0.0,
        norm_groups: int = 32,
    ):
        super().__init__()
        ch_mult = tuple(ch_mult)
        attn_levels = set(attn_levels)
        self.num_resolutions = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        self.conv_in = nn.Conv2d(in_channels, ch, 3, 1, 1)
        in_mult = (1,) + ch_mult
        self.down = nn.ModuleList()
        block_in = ch
        for i in range(self.num_resolutions):
            level = _Level()
            level.block = nn.ModuleList()
            level.attn = nn.ModuleList()
            block_in, block_out = ch * in_mult[i], ch * ch_mult[i]
            for _ in range(num_res_blocks):
                level.block.append(ResnetBlock(block_in, block_out, dropout, norm_groups))
                block_in = block_out
                if i in attn_levels:
                    level.attn.append(AttnBlock(block_in, fused_qkv, norm_groups))
            if i != self.num_resolutions - 1:
                level.downsample = Downsample(block_in)
            self.down.append(level)
        self.mid = _Level()
        self.mid.block_1 = ResnetBlock(block_in, block_in, dropout, norm_groups)
        self.mid.attn_1 = AttnBlock(block_in, fused_qkv, norm_groups) if mid_attn else nn.Identity()
        self.mid.block_2 = ResnetBlock(block_in, block_in, dropout, norm_groups)
        self.norm_out = Normalize(block_in, norm_groups)
        self.conv_out = nn.Conv2d(block_in, 2 * z_channels if double_z else z_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for i, level in enumerate(self.down):
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn):
                    h = level.attn[j](h)
            if i != self.num_resolutions - 1:
                h = level.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent [B, z_channels, h, w] -> image [B, out_channels, h*2^(L-1), w*2^(L-1)] (not clamped)."""

    def __init__(
        self,
        *,
        ch: int,
        ch_mult: Iterable[int],
        num_res_blocks: int,
        z_channels: int,
        out_channels: int = 3,
        attn_levels: Iterable[int] = (),
        mid_attn: bool = True,
        fused_qkv: bool = False,
        dropout: float = 0.0,
        norm_groups: int = 32,
    ):
        super().__init__()
        ch_mult = tuple(ch_mult)
        attn_levels = set(attn_levels)
        self.num_resolutions = len(ch_mult)
        block_in = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, 1, 1)
        self.mid = _Level()
        self.mid.block_1 = ResnetBlock(block_in, block_in, dropout, norm_groups)
        self.mid.attn_1 = AttnBlock(block_in, fused_qkv, norm_groups) if mid_attn else nn.Identity()
        self.mid.block_2 = ResnetBlock(block_in, block_in, dropout, norm_groups)
        levels: list[nn.Module] = []
        for i in reversed(range(self.num_resolutions)):
            level = _Level()
            level.block = nn.ModuleList()
            level.attn = nn.ModuleList()
            block_out = ch * ch_mult[i]
            for _ in range(num_res_blocks + 1):
                level.block.append(ResnetBlock(block_in, block_out, dropout, norm_groups))
                block_in = block_out
                if i in attn_levels:
                    level.attn.append(AttnBlock(block_in, fused_qkv, norm_groups))
            if i != 0:
                level.upsample = Upsample(block_in)
            levels.insert(0, level)  # up[i] is level i, as in the official code
        self.up = nn.ModuleList(levels)
        self.norm_out = Normalize(block_in, norm_groups)
        self.conv_out = nn.Conv2d(block_in, out_channels, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        for i in reversed(range(self.num_resolutions)):
            level = self.up[i]
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn):
                    h = level.attn[j](h)
            if i != 0:
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))
