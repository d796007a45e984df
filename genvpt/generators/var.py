"""VAR: visual autoregressive modelling by next-scale prediction (FoundationVision/VAR layout).

State dict of ``var_d{depth}`` (C = 64*depth, heads = depth, L = sum(pn^2), K = len(patch_nums))::

    pos_start [1, 1, C]       pos_1LC [1, L, C]       lvl_1L [1, L] (buffer)   attn_bias_for_masking [1,1,L,L] (buffer)
    word_embed.{weight [C, Cvae], bias}   class_emb.weight [num_classes + 1, C]   lvl_embed.weight [K, C]
    (shared_aln only) shared_ada_lin.1.{weight [6C, C], bias}
    blocks.N.attn.scale_mul_1H11 [1, H, 1, 1] (attn_l2_norm only)  blocks.N.attn.{q_bias, v_bias} [C]
    blocks.N.attn.zero_k_bias [C] (buffer)   blocks.N.attn.mat_qkv.weight [3C, C]   blocks.N.attn.proj.{weight, bias}
    blocks.N.ffn.fc1.{weight [4C, C], bias}  blocks.N.ffn.fc2.{weight [C, 4C], bias}
    blocks.N.ada_lin.1.{weight [6C, C], bias}   (shared_aln: blocks.N.ada_gss [1, 1, 6, C] instead)
    head_nm.ada_lin.1.{weight [2C, C], bias}   head.{weight [V, C], bias}

Training input is the tokenizer's teacher-forcing map ``idxBl_to_var_input`` [B, L-1, Cvae]; the start token is
``class_emb(label) + pos_start``; every token adds ``lvl_embed(scale id) + pos_1LC``; attention is block-causal (a
token sees earlier scales and its own). Sampling runs scale by scale with a KV cache, guidance ramping
t = cfg * si / (K-1) as logits = (1+t) cond - t uncond, top-k / top-p, and the tokenizer's
``get_next_autoregressive_input`` to build the next scale's input.

Prompt hooks: ``input_offsets`` (a list over scales of [B or 1, pn*pn, C] or None, ADDED to that scale's input
embeddings - MVP's frame prompts; scale 0 is the start token) and ``prefix_embeds`` [B or 1, P, C] (extra tokens
before the start token, visible to every token and seeing only themselves - the prefilled-prompt baseline).
``cond_embeds`` [B, C] replaces ``class_emb(label)`` (text-to-image conditioning, VAR-CLIP style).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import KVCache, attend, compute_dtype, sample_logits, sampling, trunc_normal_

__all__ = ["VARConfig", "VAR", "build_var_config", "VAR_256_PATCH_NUMS", "VAR_512_PATCH_NUMS"]

VAR_256_PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
VAR_512_PATCH_NUMS = (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)


@dataclass
class VARConfig:
    vocab_size: int = 4096
    Cvae: int = 32
    num_classes: int = 1000
    depth: int = 16
    embed_dim: Optional[int] = None      # default 64 * depth (VAR's rule)
    num_heads: Optional[int] = None      # default depth
    mlp_ratio: float = 4.0
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: Optional[float] = None  # default 0.1 * depth / 24
    norm_eps: float = 1e-6
    shared_aln: bool = False
    attn_l2_norm: bool = True
    cond_drop_rate: float = 0.1
    patch_nums: tuple[int, ...] = field(default=VAR_256_PATCH_NUMS)
    init_adaln: float = 0.5
    init_adaln_gamma: float = 1e-5
    init_head: float = 0.02

    def __post_init__(self) -> None:
        self.patch_nums = tuple(int(p) for p in self.patch_nums)
        if self.patch_nums[0] != 1:
            raise ValueError(f"VAR's first scale must be 1x1 (the start token), got patch_nums {self.patch_nums}")

    @property
    def C(self) -> int:
        return self.embed_dim or 64 * self.depth

    @property
    def heads(self) -> int:
        return self.num_heads or self.depth

    @property
    def dpr(self) -> float:
        return 0.1 * self.depth / 24 if self.drop_path_rate is None else self.drop_path_rate

    @property
    def L(self) -> int:
        return sum(p * p for p in self.patch_nums)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["patch_nums"] = list(self.patch_nums)
        return d


def build_var_config(depth: int, *, patch_nums: Sequence[int] = VAR_256_PATCH_NUMS, **kw: Any) -> VARConfig:
    """The official sizes: ``build_var_config(16)`` is var_d16; ``shared_aln=True`` with 512 px patch_nums is d36-s."""
    return VARConfig(depth=depth, patch_nums=tuple(patch_nums), **kw)


class DropPath(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:  # training first: compiled sampling then shares one graph for all blocks
            return x
        keep = x.new_empty(x.shape[0], *([1] * (x.dim() - 1))).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class SelfAttention(nn.Module):
    prefix_gate = None  # (prompt length, gates [heads]) while common.prefix_gates is active

    def __init__(self, C: int, heads: int, attn_drop: float, proj_drop: float, l2_norm: bool):
        super().__init__()
        if C % heads:
            raise ValueError(f"embed_dim {C} is not divisible by num_heads {heads}")
        self.heads, self.head_dim, self.l2_norm = heads, C // heads, l2_norm
        if l2_norm:
            self.scale = 1.0
            self.scale_mul_1H11 = nn.Parameter(torch.full((1, heads, 1, 1), 4.0).log())
            self.max_scale_mul = math.log(100)
        else:
            self.scale = 0.25 / math.sqrt(self.head_dim)
        self.q_bias = nn.Parameter(torch.zeros(C))
        self.v_bias = nn.Parameter(torch.zeros(C))
        self.register_buffer("zero_k_bias", torch.zeros(C))
        self.mat_qkv = nn.Linear(C, 3 * C, bias=False)
        self.proj = nn.Linear(C, C)
        self.proj_drop = nn.Dropout(proj_drop) if proj_drop > 0 else nn.Identity()
        self.attn_drop = attn_drop

    def forward(self, x: torch.Tensor, attn_bias: Optional[torch.Tensor], cache: Optional[KVCache] = None) -> torch.Tensor:
        B, T, C = x.shape
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
        qkv = F.linear(x, self.mat_qkv.weight, bias).view(B, T, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # [B, H, T, hd]
        if self.l2_norm:
            scale_mul = self.scale_mul_1H11.clamp_max(self.max_scale_mul).exp()
            q = F.normalize(q, dim=-1).mul(scale_mul)
            k = F.normalize(k, dim=-1)
        if cache is not None:
            k, v = cache.update(k, v)
        y = attend(q, k, v, attn_mask=attn_bias, dropout_p=self.attn_drop if self.training else 0.0, scale=self.scale,
                   prefix_gate=self.prefix_gate)
        return self.proj_drop(self.proj(y.transpose(1, 2).reshape(B, T, C)))


class FFN(nn.Module):
    def __init__(self, C: int, hidden: int, drop: float):
        super().__init__()
        self.fc1 = nn.Linear(C, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, C)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.act(self.fc1(x))))


class AdaLNSelfAttn(nn.Module):
    """Pre-LN block whose LayerNorm scale/shift and residual gates come from the condition (AdaLN)."""

    def __init__(self, cfg: VARConfig, drop_path: float):
        super().__init__()
        C = cfg.C
        self.C = C
        self.shared_aln = cfg.shared_aln
        self.drop_path = DropPath(drop_path)
        self.attn = SelfAttention(C, cfg.heads, cfg.attn_drop_rate, cfg.drop_rate, cfg.attn_l2_norm)
        self.ffn = FFN(C, round(C * cfg.mlp_ratio), cfg.drop_rate)
        self.ln_wo_grad = nn.LayerNorm(C, eps=cfg.norm_eps, elementwise_affine=False)
        if cfg.shared_aln:
            self.ada_gss = nn.Parameter(torch.randn(1, 1, 6, C) / C**0.5)
        else:
            self.ada_lin = nn.Sequential(nn.SiLU(inplace=False), nn.Linear(C, 6 * C))

    def modulation(self, cond: torch.Tensor) -> torch.Tensor:
        """The condition's AdaLN gammas, scales and shifts [B, 1, 6, C]; sampling computes them once per call (the
        condition is the same at every scale), saving the 6C x C weights' reads at every scale."""
        if self.shared_aln:
            return self.ada_gss + cond  # cond: [B, 1, 6, C]
        return self.ada_lin(cond).view(-1, 1, 6, self.C)

    def forward(self, x: torch.Tensor, cond: Optional[torch.Tensor], attn_bias: Optional[torch.Tensor],
                cache: Optional[KVCache] = None, gss: Optional[torch.Tensor] = None) -> torch.Tensor:
        if gss is None:
            gss = self.modulation(cond)
        gamma1, gamma2, scale1, scale2, shift1, shift2 = gss.unbind(2)
        x = x + self.drop_path(self.attn(self.ln_wo_grad(x) * (1 + scale1) + shift1, attn_bias, cache) * gamma1)
        x = x + self.drop_path(self.ffn(self.ln_wo_grad(x) * (1 + scale2) + shift2) * gamma2)
        return x


class AdaLNBeforeHead(nn.Module):
    def __init__(self, C: int, eps: float):
        super().__init__()
        self.C = C
        self.ln_wo_grad = nn.LayerNorm(C, eps=eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(inplace=False), nn.Linear(C, 2 * C))

    def modulation(self, cond: torch.Tensor) -> torch.Tensor:
        return self.ada_lin(cond).view(-1, 1, 2, self.C)

    def forward(self, x: torch.Tensor, cond: Optional[torch.Tensor], mod: Optional[torch.Tensor] = None) -> torch.Tensor:
        scale, shift = (self.modulation(cond) if mod is None else mod).unbind(2)
        return self.ln_wo_grad(x) * (1 + scale) + shift


class SharedAdaLin(nn.Linear):
    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return super().forward(cond).view(-1, 1, 6, self.out_features // 6)


class VAR(nn.Module):
    family = "var"

    def __init__(self, cfg: VARConfig):
        super().__init__()
        self.cfg = cfg
        C, L, K = cfg.C, cfg.L, len(cfg.patch_nums)
        self.C, self.L, self.num_classes = C, L, cfg.num_classes
        self.patch_nums = cfg.patch_nums
        self.first_l = 1
        self.begin_ends = []
        cur = 0
        for pn in cfg.patch_nums:
            self.begin_ends.append((cur, cur + pn * pn))
            cur += pn * pn
        init_std = math.sqrt(1 / C / 3)

        self.word_embed = nn.Linear(cfg.Cvae, C)
        self.class_emb = nn.Embedding(cfg.num_classes + 1, C)
        self.pos_start = nn.Parameter(torch.empty(1, self.first_l, C))
        self.pos_1LC = nn.Parameter(torch.empty(1, L, C))
        self.lvl_embed = nn.Embedding(K, C)
        if cfg.shared_aln:
            self.shared_ada_lin = nn.Sequential(nn.SiLU(inplace=False), SharedAdaLin(C, 6 * C))
        else:
            self.shared_ada_lin = nn.Identity()
        dpr = [cfg.dpr * i / max(1, cfg.depth - 1) for i in range(cfg.depth)]  # linspace(0, dpr, depth)
        self.blocks = nn.ModuleList(AdaLNSelfAttn(cfg, dpr[i]) for i in range(cfg.depth))

        lvl = torch.cat([torch.full((pn * pn,), i) for i, pn in enumerate(cfg.patch_nums)]).view(1, L)
        bias = torch.where(lvl.view(1, L, 1) >= lvl.view(1, 1, L), 0.0, -torch.inf).reshape(1, 1, L, L)
        self.register_buffer("lvl_1L", lvl.long())
        self.register_buffer("attn_bias_for_masking", bias.contiguous())

        self.head_nm = AdaLNBeforeHead(C, cfg.norm_eps)
        self.head = nn.Linear(C, cfg.vocab_size)
        if not any(p.is_meta for p in self.parameters()):
            self._init_weights(init_std)

    def _init_weights(self, init_std: float) -> None:
        cfg = self.cfg
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, init_std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                trunc_normal_(m.weight, init_std)
        trunc_normal_(self.pos_start, init_std)
        trunc_normal_(self.pos_1LC, init_std)
        with torch.no_grad():
            self.head.weight.mul_(cfg.init_head)
            self.head.bias.zero_()
            self.head_nm.ada_lin[-1].weight.mul_(cfg.init_adaln)
            self.head_nm.ada_lin[-1].bias.zero_()
            depth = len(self.blocks)
            for blk in self.blocks:
                blk.attn.proj.weight.div_(math.sqrt(2 * depth))
                blk.ffn.fc2.weight.div_(math.sqrt(2 * depth))
                if not cfg.shared_aln:
                    lin = blk.ada_lin[-1]
                    lin.weight[2 * self.C:].mul_(cfg.init_adaln)
                    lin.weight[: 2 * self.C].mul_(cfg.init_adaln_gamma)
                    lin.bias.zero_()

    # ------------------------------------------------------------------ helpers
    @property
    def null_label(self) -> int:
        return self.num_classes

    def _cond(self, labels: Optional[torch.Tensor], B: int, cond_embeds: Optional[torch.Tensor]) -> torch.Tensor:
        if cond_embeds is not None:
            return cond_embeds
        device = self.pos_start.device
        if labels is None:
            labels = torch.full((B,), self.num_classes, dtype=torch.long, device=device)
        elif (labels < 0).any() or (labels > self.num_classes).any():
            raise ValueError(f"labels must lie in [0, {self.num_classes}] ({self.num_classes} = null class)")
        return self.class_emb(labels.to(device))

    def _offsets_flat(self, input_offsets: Optional[Sequence[Optional[torch.Tensor]]], upto: int, B: int) -> Optional[torch.Tensor]:
        """Concatenate per-scale offsets (None = zeros) for scales [0, upto) -> [B or 1, L_upto, C]."""
        if input_offsets is None:
            return None
        if len(input_offsets) != len(self.patch_nums):
            raise ValueError(f"input_offsets must have one entry per scale ({len(self.patch_nums)}), got {len(input_offsets)}")
        parts, any_set = [], False
        batch = 1
        for si in range(upto):
            o = input_offsets[si]
            if o is not None:
                any_set = True
                batch = max(batch, o.shape[0])
        if not any_set:
            return None
        for si in range(upto):
            n = self.patch_nums[si] ** 2
            o = input_offsets[si]
            if o is None:
                o = self.pos_1LC.new_zeros(1, n, self.C)
            elif o.shape[-2:] != (n, self.C):
                raise ValueError(f"input_offsets[{si}] must be [B or 1, {n}, {self.C}], got {tuple(o.shape)}")
            parts.append(o.expand(batch, -1, -1))
        return torch.cat(parts, dim=1)

    def get_logits(self, h: torch.Tensor, cond_BD: Optional[torch.Tensor], head_mod: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.head(self.head_nm(h.float(), cond_BD, head_mod).float()).float()

    # ------------------------------------------------------------------ training
    def forward(
        self,
        labels: Optional[torch.Tensor],
        x_BLCv_wo_first_l: torch.Tensor,
        *,
        input_offsets: Optional[Sequence[Optional[torch.Tensor]]] = None,
        prefix_embeds: Optional[torch.Tensor] = None,
        cond_embeds: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Teacher-forced logits [B, L, V]. Labels are dropped to the null class with ``cond_drop_rate`` in train mode."""
        B = x_BLCv_wo_first_l.shape[0]
        ed = x_BLCv_wo_first_l.shape[1] + self.first_l
        if ed != self.L:
            raise ValueError(f"teacher-forcing input must hold L-1 = {self.L - 1} tokens, got {ed - 1}")
        if self.training and labels is not None and cond_embeds is None and self.cfg.cond_drop_rate > 0:
            drop = torch.rand(B, device=labels.device) < self.cfg.cond_drop_rate
            labels = labels.masked_fill(drop, self.num_classes)
        cond_BD = self._cond(labels, B, cond_embeds)
        sos = cond_BD.unsqueeze(1).expand(B, self.first_l, -1) + self.pos_start.expand(B, self.first_l, -1)
        x = torch.cat((sos, self.word_embed(x_BLCv_wo_first_l.float())), dim=1)
        x = x + self.lvl_embed(self.lvl_1L[:, :ed].expand(B, -1)) + self.pos_1LC[:, :ed]
        off = self._offsets_flat(input_offsets, len(self.patch_nums), B)
        if off is not None:
            x = x + off
        attn_bias = self.attn_bias_for_masking[:, :, :ed, :ed]
        P = 0
        if prefix_embeds is not None:
            P = prefix_embeds.shape[1]
            x = torch.cat([prefix_embeds.to(x.dtype).expand(B, -1, -1), x], dim=1)
            attn_bias = self._prefix_bias(attn_bias, P)
        cond = self.shared_ada_lin(cond_BD)
        for blk in self.blocks:
            x = blk(x, cond, attn_bias)
        return self.get_logits(x[:, P:], cond_BD)

    def gated_attention(self) -> list[nn.Module]:
        """The attention module of every block, in order (what ``common.prefix_gates`` gates)."""
        return [blk.attn for blk in self.blocks]

    @staticmethod
    def _prefix_bias(attn_bias: torch.Tensor, P: int) -> torch.Tensor:
        """Extend the block-causal bias with P prefix tokens that every token sees and that see only themselves."""
        L = attn_bias.shape[-1]
        out = attn_bias.new_zeros(1, 1, P + L, P + L)
        out[..., P:, P:] = attn_bias
        out[..., :P, P:] = float("-inf")
        return out

    def loss(self, logits: torch.Tensor, gt_BL: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        """VAR's loss: per-token cross-entropy, uniform over the L tokens, mean over the batch."""
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), gt_BL.reshape(-1), label_smoothing=label_smoothing)

    # ------------------------------------------------------------------ sampling
    @sampling
    def sample(
        self,
        labels: Optional[torch.Tensor],
        *,
        tokenizer: Any,
        generator: Optional[torch.Generator] = None,
        batch_size: Optional[int] = None,
        cfg: float = 1.5,
        top_k: int = 0,
        top_p: float = 0.0,
        temperature: float = 1.0,
        use_cache: bool = True,
        compile: bool = False,
        cuda_graphs: bool = False,
        input_offsets: Optional[Sequence[Optional[torch.Tensor]]] = None,
        prefix_embeds: Optional[torch.Tensor] = None,
        cond_embeds: Optional[torch.Tensor] = None,
        null_embeds: Optional[torch.Tensor] = None,
        return_fhat: bool = False,
    ):
        """Next-scale sampling -> list of K LongTensors [B, pn*pn] (and f_hat [B, Cvae, pn_K, pn_K] if ``return_fhat``).

        ``tokenizer`` is the multi-scale VQ-VAE (``quantize.embedding``, ``get_next_autoregressive_input``).
        ``cfg`` follows VAR's ramp t = cfg * si / (K - 1); ``cfg == 0`` runs no unconditional branch.
        ``cond_embeds`` [B, C] replace ``class_emb(labels)``; ``null_embeds`` [B or 1, C] replace the null class in
        guidance's unconditional branch (e.g. a learned null text embedding).

        ``compile`` runs each scale's cached forward through ``torch.compile`` per block and head (the blocks share
        one graph per scale: the static KV cache fixes every shape once the scale is known); ``cuda_graphs`` captures
        the whole step once per scale as a CUDA graph and replays it (CUDA only). Both keep their state (static caches, compiled code,
        graphs) on the model per batch size, prefix length and dtype, so the second call with the same shapes pays
        no compilation or capture. The draws (top-k / top-p, the generator) stay eager: equal logits give equal
        tokens. See :class:`ScaleStepper`.
        """
        device = self.pos_start.device
        if (compile or cuda_graphs) and not use_cache:
            raise ValueError("compile / cuda_graphs need the KV cache (use_cache=True)")
        if cuda_graphs and device.type != "cuda":
            raise ValueError(f"cuda_graphs needs the model on a CUDA device; it is on {device}")
        if (compile or cuda_graphs) and any(m.prefix_gate is not None for m in self.gated_attention()):
            raise ValueError("gated prompts (prefix_gate) run eagerly: sample them without compile / cuda_graphs")
        if labels is not None:
            B = labels.shape[0]
        elif cond_embeds is not None:
            B = cond_embeds.shape[0]
        else:
            B = int(batch_size or 1)
        K = len(self.patch_nums)
        guided = cfg > 0
        cond_BD = self._cond(labels, B, cond_embeds)
        if guided:
            null = null_embeds.to(cond_BD.dtype).expand(B, -1) if null_embeds is not None else self._cond(None, B, None)
            cond_BD = torch.cat([cond_BD, null])
        BB = cond_BD.shape[0]
        rep = 2 if guided else 1
        lvl_pos = self.lvl_embed(self.lvl_1L) + self.pos_1LC
        cond = self.shared_ada_lin(cond_BD)
        embedding = _quantizer(tokenizer).embedding
        Cvae = embedding.weight.shape[1]
        pn_last = self.patch_nums[-1]
        f_hat = cond_BD.new_zeros(B, Cvae, pn_last, pn_last)

        def offset(si: int) -> Optional[torch.Tensor]:
            if input_offsets is None or input_offsets[si] is None:
                return None
            o = input_offsets[si].to(cond_BD.dtype)
            if o.shape[-2:] != (self.patch_nums[si] ** 2, self.C):
                raise ValueError(f"input_offsets[{si}] must be [B or 1, {self.patch_nums[si] ** 2}, {self.C}], got {tuple(o.shape)}")
            o = o.expand(B, -1, -1)
            return o.repeat(rep, 1, 1)

        if input_offsets is not None and len(input_offsets) != K:
            raise ValueError(f"input_offsets must have one entry per scale ({K}), got {len(input_offsets)}")

        P = 0
        prefix = None
        if prefix_embeds is not None:
            prefix = prefix_embeds.to(cond_BD.dtype).expand(B, -1, -1).repeat(rep, 1, 1)
            P = prefix.shape[1]

        token_map = cond_BD.unsqueeze(1) + self.pos_start.expand(BB, -1, -1) + lvl_pos[:, : self.first_l]
        o = offset(0)
        if o is not None:
            token_map = token_map + o
        stepper = self._stepper(BB, P, compute_dtype(device, cond_BD.dtype), compile, cuda_graphs) if use_cache else None
        if stepper is not None:
            stepper.begin(cond, cond_BD)
            if prefix is not None:
                stepper.prefill(prefix)
        seen: list[torch.Tensor] = [] if prefix is None else [prefix]
        out: list[torch.Tensor] = []
        cur_L = 0
        for si, pn in enumerate(self.patch_nums):
            n = pn * pn
            t = cfg * si / max(1, K - 1) if guided else None
            if stepper is not None:
                logits = stepper.step(si, P + cur_L, token_map, B, t)
                cur_L += n
            else:
                cur_L += n
                seen.append(token_map)
                x = torch.cat(seen, dim=1)
                bias = self.attn_bias_for_masking[:, :, :cur_L, :cur_L]
                if P:
                    bias = self._prefix_bias(bias, P)
                for blk in self.blocks:
                    x = blk(x, cond, bias)
                logits = self._guided_logits(x[:, -n:], cond_BD, B, t)
            idx = sample_logits(logits, generator=generator, temperature=temperature, top_k=top_k, top_p=top_p)
            out.append(idx)
            h = embedding(idx).transpose(1, 2).reshape(B, Cvae, pn, pn)
            f_hat, next_map = tokenizer.get_next_autoregressive_input(si, K, f_hat, h)
            if si != K - 1:
                nxt = next_map.view(B, Cvae, -1).transpose(1, 2)
                token_map = self.word_embed(nxt) + lvl_pos[:, cur_L: cur_L + self.patch_nums[si + 1] ** 2]
                token_map = token_map.repeat(rep, 1, 1)
                o = offset(si + 1)
                if o is not None:
                    token_map = token_map + o
        return (out, f_hat) if return_fhat else out

    # ------------------------------------------------------------------ the cached per-scale step
    def _guided_logits(self, h: torch.Tensor, cond_BD: Optional[torch.Tensor], B: int, t: Optional[float],
                       head_mod: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Head logits of the scale's hidden states; with guidance (``t`` not None, 2B rows: conditional then
        unconditional) VAR's mix (1 + t) cond - t uncond -> [B, n, V]."""
        logits = self.get_logits(h, cond_BD, head_mod)
        if t is not None:
            logits = (1 + t) * logits[:B] - t * logits[B:]
        return logits

    def _scale_logits(self, token_map: torch.Tensor, gss: Sequence[torch.Tensor], head_mod: torch.Tensor,
                      caches: Sequence[KVCache], B: int, t: Optional[float], block_fn: Any = None,
                      head_fn: Any = None) -> torch.Tensor:
        """One scale of cached sampling: the scale's input tokens through every block (``gss``: each block's AdaLN
        modulation of the condition; keys / values appended to ``caches`` at their ``pos``), then the guided head
        logits (``head_mod``: the head's modulation). The unit that is captured as a CUDA graph;
        ``block_fn(block, x, gss, cache)`` / ``head_fn(model, h, head_mod, B, t)`` are the compiled block and head."""
        x = token_map
        for blk, g, c in zip(self.blocks, gss, caches):
            x = blk(x, None, None, c, g) if block_fn is None else block_fn(blk, x, g, c)
        if head_fn is None:
            return self._guided_logits(x, None, B, t, head_mod)
        return head_fn(self, x, head_mod, B, t)

    def _stepper(self, BB: int, P: int, dtype: torch.dtype, compile: bool, cuda_graphs: bool) -> "ScaleStepper":
        device = self.pos_start.device
        if not (compile or cuda_graphs):
            return ScaleStepper(self, BB, P, dtype, device)  # eager: nothing worth keeping between calls
        key = (BB, P, dtype, str(device), compile, cuda_graphs)
        steppers = self.__dict__.setdefault("_steppers", {})
        if key not in steppers:
            steppers[key] = ScaleStepper(self, BB, P, dtype, device, compile=compile, cuda_graphs=cuda_graphs)
        return steppers[key]


class ScaleStepper:
    """VAR's cached sampling step for one batch size (``BB`` rows, guidance's included), prefix length ``P`` and
    activation dtype: static KV caches (allocated once, ``[BB, H, P + L, head_dim]`` per block) whose write
    position is set per scale, so every scale's step has fixed shapes; optionally that step compiled
    (``torch.compile`` per block and head, ``dynamic=False``: one graph per scale each) and / or captured as one
    CUDA graph per scale, with its inputs (the token map, the blocks' and the head's AdaLN modulations of the
    condition) copied into static buffers before each replay.
    """

    def __init__(self, model: VAR, BB: int, P: int, dtype: torch.dtype, device: torch.device, *,
                 compile: bool = False, cuda_graphs: bool = False):
        H = model.cfg.heads
        self.model, self.BB, self.P = model, BB, P
        self.caches = [KVCache.allocate(P + model.L, BB, H, model.C // H, dtype=dtype, device=device)
                       for _ in model.blocks]
        self.compiled = compile
        self.block_fn = self.head_fn = None
        if compile:  # per block, not the whole step: the 16 (or 30) blocks of one scale share one compiled graph
            self.block_fn = torch.compile(_block_step, dynamic=False)
            self.head_fn = torch.compile(_head_step, dynamic=False)
        self.cuda_graphs = cuda_graphs
        self.graphs: dict[int, tuple[Any, torch.Tensor, torch.Tensor]] = {}  # scale -> (graph, token_map in, logits out)
        self.gss: Optional[list[torch.Tensor]] = None   # per block [BB, 1, 6, C]
        self.head_mod: Optional[torch.Tensor] = None     # [BB, 1, 2, C]
        self.pool = None

    def begin(self, cond: torch.Tensor, cond_BD: torch.Tensor) -> None:
        """Start a sampling call: the condition's AdaLN modulations of every block and of the head, computed once
        for all scales (copied into the static buffers under graphs)."""
        gss = [blk.modulation(cond) for blk in self.model.blocks]
        head_mod = self.model.head_nm.modulation(cond_BD)
        if not self.cuda_graphs or self.gss is None:
            self.gss, self.head_mod = gss, head_mod
            if self.cuda_graphs:  # own buffers, whose addresses the graphs keep
                self.gss, self.head_mod = [g.clone() for g in gss], head_mod.clone()
            return
        for mine, g in zip(self.gss, gss):
            mine.copy_(g)
        self.head_mod.copy_(head_mod)

    def prefill(self, prefix: torch.Tensor) -> None:
        """The prefix tokens through every block (eager), filling cache positions [0, P)."""
        x = prefix
        for blk, g, c in zip(self.model.blocks, self.gss, self.caches):
            c.pos = 0
            x = blk(x, None, None, c, g)

    def _at(self, start: int) -> None:
        for c in self.caches:
            c.pos = start

    def _run(self, token_map: torch.Tensor, B: int, t: Optional[float]) -> torch.Tensor:
        if not self.compiled:
            return self.model._scale_logits(token_map, self.gss, self.head_mod, self.caches, B, t)
        with torch._dynamo.config.patch(recompile_limit=max(64, 4 * len(self.model.patch_nums))):  # one per scale
            return self.model._scale_logits(token_map, self.gss, self.head_mod, self.caches, B, t,
                                            self.block_fn, self.head_fn)

    def step(self, si: int, start: int, token_map: torch.Tensor, B: int, t: Optional[float]) -> torch.Tensor:
        """Logits [B, n, V] of scale ``si`` whose ``n`` tokens take cache positions [start, start + n)."""
        self._at(start)
        if not self.cuda_graphs:
            return self._run(token_map, B, t)
        if si not in self.graphs:
            static_in = token_map.clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up outside the graph (kernels chosen, compiled code loaded)
                self._run(static_in, B, t)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            if self.pool is None:
                self.pool = torch.cuda.graph_pool_handle()
            self._at(start)
            with torch.cuda.graph(graph, pool=self.pool):
                static_out = self._run(static_in, B, t)
            self.graphs[si] = (graph, static_in, static_out)
        graph, static_in, static_out = self.graphs[si]
        static_in.copy_(token_map)
        graph.replay()
        for c in self.caches:
            c.pos = start + token_map.shape[1]
        return static_out.clone()


def _block_step(blk: AdaLNSelfAttn, x: torch.Tensor, gss: torch.Tensor, cache: KVCache) -> torch.Tensor:
    return blk(x, None, None, cache, gss)


def _head_step(model: VAR, h: torch.Tensor, head_mod: torch.Tensor, B: int, t: Optional[float]) -> torch.Tensor:
    return model._guided_logits(h, None, B, t, head_mod)


def _quantizer(tokenizer: Any) -> Any:
    """The object holding ``embedding`` (VAR keeps it on ``vae.quantize``)."""
    q = getattr(tokenizer, "quantize", tokenizer)
    if not hasattr(q, "embedding"):
        raise TypeError(f"{type(tokenizer).__name__} has no quantize.embedding; VAR sampling needs the multi-scale VQ-VAE")
    return q
