"""VQGAN (Esser, Rombach & Ommer, "Taming transformers"): conv encoder -> nearest-code quantizer -> conv decoder.

The module tree and state-dict names follow taming-transformers' ``VQModel`` so its ImageNet f16-1024 checkpoint
loads strictly (``encoder.*``, ``decoder.*``, ``quantize.embedding.weight``, ``quant_conv.*``,
``post_quant_conv.*``; the Lightning file's ``loss.*`` entries, the LPIPS net and the discriminator, are dropped).
Every size is a :class:`VQGANConfig` field, so the same code builds the official model and the embedded default's
tiny one.

    model = VQGAN(VQGANConfig())                 # the embedded default (32 px -> 8x8 tokens)
    idx = model.encode_to_indices(x)             # x in [-1, 1], [B, 3, H, W] -> LongTensor [B, H/f, W/f]
    y = model.decode_indices(idx)                # -> [B, 3, H, W] in [-1, 1]
    model = load_pretrained_vqgan("last.ckpt")   # official file; sizes read from the checkpoint itself
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Mapping, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoint import CheckpointError, load_state_dict_file, strict_load
from .blocks import Decoder, Encoder

log = logging.getLogger(__name__)

__all__ = ["VQGANConfig", "VectorQuantizer", "VQGAN", "VQOutput", "infer_vqgan_config", "load_pretrained_vqgan"]


@dataclass
class VQGANConfig:
    """Sizes of a VQGAN. Defaults: the embedded default (32 px, downsample 4 -> 8x8 tokens, 512 codes)."""

    resolution: int = 32  # image side the attention resolutions refer to (taming's ``ddconfig.resolution``)
    in_channels: int = 3
    ch: int = 32
    ch_mult: tuple[int, ...] = (1, 1, 1)
    num_res_blocks: int = 1
    attn_resolutions: tuple[int, ...] = (8,)
    z_channels: int = 64
    double_z: bool = False
    dropout: float = 0.0
    n_embed: int = 512
    embed_dim: int = 32
    beta: float = 0.25  # commitment weight
    norm_groups: int = 8  # GroupNorm groups (32 in the official code; shrinks to a divisor for tiny widths)

    def __post_init__(self) -> None:
        self.ch_mult = tuple(int(m) for m in self.ch_mult)
        self.attn_resolutions = tuple(int(r) for r in self.attn_resolutions)

    @classmethod
    def taming_f16_1024(cls) -> "VQGANConfig":
        """taming-transformers ``configs/imagenet_vqgan.yaml`` (ImageNet f16, 1024 codes)."""
        return cls(
            resolution=256, ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(16,),
            z_channels=256, n_embed=1024, embed_dim=256, norm_groups=32,
        )

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def attn_levels(self) -> tuple[int, ...]:
        return tuple(i for i in range(len(self.ch_mult)) if self.resolution // 2**i in self.attn_resolutions)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ch_mult"], d["attn_resolutions"] = list(self.ch_mult), list(self.attn_resolutions)
        return d


@dataclass
class VQOutput:
    """What one training forward returns (shared by both tokenizer families, see ``train.py``)."""

    recon: torch.Tensor  # [B, 3, H, W], not clamped
    vq_loss: torch.Tensor  # codebook + beta * commitment
    indices: list[torch.Tensor]  # one LongTensor [B, n_k] per scale (one scale for VQGAN)
    queries: torch.Tensor  # [N, C] the vectors that were matched to codes (for dead-code restarts)
    extras: dict = field(default_factory=dict)


class VectorQuantizer(nn.Module):
    """Nearest-neighbour (L2) codebook lookup with a straight-through gradient; key ``embedding.weight``.

    Loss = ||sg(z) - e||^2 + beta * ||z - sg(e)||^2 (the standard VQ-VAE form; taming's ``legacy=True`` swaps
    where beta goes, which only matters for training).
    """

    def __init__(self, n_embed: int, embed_dim: int, beta: float = 0.25):
        super().__init__()
        self.n_embed, self.embed_dim, self.beta = n_embed, embed_dim, beta
        # uniform init as taming (built from an empty tensor: cheap on the meta device)
        self.embedding = nn.Embedding(n_embed, embed_dim, _weight=torch.empty(n_embed, embed_dim))
        self.embedding.weight.data.uniform_(-1.0 / n_embed, 1.0 / n_embed)

    def nearest(self, z_NC: torch.Tensor) -> torch.Tensor:
        e = self.embedding.weight
        d = z_NC.square().sum(1, keepdim=True) + e.square().sum(1) - 2.0 * z_NC @ e.t()
        return d.argmin(1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """z [B, C, h, w] -> (z_q straight-through, vq loss, indices [B, h, w], queries [B*h*w, C])."""
        B, C, h, w = z.shape
        z_NC = z.permute(0, 2, 3, 1).reshape(-1, C)
        idx = self.nearest(z_NC.detach())
        z_q = self.embedding(idx).view(B, h, w, C).permute(0, 3, 1, 2)
        loss = F.mse_loss(z_q, z.detach()) + self.beta * F.mse_loss(z, z_q.detach())
        z_q = z + (z_q - z).detach()
        return z_q, loss, idx.view(B, h, w), z_NC.detach()

    def lookup(self, idx: torch.Tensor) -> torch.Tensor:
        """indices [B, h, w] -> code vectors [B, C, h, w]."""
        return self.embedding(idx).permute(0, 3, 1, 2).contiguous()


class VQGAN(nn.Module):
    """taming ``VQModel`` without its loss module (training losses live in ``genvpt/tokenizers/train.py``)."""

    family = "vqgan"

    def __init__(self, config: VQGANConfig | None = None):
        super().__init__()
        self.config = config = config or VQGANConfig()
        net = dict(
            ch=config.ch, ch_mult=config.ch_mult, num_res_blocks=config.num_res_blocks, z_channels=config.z_channels,
            attn_levels=config.attn_levels, mid_attn=True, fused_qkv=False, dropout=config.dropout,
            norm_groups=config.norm_groups,
        )
        self.encoder = Encoder(in_channels=config.in_channels, double_z=config.double_z, **net)
        self.decoder = Decoder(out_channels=config.in_channels, **net)
        self.quantize = VectorQuantizer(config.n_embed, config.embed_dim, config.beta)
        z_out = 2 * config.z_channels if config.double_z else config.z_channels
        self.quant_conv = nn.Conv2d(z_out, config.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)

    # ---- sizes -------------------------------------------------------------------------------------------------
    @property
    def n_embed(self) -> int:
        return self.config.n_embed

    @property
    def vocab_size(self) -> int:
        return self.config.n_embed

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def downsample(self) -> int:
        return self.config.downsample

    @property
    def last_layer(self) -> torch.Tensor:
        """The decoder's output conv weight (for the adaptive adversarial weight)."""
        return self.decoder.conv_out.weight

    # ---- tokenizer API -----------------------------------------------------------------------------------------
    def encode_latent(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(x))

    def encode_to_indices(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1], [B, 3, H, W] -> code indices LongTensor [B, H/f, W/f]."""
        z = self.encode_latent(x)
        B, C, h, w = z.shape
        return self.quantize.nearest(z.permute(0, 2, 3, 1).reshape(-1, C)).view(B, h, w)

    def decode_code(self, z_q: torch.Tensor) -> torch.Tensor:
        """Quantized latent [B, embed_dim, h, w] -> images (not clamped)."""
        return self.decoder(self.post_quant_conv(z_q))

    def decode_indices(self, idx: torch.Tensor) -> torch.Tensor:
        """Code indices LongTensor [B, h, w] -> images [B, 3, h*f, w*f] clamped to [-1, 1]."""
        if idx.dim() != 3:
            raise ValueError(f"decode_indices expects [B, h, w] indices, got shape {tuple(idx.shape)}")
        return self.decode_code(self.quantize.lookup(idx)).clamp(-1.0, 1.0)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_indices(self.encode_to_indices(x))

    def forward(self, x: torch.Tensor, quantize: bool = True) -> VQOutput:
        """Training forward: reconstruction (not clamped), VQ loss, indices, quantizer inputs.
        ``quantize=False`` bypasses the codebook (plain autoencoder; used to warm up before codebook init)."""
        z = self.encode_latent(x)
        if not quantize:
            queries = z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
            return VQOutput(self.decode_code(z), z.new_zeros(()), [], queries)
        z_q, vq_loss, idx, queries = self.quantize(z)
        return VQOutput(self.decode_code(z_q), vq_loss, [idx.flatten(1)], queries)


_DOWN_BLOCK = re.compile(r"^encoder\.down\.(\d+)\.block\.(\d+)\.conv1\.weight$")


def infer_vqgan_config(state_dict: Mapping[str, torch.Tensor], resolution: int = 256, **overrides) -> VQGANConfig:
    """Read a taming-layout checkpoint's sizes from its tensor shapes (ch, ch_mult, blocks, attention, codebook).

    ``resolution`` only names where attention sits (taming's ``attn_resolutions`` are relative to it); the
    network itself runs at any multiple of the downsample factor.
    """
    try:
        ch = state_dict["encoder.conv_in.weight"].shape[0]
        levels: dict[int, int] = {}
        for k in state_dict:
            m = _DOWN_BLOCK.match(k)
            if m:
                levels[int(m.group(1))] = max(levels.get(int(m.group(1)), 0), int(m.group(2)) + 1)
        n_levels = max(levels) + 1
        ch_mult = tuple(state_dict[f"encoder.down.{i}.block.0.conv2.weight"].shape[0] // ch for i in range(n_levels))
        attn_res = tuple(
            resolution // 2**i for i in range(n_levels) if f"encoder.down.{i}.attn.0.q.weight" in state_dict
        )
        z_channels = state_dict["decoder.conv_in.weight"].shape[1]
        n_embed, embed_dim = state_dict["quantize.embedding.weight"].shape
        double_z = state_dict["encoder.conv_out.weight"].shape[0] == 2 * z_channels
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"not a taming VQGAN state dict (cannot read sizes: missing {err})") from None
    cfg = dict(
        resolution=resolution, ch=ch, ch_mult=ch_mult, num_res_blocks=levels[0], attn_resolutions=attn_res,
        z_channels=z_channels, double_z=double_z, n_embed=n_embed, embed_dim=embed_dim,
        in_channels=state_dict["encoder.conv_in.weight"].shape[1], norm_groups=32,  # not stored: taming uses 32
    )
    cfg.update(overrides)
    return VQGANConfig(**cfg)


def load_pretrained_vqgan(
    path: str | os.PathLike,
    config: Optional[VQGANConfig] = None,
    *,
    resolution: int = 256,
    key: Optional[str] = None,
) -> VQGAN:
    """Load an official taming VQGAN: a Lightning ``.ckpt`` (``{"state_dict": ...}``), a plain state dict or
    ``.safetensors``. ``loss.*`` entries are ignored; every other key must match exactly (strict), else
    :class:`~genvpt.checkpoint.CheckpointMismatch` lists the missing, unexpected and mis-shaped keys.

    Without ``config`` the sizes are read from the checkpoint (:func:`infer_vqgan_config`); with it, the file must
    fit that config.
    """
    sd = load_state_dict_file(path, key=key)
    sd = {k: v for k, v in sd.items() if not k.startswith("loss.")}
    if config is None:
        config = infer_vqgan_config(sd, resolution=resolution)
    model = VQGAN(config)
    strict_load(model, sd, source=str(path))
    log.info("loaded VQGAN from %s (%d codes of dim %d, downsample %d)", path, config.n_embed, config.embed_dim,
             config.downsample)
    return model.eval()
