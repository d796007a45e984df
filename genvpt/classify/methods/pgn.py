"""PGN (Loedeman et al., "Prompt Generation Networks for Input-Space Adaptation of Frozen Vision Transformers"):
a small ResNet reads the image and mixes a learned Token Library into K input-dependent prompt tokens, appended after
``[cls, patches]`` of the frozen ViT (genvpt/classify/vit.py).

* Token Library ``L`` ``[N, D]`` (D the ViT width), initialised N(0, 0.02) as the official ``TLPGN``.
* Generator ``g``: the official "ResNet10" (``pgn/pgn_models/resnet.py`` with the train script's settings): stem
  3x3 stride-2 conv (3 -> 16, no bias), BN, ReLU, 3x3 stride-2 max-pool (``init_max_pool``); four stages of one basic
  block (two 3x3 convs with BN; stages 2-4 start with stride 2 and a 1x1 strided conv shortcut *with* bias), widths
  16/32/64/128; adaptive average pool; Linear(128 -> K*N). Kaiming-normal (fan_out) conv init, BN 1/0.
* Prompts: ``softmax(g(resize(x)).view(B, K, N), dim=-1) @ L`` (``sigmoid`` optional, as the official code).
  ``x`` is the CLIP-normalised image, resized to ``resolution`` (official 224; null = the CLIP input size).

Parameter count (:func:`pgn_param_count`): ``N*D + (c4 + 1)*K*N + ResNet10 convs/BNs`` = 1,032,304 for the official
CLIP ViT-B/32 PGN (K 16, N 256, D 768), the released checkpoints' count.
"""
from __future__ import annotations

from typing import Literal, Optional, Sequence

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from ...schema import StrictModel
from ..method import ClassifyMethod
from ..vit import vit_width

__all__ = ["PGNParams", "PGN", "ResNet10", "pgn_param_count", "resnet_param_count"]


class PGNParams(StrictModel):
    num_prompts: int = Field(default=16, ge=1)  # K (official pgn_length)
    library_size: int = Field(default=256, ge=1)  # N (official pgn_mixture_size; 128 for their non-CLIP ViTs)
    resolution: Optional[int] = Field(default=None, ge=8)  # generator input size (null: the CLIP input size)
    channels: list[int] = Field(default_factory=lambda: [16, 32, 64, 128])
    blocks_per_stage: int = Field(default=1, ge=1)
    init_max_pool: bool = True
    activation: Literal["softmax", "sigmoid"] = "softmax"
    library_std: float = Field(default=0.02, ge=0.0)

    @field_validator("channels")
    @classmethod
    def _channels(cls, v: list[int]) -> list[int]:
        if not v or any(c < 1 for c in v):
            raise ValueError(f"channels must be positive, at least one stage (got {v})")
        return v


class _Block(nn.Module):
    """Basic residual block: conv3x3-BN-ReLU-conv3x3-BN, plus a 1x1 strided conv shortcut when downsampling."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride) if (stride != 1 or c_in != c_out) else None
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.net(x)
        return self.act(z + (self.shortcut(x) if self.shortcut is not None else x))


class ResNet10(nn.Module):
    """The official PGN generator backbone (see the module docstring); ``out_features`` = K*N logits."""

    def __init__(self, out_features: int, channels: Sequence[int] = (16, 32, 64, 128), blocks_per_stage: int = 1,
                 init_max_pool: bool = True):
        super().__init__()
        ch = list(channels)
        stem = [nn.Conv2d(3, ch[0], 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(ch[0]), nn.ReLU()]
        if init_max_pool:
            stem.append(nn.MaxPool2d(3, stride=2, padding=1))
        self.stem = nn.Sequential(*stem)
        blocks, c_in = [], ch[0]
        for i, c in enumerate(ch):
            for b in range(blocks_per_stage):
                blocks.append(_Block(c_in, c, 2 if (b == 0 and i > 0) else 1))
                c_in = c
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(ch[-1], out_features)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def resnet_param_count(out_features: int, channels: Sequence[int] = (16, 32, 64, 128),
                       blocks_per_stage: int = 1) -> int:
    """Trainable parameters of :class:`ResNet10` (BN running statistics are buffers, not counted)."""
    ch = list(channels)
    n = 3 * ch[0] * 9 + 2 * ch[0]  # stem conv + BN
    c_in = ch[0]
    for i, c in enumerate(ch):
        for b in range(blocks_per_stage):
            n += c_in * c * 9 + c * c * 9 + 4 * c  # two 3x3 convs, two BNs
            if (b == 0 and i > 0) or c_in != c:
                n += c_in * c + c  # 1x1 shortcut with bias
            c_in = c
    return n + (ch[-1] + 1) * out_features  # head


def pgn_param_count(num_prompts: int, library_size: int, width: int, channels: Sequence[int] = (16, 32, 64, 128),
                    blocks_per_stage: int = 1) -> int:
    """PGN's trainable parameters: the library (N*D) plus the generator with its K*N-way head."""
    return library_size * width + resnet_param_count(num_prompts * library_size, channels, blocks_per_stage)


class PGN(ClassifyMethod):
    name = "pgn"
    Params = PGNParams
    needs_vit = True

    def __init__(self, params: PGNParams, clip, class_emb, *, seed: int = 0):
        super().__init__(params, clip, class_emb, seed=seed)
        self.width = vit_width(self.visual)
        K, N = params.num_prompts, params.library_size
        with torch.random.fork_rng(devices=[]):  # the generator's init (kaiming, Linear default), seeded
            torch.manual_seed(self.seed * 1_000_003 + 11)
            self.generator = ResNet10(K * N, params.channels, params.blocks_per_stage, params.init_max_pool)
        self.library = nn.Parameter(torch.randn(N, self.width, generator=self.seeded(12)) * params.library_std)
        size = params.resolution
        self.resolution = (int(size), int(size)) if size is not None else tuple(int(s) for s in self.visual.image_size)
        self.to(self.visual.conv1.weight.device)

    def mixture(self, x: torch.Tensor) -> torch.Tensor:
        """Mixture weights ``[B, K, N]`` over the library."""
        if tuple(x.shape[-2:]) != self.resolution:
            x = F.interpolate(x.float(), size=self.resolution, mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.resolution[1])
        logits = self.generator(x.float()).view(x.shape[0], self.params.num_prompts, self.params.library_size)
        return logits.softmax(-1) if self.params.activation == "softmax" else torch.sigmoid(logits)

    def prompt_tokens(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bkn,nd->bkd", self.mixture(x), self.library)

    def describe(self) -> dict:
        p = self.params
        return {"num_prompts": p.num_prompts, "library_size": p.library_size, "width": self.width,
                "resolution": list(self.resolution),
                "library_params": self.library.numel(),
                "generator_params": sum(q.numel() for q in self.generator.parameters()),
                "param_formula": pgn_param_count(p.num_prompts, p.library_size, self.width, p.channels,
                                                 p.blocks_per_stage)}
