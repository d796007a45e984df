"""MaskGIT v2: the network of valeoai's Halton-MaskGIT (``Network/transformer.py`` at the head of
valeoai/Halton-MaskGIT, formerly valeoai/Maskgit-pytorch, since early 2025), in its checkpoint key layout.

v1 (``maskgit.py``) and v2 are both family ``"maskgit"``; ``cfg.layout`` says which (``"v1"`` / ``"v2"``).

State-dict layout (``model_state_dict`` of ``{'iter', 'global_epoch', 'model_state_dict', 'optimizer_state_dict'}``;
the official loader strips ``module.`` and ``_orig_mod.``)::

    cls_emb.weight [num_classes + 1, D]       classes, then the null class (dropped label, CFG)
    tok_emb.weight [V + 1, D]                 codes, then MASK (= V)
    pos_emb.weight [grid * grid, D]           learned positions (an nn.Embedding)
    transformer.layers.i.mlp.1.{weight [6D, D], bias [6D]}    adaLN modulation (SiLU -> Linear) of the class
    transformer.layers.i.ln1.weight [D]       RMSNorm (eps 1e-5, scale only)
    transformer.layers.i.attn.{wq,wk,wv,wo}.weight [D, D]    no biases; q and k RMS-normalised over all D
                                                              (no parameters) before the split into heads
    transformer.layers.i.ln2.weight [D]
    transformer.layers.i.ff.{w1,w3}.weight [F, D], ff.w2.weight [D, F]   SwiGLU w2(silu(w1 x) * w3 x), no biases,
                                              F = 256 * ceil(int(2 * mlp_dim / 3) / 256)
    last_norm.norm_final.{weight, bias} [D]   RMSNorm with scale and shift, then adaLN (last_norm.mlp.1 [2D, D])
    head.weight [V + 1, D] (tied to tok_emb.weight), head.bias [V + 1]
    reg_tokens.weight [register, D]           register tokens appended after the image tokens (register > 0)

Block: ``g1, b1, a1, g2, b2, a2 = mlp(c).chunk(6)``; ``x += a1 * attn(ln1(x) * (1 + b1) + g1)``;
``x += a2 * ff(ln2(x) * (1 + b2) + g2)`` with ``c = cls_emb(label)``. Output: ``head(last_norm(x, c))`` at the
image positions (the registers are dropped).

Conditioning is adaLN (the class embedding modulates every block and the last norm), not a class token in the
sequence. So in genvpt:

* ``prefix_embeds`` [B, P, D] are prepended after the embedding stage (token + position embeddings), before the
  register tokens: the sequence is ``[prompts, image tokens, registers]``; prompts get no position embedding;
* ``replace_class=True`` conditions the adaLN on the null class (the official ``drop_label=True``), so the class
  reaches the model only through the prompts - the v2 counterpart of dropping v1's class token. In guidance the
  unconditional branch then differs from the conditional one only by ``uncond_prefix_embeds``.

The official code's optional token projection (``proj > 1``: ``in_proj``/``out_proj`` convolutions) is not
implemented (its head forward does not run with proj > 1); such checkpoints are refused by the loader.
Decoding (:meth:`MaskGITv2.sample`) is genvpt's MaskGIT decoder (``maskgit.MaskGIT.sample``: samplers
``genvpt`` / ``official_v1``), not the official v2 Halton sampler.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .common import attend
from .maskgit import MaskGIT

__all__ = ["MaskGITv2Config", "MaskGITv2", "swiglu_width"]


def swiglu_width(mlp_dim: int, multiple_of: int = 256) -> int:
    """The official FeedForward's hidden width for a nominal ``mlp_dim``: 2/3 of it, rounded up to ``multiple_of``."""
    h = int(2 * mlp_dim / 3)
    return multiple_of * ((h + multiple_of - 1) // multiple_of)


@dataclass
class MaskGITv2Config:
    vocab_size: int = 16384          # codebook size V (LlamaGen VQ for the released ImageNet_384_large.pth)
    grid: int = 24                   # tokens per side
    num_classes: int = 1000
    hidden_dim: int = 1024
    depth: int = 24
    heads: int = 16
    mlp_dim: Optional[int] = 4096    # nominal width the official trainer passes (hidden_dim * 4)
    ff_dim: Optional[int] = None     # SwiGLU width; None = swiglu_width(mlp_dim). Loading sets it from the shapes.
    register: int = 1
    dropout: float = 0.0
    layout: str = "v2"

    def __post_init__(self) -> None:
        if self.layout != "v2":
            raise ValueError(f"MaskGITv2Config is the v2 layout, got layout={self.layout!r}")
        if self.ff_dim is None and self.mlp_dim is None:
            raise ValueError("MaskGIT v2 needs mlp_dim or ff_dim")
        if self.hidden_dim % self.heads:
            raise ValueError(f"hidden_dim {self.hidden_dim} is not divisible by heads {self.heads}")

    @property
    def ffn_width(self) -> int:
        return int(self.ff_dim) if self.ff_dim is not None else swiglu_width(int(self.mlp_dim))

    @property
    def seq_len(self) -> int:
        return self.grid * self.grid

    @property
    def mask_id(self) -> int:
        return self.vocab_size

    @property
    def null_label(self) -> int:
        return self.num_classes

    def to_dict(self) -> dict:
        return asdict(self)


def _rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).type_as(x)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class RMSNorm(nn.Module):
    """RMS normalisation in float32, then an optional scale (``weight``) and shift (``bias``)."""

    def __init__(self, dim: int, eps: float = 1e-5, scale: bool = True, shift: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if scale else None
        self.bias = nn.Parameter(torch.zeros(dim)) if shift else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _rms(x, self.eps)
        if self.weight is not None:
            out = self.weight * out
        if self.bias is not None:
            out = out + self.bias
        return out


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wk = nn.Linear(dim, dim, bias=False)
        self.wv = nn.Linear(dim, dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        v = self.wv(x)
        q = _rms(self.wq(x), 1e-5).to(v.dtype)  # QK-norm over the full width, before the head split
        k = _rms(self.wk(x), 1e-5).to(v.dtype)
        h = self.heads
        q, k, v = (t.view(B, T, h, D // h).transpose(1, 2) for t in (q, k, v))
        y = attend(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        y = self.wo(y.transpose(1, 2).reshape(B, T, D))
        return F.dropout(y, self.dropout, self.training) if self.dropout > 0 else y


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.dropout = dropout
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.silu(self.w1(x)) * self.w3(x)
        if self.dropout > 0:
            x = F.dropout(x, self.dropout, self.training)
        return self.w2(x)


class Block(nn.Module):
    def __init__(self, cfg: MaskGITv2Config):
        super().__init__()
        D = cfg.hidden_dim
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(D, 6 * D))
        self.ln1 = RMSNorm(D, shift=False)
        self.attn = SelfAttention(D, cfg.heads, cfg.dropout)
        self.ln2 = RMSNorm(D, shift=False)
        self.ff = SwiGLU(D, cfg.ffn_width, cfg.dropout)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        g1, b1, a1, g2, b2, a2 = self.mlp(cond).chunk(6, dim=1)
        x = x + a1.unsqueeze(1) * self.attn(_modulate(self.ln1(x), g1, b1))
        return x + a2.unsqueeze(1) * self.ff(_modulate(self.ln2(x), g2, b2))


class Encoder(nn.Module):
    def __init__(self, cfg: MaskGITv2Config):
        super().__init__()
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        for blk in self.layers:
            x = blk(x, cond)
        return x


class AdaNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm_final = RMSNorm(dim)
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shift, scale = self.mlp(cond).chunk(2, dim=1)
        return _modulate(self.norm_final(x), shift, scale)


class MaskGITv2(nn.Module):
    """Halton-MaskGIT's class-to-image transformer (v2 layout), with genvpt's MaskGIT interface."""

    family = "maskgit"
    layout = "v2"

    def __init__(self, cfg: MaskGITv2Config):
        super().__init__()
        self.cfg = cfg
        D, V = cfg.hidden_dim, cfg.vocab_size
        self.cls_emb = nn.Embedding(cfg.num_classes + 1, D)
        self.tok_emb = nn.Embedding(V + 1, D)
        self.pos_emb = nn.Embedding(cfg.seq_len, D)
        self.transformer = Encoder(cfg)
        self.last_norm = AdaNorm(D)
        self.head = nn.Linear(D, V + 1)
        self.head.weight = self.tok_emb.weight  # tied, as in the official model (both keys are in the state dict)
        if cfg.register > 0:
            self.reg_tokens = nn.Embedding(cfg.register, D)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear) and m is not self.head:
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.zeros_(self.head.bias)
        for emb in (self.cls_emb, self.tok_emb, self.pos_emb):
            nn.init.normal_(emb.weight, std=0.02)
        for blk in self.transformer.layers:  # adaLN-zero
            nn.init.zeros_(blk.mlp[1].weight)
            nn.init.zeros_(blk.mlp[1].bias)
        if self.cfg.register > 0:
            nn.init.normal_(self.reg_tokens.weight, std=0.02)

    # ------------------------------------------------------------------ ids
    @property
    def mask_id(self) -> int:
        return self.cfg.vocab_size

    @property
    def null_label(self) -> int:
        return self.cfg.num_classes

    def class_ids(self, labels: Optional[torch.Tensor], batch: int, device) -> torch.Tensor:
        nc = self.cfg.num_classes
        if labels is None:
            return torch.full((batch,), nc, dtype=torch.long, device=device)
        if (labels < 0).any() or (labels > nc).any():
            raise ValueError(f"labels must lie in [0, {nc}] ({nc} = null class)")
        return labels.to(device)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        tokens: torch.Tensor,
        labels: Optional[torch.Tensor] = None,
        *,
        prefix_embeds: Optional[torch.Tensor] = None,
        replace_class: bool = False,
        with_mask_logit: bool = False,
    ) -> torch.Tensor:
        """Logits [B, N, V] (``with_mask_logit``: [B, N, V + 1], the official output) for every image position.

        ``tokens`` [B, h, w] or [B, N] with MASK = ``mask_id``; ``labels`` [B] (None or ``null_label`` =
        unconditional). ``prefix_embeds`` [B or 1, P, D] are prepended after the token + position embeddings;
        ``replace_class`` conditions the adaLN on the null class so the prompts carry the class (``labels`` ignored).
        """
        B = tokens.shape[0]
        tok = tokens.reshape(B, -1)
        N = self.cfg.seq_len
        if tok.shape[1] != N:
            raise ValueError(f"expected {N} tokens per image (grid {self.cfg.grid}), got {tok.shape[1]}")
        if replace_class:
            if prefix_embeds is None:
                raise ValueError("replace_class needs prefix_embeds (they carry the condition in place of the class)")
            y = self.class_ids(None, B, tok.device)
        else:
            y = self.class_ids(labels, B, tok.device)
        cond = self.cls_emb(y)
        x = self.tok_emb(tok) + self.pos_emb.weight[:N]
        P = 0
        if prefix_embeds is not None:
            P = prefix_embeds.shape[1]
            x = torch.cat([prefix_embeds.to(x.dtype).expand(B, -1, -1), x], dim=1)
        if self.cfg.register > 0:
            x = torch.cat([x, self.reg_tokens.weight.to(x.dtype).expand(B, -1, -1)], dim=1)
        x = self.transformer(x, cond)[:, P:P + N]
        logits = self.head(self.last_norm(x, cond))
        return logits if with_mask_logit else logits[..., : self.cfg.vocab_size]

    # training and decoding are MaskGIT's (they only use forward, mask_id, null_label and cfg)
    mask_tokens = MaskGIT.mask_tokens
    loss = MaskGIT.loss
    sample = MaskGIT.sample
