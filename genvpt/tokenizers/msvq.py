"""Multi-scale residual VQ-VAE: VAR's tokenizer (Tian et al., "Visual Autoregressive Modeling").

An image becomes K token maps of growing side ``patch_nums`` = (1, 2, ..., 16) for 256 px. One latent
f = quant_conv(encoder(x)) is quantized coarse to fine: at scale k the remaining residual is area-downsampled to
pn x pn, each vector takes its nearest code, the code map is bicubic-upsampled back to the latent size, passed
through a shared 3x3 conv phi with the 0.5 blend (h <- 0.5 h + 0.5 conv(h)), added to f_hat and subtracted from the
residual. The decoder sees f_hat.

Names and state-dict keys follow VAR's ``VQVAE`` / ``VectorQuantizer2`` (``vae_ch160v4096z32``: 324 keys):
``encoder.*``, ``decoder.*``, ``quant_conv.*``, ``post_quant_conv.*``, ``quantize.embedding.weight``,
``quantize.ema_vocab_hit_SV`` and ``quantize.quant_resi.qresi_ls.{0..3}.{weight,bias}``. The method names are
VAR's: ``img_to_idxBl``, ``idxBl_to_var_input``, ``get_next_autoregressive_input``, ``fhat_to_img``,
``idxBl_to_img``, ``embed_to_fhat``.
"""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from typing import Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoint import CheckpointError, load_state_dict_file, strict_load
from .blocks import Decoder, Encoder
from .vqgan import VQOutput

log = logging.getLogger(__name__)

__all__ = [
    "MSVQConfig",
    "Phi",
    "PhiShared",
    "PhiPartiallyShared",
    "PhiNonShared",
    "MultiScaleQuantizer",
    "MultiScaleVQVAE",
    "infer_msvq_config",
    "load_pretrained_msvq",
]


@dataclass
class MSVQConfig:
    """Sizes of a multi-scale VQ-VAE. Defaults: the embedded default (32 px, downsample 4 -> 8x8 latent,
    scales 1,2,3,4,6,8 = 130 tokens, 512 codes of dim 16)."""

    vocab_size: int = 512
    z_channels: int = 16  # Cvae: latent and code dimension
    ch: int = 32
    ch_mult: tuple[int, ...] = (1, 1, 1)
    num_res_blocks: int = 1
    dropout: float = 0.0
    beta: float = 0.25
    using_znorm: bool = False  # cosine instead of L2 nearest code
    quant_conv_ks: int = 3
    quant_resi: float = 0.5  # phi blend: h <- (1 - r) h + r conv(h)
    share_quant_resi: int = 4  # 0: one phi per scale, 1: one phi for all, n: n phis picked by nearest tick
    default_qresi_counts: int = 0
    patch_nums: tuple[int, ...] = (1, 2, 3, 4, 6, 8)
    using_sa: bool = True  # attention at the lowest level
    using_mid_sa: bool = True
    in_channels: int = 3
    norm_groups: int = 8  # GroupNorm groups (32 in the official code)

    def __post_init__(self) -> None:
        self.ch_mult = tuple(int(m) for m in self.ch_mult)
        self.patch_nums = tuple(int(p) for p in self.patch_nums)
        if len(self.patch_nums) < 2 or list(self.patch_nums) != sorted(set(self.patch_nums)):
            raise ValueError(f"patch_nums must be at least two increasing sizes, got {self.patch_nums}")

    @classmethod
    def var_256(cls) -> "MSVQConfig":
        """VAR's released tokenizer ``vae_ch160v4096z32.pth`` for 256 px (``build_vae_var``)."""
        return cls(
            vocab_size=4096, z_channels=32, ch=160, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2,
            patch_nums=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16), share_quant_resi=4, norm_groups=32,
        )

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ch_mult"], d["patch_nums"] = list(self.ch_mult), list(self.patch_nums)
        return d


# ---- phi: the residual convs ---------------------------------------------------------------------------------
class Phi(nn.Conv2d):
    """h -> (1 - r) h + r conv3x3(h)."""

    def __init__(self, dim: int, resi_ratio: float):
        super().__init__(dim, dim, kernel_size=3, stride=1, padding=1)
        self.resi_ratio = abs(resi_ratio)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.mul(1 - self.resi_ratio) + super().forward(h).mul(self.resi_ratio)


def _ticks(k: int) -> np.ndarray:
    return np.linspace(1 / 3 / k, 1 - 1 / 3 / k, k) if k == 4 else np.linspace(1 / 2 / k, 1 - 1 / 2 / k, k)


class PhiShared(nn.Module):
    """One phi for every scale (key ``qresi``)."""

    def __init__(self, qresi: nn.Module):
        super().__init__()
        self.qresi = qresi

    def __getitem__(self, at_0_to_1: float) -> nn.Module:
        return self.qresi


class PhiPartiallyShared(nn.Module):
    """``len(qresi_ls)`` phis; scale position t in [0, 1] uses the one with the nearest tick (key ``qresi_ls``)."""

    def __init__(self, qresi_ls: nn.ModuleList):
        super().__init__()
        self.qresi_ls = qresi_ls
        self.ticks = _ticks(len(qresi_ls))

    def __getitem__(self, at_0_to_1: float) -> nn.Module:
        return self.qresi_ls[int(np.argmin(np.abs(self.ticks - at_0_to_1)))]


class PhiNonShared(nn.ModuleList):
    """One phi per scale (keys ``0``, ``1``, ...)."""

    def __init__(self, qresi: list[nn.Module]):
        super().__init__(qresi)
        self.ticks = _ticks(len(qresi))

    def __getitem__(self, at_0_to_1: float) -> nn.Module:  # type: ignore[override]
        return super().__getitem__(int(np.argmin(np.abs(self.ticks - at_0_to_1))))


class MultiScaleQuantizer(nn.Module):
    """VAR's ``VectorQuantizer2``: residual quantization over ``patch_nums`` with the phi convs."""

    def __init__(self, config: MSVQConfig):
        super().__init__()
        c = config
        self.vocab_size, self.Cvae, self.using_znorm, self.beta = c.vocab_size, c.z_channels, c.using_znorm, c.beta
        self.v_patch_nums = tuple(c.patch_nums)

        def make_phi() -> nn.Module:
            return Phi(c.z_channels, c.quant_resi) if abs(c.quant_resi) > 1e-6 else nn.Identity()

        if c.share_quant_resi == 0:
            self.quant_resi = PhiNonShared([make_phi() for _ in range(c.default_qresi_counts or len(c.patch_nums))])
        elif c.share_quant_resi == 1:
            self.quant_resi = PhiShared(make_phi())
        else:
            self.quant_resi = PhiPartiallyShared(nn.ModuleList([make_phi() for _ in range(c.share_quant_resi)]))
        # running codebook hits per scale (VAR's buffer; updated in training, used for dead-code restarts)
        self.register_buffer("ema_vocab_hit_SV", torch.zeros(len(c.patch_nums), c.vocab_size))
        self.record_hit = 0
        self.embedding = nn.Embedding(c.vocab_size, c.z_channels, _weight=torch.empty(c.vocab_size, c.z_channels))
        self.embedding.weight.data.uniform_(-1.0 / c.vocab_size, 1.0 / c.vocab_size)

    @property
    def patch_nums(self) -> tuple[int, ...]:
        return self.v_patch_nums

    def phi(self, si: int, SN: Optional[int] = None) -> nn.Module:
        SN = SN or len(self.v_patch_nums)
        return self.quant_resi[si / (SN - 1)]

    def nearest(self, z_NC: torch.Tensor) -> torch.Tensor:
        e = self.embedding.weight.detach()
        if self.using_znorm:
            return (F.normalize(z_NC, dim=-1) @ F.normalize(e, dim=-1).t()).argmax(1)
        d = z_NC.square().sum(1, keepdim=True) + e.square().sum(1)
        d = d.addmm(z_NC, e.t(), alpha=-2.0, beta=1.0)
        return d.argmin(1)

    def _query(self, f_rest: torch.Tensor, pn: int, last: bool) -> torch.Tensor:
        C = f_rest.shape[1]
        r = f_rest if last else F.interpolate(f_rest, size=(pn, pn), mode="area")
        return r.permute(0, 2, 3, 1).reshape(-1, C)

    def _code_map(self, idx_Bhw: torch.Tensor, H: int, W: int, last: bool) -> torch.Tensor:
        h = self.embedding(idx_Bhw).permute(0, 3, 1, 2)
        return h.contiguous() if last else F.interpolate(h, size=(H, W), mode="bicubic").contiguous()

    # ---- training --------------------------------------------------------------------------------------------
    def forward(self, f_BChw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """Training pass as VAR: returns (f_hat straight-through, mean VQ loss over scales, indices per scale,
        quantizer inputs of every scale [N, C]). Loss per scale: beta ||sg(f_hat) - f||^2 + ||f_hat - sg(f)||^2."""
        f_BChw = f_BChw.float()
        B, C, H, W = f_BChw.shape
        f_no_grad = f_BChw.detach()
        f_rest = f_no_grad.clone()
        f_hat = torch.zeros_like(f_rest)
        SN = len(self.v_patch_nums)
        loss = f_BChw.new_zeros(())
        idx_list, queries = [], []
        for si, pn in enumerate(self.v_patch_nums):
            last = si == SN - 1
            z_NC = self._query(f_rest, pn, last)
            idx_N = self.nearest(z_NC)
            if self.training:
                self._record_hits(si, idx_N)
            h = self.phi(si, SN)(self._code_map(idx_N.view(B, pn, pn), H, W, last))
            f_hat = f_hat + h
            f_rest = f_rest - h.detach()
            loss = loss + F.mse_loss(f_hat.detach(), f_BChw).mul(self.beta) + F.mse_loss(f_hat, f_no_grad)
            idx_list.append(idx_N.view(B, pn * pn))
            queries.append(z_NC)
        f_hat = (f_hat.detach() - f_no_grad) + f_BChw
        return f_hat, loss / SN, idx_list, torch.cat(queries)

    @torch.no_grad()
    def _record_hits(self, si: int, idx_N: torch.Tensor) -> None:
        hit = idx_N.bincount(minlength=self.vocab_size).float()
        if self.record_hit == 0:
            self.ema_vocab_hit_SV[si].copy_(hit)
        elif self.record_hit < 100:
            self.ema_vocab_hit_SV[si].mul_(0.9).add_(hit.mul(0.1))
        else:
            self.ema_vocab_hit_SV[si].mul_(0.99).add_(hit.mul(0.01))
        if si == len(self.v_patch_nums) - 1:
            self.record_hit += 1

    # ---- inference -------------------------------------------------------------------------------------------
    def f_to_idxBl_or_fhat(
        self, f_BChw: torch.Tensor, to_fhat: bool, v_patch_nums: Optional[Sequence[int]] = None
    ) -> list[torch.Tensor]:
        """Latent -> per-scale indices [B, pn*pn] (or the cumulative f_hat after each scale when ``to_fhat``)."""
        B, C, H, W = f_BChw.shape
        patch_nums = tuple(v_patch_nums or self.v_patch_nums)
        if patch_nums[-1] != H or patch_nums[-1] != W:
            raise ValueError(
                f"the last scale {patch_nums[-1]} must equal the latent size {H}x{W}: images of side "
                f"{H}*downsample need patch_nums ending in {H}"
            )
        f_rest = f_BChw.detach().clone()
        f_hat = torch.zeros_like(f_rest)
        out: list[torch.Tensor] = []
        SN = len(patch_nums)
        for si, pn in enumerate(patch_nums):
            last = si == SN - 1
            idx_N = self.nearest(self._query(f_rest, pn, last))
            h = self.phi(si, SN)(self._code_map(idx_N.view(B, pn, pn), H, W, last))
            f_hat.add_(h)
            f_rest.sub_(h)
            out.append(f_hat.clone() if to_fhat else idx_N.reshape(B, pn * pn))
        return out

    def embed_to_fhat(
        self, ms_h_BChw: list[torch.Tensor], all_to_max_scale: bool = True, last_one: bool = False
    ) -> torch.Tensor | list[torch.Tensor]:
        """Code maps [B, C, pn, pn] per scale -> f_hat (``last_one``) or the cumulative f_hat after each scale."""
        B = ms_h_BChw[0].shape[0]
        H = W = self.v_patch_nums[-1]
        SN = len(self.v_patch_nums)
        out: list[torch.Tensor] = []
        if all_to_max_scale:
            f_hat = ms_h_BChw[0].new_zeros(B, self.Cvae, H, W, dtype=torch.float32)
            for si, h in enumerate(ms_h_BChw):
                if si < SN - 1:
                    h = F.interpolate(h, size=(H, W), mode="bicubic")
                f_hat.add_(self.phi(si, SN)(h))
                if not last_one:
                    out.append(f_hat.clone())
        else:  # VAR's experimental path: grow f_hat scale by scale instead of upsampling each map
            f_hat = ms_h_BChw[0].new_zeros(B, self.Cvae, self.v_patch_nums[0], self.v_patch_nums[0], dtype=torch.float32)
            for si, pn in enumerate(self.v_patch_nums):
                f_hat = F.interpolate(f_hat, size=(pn, pn), mode="bicubic")
                f_hat.add_(self.phi(si, SN)(ms_h_BChw[si]))
                if not last_one:
                    out.append(f_hat)
        return f_hat if last_one else out

    def idxBl_to_var_input(self, gt_ms_idx_Bl: list[torch.Tensor]) -> torch.Tensor:
        """Teacher-forcing input [B, L - pn_1^2, Cvae]: f_hat after scales 1..k, area-downsampled to scale k+1."""
        B = gt_ms_idx_Bl[0].shape[0]
        C = self.Cvae
        H = W = self.v_patch_nums[-1]
        SN = len(self.v_patch_nums)
        f_hat = gt_ms_idx_Bl[0].new_zeros(B, C, H, W, dtype=torch.float32)
        pn_next = self.v_patch_nums[0]
        next_scales = []
        for si in range(SN - 1):
            h = self.embedding(gt_ms_idx_Bl[si]).transpose(1, 2).reshape(B, C, pn_next, pn_next)
            f_hat.add_(self.phi(si, SN)(F.interpolate(h, size=(H, W), mode="bicubic")))
            pn_next = self.v_patch_nums[si + 1]
            next_scales.append(F.interpolate(f_hat, size=(pn_next, pn_next), mode="area").view(B, C, -1).transpose(1, 2))
        return torch.cat(next_scales, dim=1)

    def get_next_autoregressive_input(
        self, si: int, SN: int, f_hat: torch.Tensor, h_BChw: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One inference step: add scale ``si``'s code map ``h_BChw`` [B, C, pn, pn] to f_hat (in place); return
        (f_hat, f_hat area-downsampled to the next scale) or (f_hat, f_hat) at the last scale."""
        HW = self.v_patch_nums[-1]
        if si != SN - 1:
            f_hat.add_(self.phi(si, SN)(F.interpolate(h_BChw, size=(HW, HW), mode="bicubic")))
            pn = self.v_patch_nums[si + 1]
            return f_hat, F.interpolate(f_hat, size=(pn, pn), mode="area")
        f_hat.add_(self.phi(si, SN)(h_BChw))
        return f_hat, f_hat


class MultiScaleVQVAE(nn.Module):
    """VAR's ``VQVAE``: encoder, ``quant_conv``, multi-scale quantizer, ``post_quant_conv``, decoder."""

    family = "msvq"

    def __init__(self, config: MSVQConfig | None = None):
        super().__init__()
        self.config = c = config or MSVQConfig()
        net = dict(
            ch=c.ch, ch_mult=c.ch_mult, num_res_blocks=c.num_res_blocks, z_channels=c.z_channels,
            attn_levels=(len(c.ch_mult) - 1,) if c.using_sa else (), mid_attn=c.using_mid_sa, fused_qkv=True,
            dropout=c.dropout, norm_groups=c.norm_groups,
        )
        self.encoder = Encoder(in_channels=c.in_channels, double_z=False, **net)
        self.decoder = Decoder(out_channels=c.in_channels, **net)
        self.quantize = MultiScaleQuantizer(c)
        ks = c.quant_conv_ks
        self.quant_conv = nn.Conv2d(c.z_channels, c.z_channels, ks, stride=1, padding=ks // 2)
        self.post_quant_conv = nn.Conv2d(c.z_channels, c.z_channels, ks, stride=1, padding=ks // 2)

    # ---- sizes -------------------------------------------------------------------------------------------------
    @property
    def Cvae(self) -> int:
        return self.config.z_channels

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def n_embed(self) -> int:
        return self.config.vocab_size

    @property
    def patch_nums(self) -> tuple[int, ...]:
        return self.quantize.v_patch_nums

    @property
    def downsample(self) -> int:
        return self.config.downsample

    @property
    def last_layer(self) -> torch.Tensor:
        return self.decoder.conv_out.weight

    # ---- VAR API -----------------------------------------------------------------------------------------------
    def encode_latent(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(x))

    def img_to_idxBl(self, inp_img_no_grad: torch.Tensor, v_patch_nums: Optional[Sequence[int]] = None) -> list[torch.Tensor]:
        """Images in [-1, 1] -> list of LongTensor [B, pn*pn], coarse to fine."""
        return self.quantize.f_to_idxBl_or_fhat(self.encode_latent(inp_img_no_grad), to_fhat=False, v_patch_nums=v_patch_nums)

    def idxBl_to_var_input(self, gt_ms_idx_Bl: list[torch.Tensor]) -> torch.Tensor:
        return self.quantize.idxBl_to_var_input(gt_ms_idx_Bl)

    def get_next_autoregressive_input(self, si: int, SN: int, f_hat: torch.Tensor, h_BChw: torch.Tensor):
        return self.quantize.get_next_autoregressive_input(si, SN, f_hat, h_BChw)

    def fhat_to_img(self, f_hat: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(f_hat)).clamp(-1.0, 1.0)

    def embed_to_fhat(self, ms_h_BChw: list[torch.Tensor], all_to_max_scale: bool = True, last_one: bool = False):
        return self.quantize.embed_to_fhat(ms_h_BChw, all_to_max_scale=all_to_max_scale, last_one=last_one)

    def embed_to_img(self, ms_h_BChw: list[torch.Tensor], all_to_max_scale: bool = True, last_one: bool = True):
        if last_one:
            return self.fhat_to_img(self.embed_to_fhat(ms_h_BChw, all_to_max_scale, last_one=True))
        return [self.fhat_to_img(f) for f in self.embed_to_fhat(ms_h_BChw, all_to_max_scale, last_one=False)]

    def idxBl_to_h(self, ms_idx_Bl: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-scale indices [B, pn*pn] -> code maps [B, Cvae, pn, pn]."""
        B = ms_idx_Bl[0].shape[0]
        out = []
        for idx in ms_idx_Bl:
            pn = round(idx.shape[1] ** 0.5)
            if pn * pn != idx.shape[1]:
                raise ValueError(f"scale with {idx.shape[1]} tokens is not a square map")
            out.append(self.quantize.embedding(idx).transpose(1, 2).reshape(B, self.Cvae, pn, pn))
        return out

    def idxBl_to_img(self, ms_idx_Bl: list[torch.Tensor], same_shape: bool = True, last_one: bool = True):
        """Per-scale indices -> images in [-1, 1] (a list, one per prefix of scales, when ``last_one=False``).
        VAR's signature, with defaults that return the full reconstruction."""
        if len(ms_idx_Bl) != len(self.patch_nums):
            raise ValueError(f"expected {len(self.patch_nums)} scales of tokens, got {len(ms_idx_Bl)}")
        return self.embed_to_img(self.idxBl_to_h(ms_idx_Bl), all_to_max_scale=same_shape, last_one=last_one)

    def img_to_reconstructed_img(self, x: torch.Tensor, v_patch_nums: Optional[Sequence[int]] = None, last_one: bool = False):
        f_hats = self.quantize.f_to_idxBl_or_fhat(self.encode_latent(x), to_fhat=True, v_patch_nums=v_patch_nums)
        if last_one:
            return self.fhat_to_img(f_hats[-1])
        return [self.fhat_to_img(f) for f in f_hats]

    def forward(self, x: torch.Tensor, quantize: bool = True) -> VQOutput:
        """Training forward: reconstruction (not clamped), VQ loss, per-scale indices, quantizer inputs.
        ``quantize=False`` bypasses the quantizer (plain autoencoder; used to warm up before codebook init)."""
        f = self.encode_latent(x)
        if not quantize:
            queries = f.detach().permute(0, 2, 3, 1).reshape(-1, f.shape[1])
            return VQOutput(self.decoder(self.post_quant_conv(f)), f.new_zeros(()), [], queries)
        f_hat, vq_loss, idx_list, queries = self.quantize(f)
        return VQOutput(self.decoder(self.post_quant_conv(f_hat)), vq_loss, idx_list, queries)

    # ---- loading ---------------------------------------------------------------------------------------------
    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # type: ignore[override]
        """As VAR: a stored ``quantize.ema_vocab_hit_SV`` with another number of scales is replaced by ours."""
        key = "quantize.ema_vocab_hit_SV"
        if key in state_dict and state_dict[key].shape[0] != self.quantize.ema_vocab_hit_SV.shape[0]:
            state_dict = dict(state_dict)
            state_dict[key] = self.quantize.ema_vocab_hit_SV.detach().clone()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def infer_msvq_config(state_dict: Mapping[str, torch.Tensor], patch_nums: Sequence[int], **overrides) -> MSVQConfig:
    """Read a VAR-layout checkpoint's sizes from its shapes. ``patch_nums`` cannot be read from the weights
    (the phi convs and codebook are shared by all scales), so it is given."""
    try:
        ch = state_dict["encoder.conv_in.weight"].shape[0]
        n_levels = 1 + max(int(k.split(".")[2]) for k in state_dict if k.startswith("encoder.down."))
        ch_mult = tuple(state_dict[f"encoder.down.{i}.block.0.conv2.weight"].shape[0] // ch for i in range(n_levels))
        num_res_blocks = 1 + max(
            int(k.split(".")[4]) for k in state_dict if k.startswith("encoder.down.0.block.")
        )
        vocab_size, z_channels = state_dict["quantize.embedding.weight"].shape
        resi = [k for k in state_dict if k.startswith("quantize.quant_resi.") and k.endswith(".weight")]
        if any(".qresi_ls." in k for k in resi):
            share, counts = len(resi), 0
        elif any(".qresi." in k for k in resi):
            share, counts = 1, 0
        else:
            share, counts = 0, len(resi)
        cfg = dict(
            vocab_size=vocab_size, z_channels=z_channels, ch=ch, ch_mult=ch_mult, num_res_blocks=num_res_blocks,
            quant_conv_ks=state_dict["quant_conv.weight"].shape[-1], share_quant_resi=share,
            default_qresi_counts=counts if counts != len(patch_nums) else 0,
            quant_resi=0.5 if resi else 0.0, patch_nums=tuple(patch_nums),
            using_sa=f"encoder.down.{n_levels - 1}.attn.0.qkv.weight" in state_dict,
            using_mid_sa="encoder.mid.attn_1.qkv.weight" in state_dict,
            in_channels=state_dict["encoder.conv_in.weight"].shape[1],
            norm_groups=32,  # not stored in the weights: VAR's Normalize uses 32
        )
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"not a VAR VQVAE state dict (cannot read sizes: {type(err).__name__} {err})") from None
    cfg.update(overrides)
    return MSVQConfig(**cfg)


def load_pretrained_msvq(
    path: str | os.PathLike,
    config: Optional[MSVQConfig] = None,
    *,
    patch_nums: Sequence[int] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16),
    key: Optional[str] = None,
) -> MultiScaleVQVAE:
    """Load VAR's ``vae_ch160v4096z32.pth`` (plain state dict), a Lightning-style ``{"state_dict": ...}`` file
    or ``.safetensors``, strictly. The one tolerated difference, as in VAR's own ``load_state_dict``: a stored
    ``quantize.ema_vocab_hit_SV`` (a training statistic) whose number of scales differs is replaced by the model's.
    Without ``config`` the sizes are read from the checkpoint (:func:`infer_msvq_config`) with ``patch_nums``."""
    sd = load_state_dict_file(path, key=key)
    sd = {k: v for k, v in sd.items() if not k.startswith("loss.")}
    if config is None:
        config = infer_msvq_config(sd, patch_nums)
    model = MultiScaleVQVAE(config)
    hit = "quantize.ema_vocab_hit_SV"
    if hit in sd and sd[hit].dim() == 2 and sd[hit].shape[0] != len(config.patch_nums) and sd[hit].shape[1] == config.vocab_size:
        log.info("%s: %s has %d scales, the model %d; using the model's (as VAR does)", path, hit, sd[hit].shape[0],
                 len(config.patch_nums))
        sd[hit] = model.quantize.ema_vocab_hit_SV.detach().clone()
    strict_load(model, sd, source=str(path))
    log.info("loaded multi-scale VQ-VAE from %s (V=%d, Cvae=%d, scales %s)", path, config.vocab_size,
             config.z_channels, config.patch_nums)
    return model.eval()
