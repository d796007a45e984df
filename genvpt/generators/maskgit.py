"""MaskGIT: a bidirectional transformer over VQ tokens with class and mask tokens (non-autoregressive, "NAR").

Layout of the valeoai PyTorch port (``Network/transformer.py`` at tag v1.0, checkpoint ``model_state_dict``)::

    tok_emb.weight [V + 1 + num_classes + 1, D]   rows: codes, MASK (= V), classes (V+1+c), null class (V+1+nc)
    pos_emb [1, N + 1, D]                          N image positions, then the class token (appended LAST)
    first_layer.{0,4}.{weight,bias} (LayerNorm eps 1e-12)   first_layer.{2,6}.{weight,bias} (Linear D->D)
    transformer.layers.i.0.norm.{weight,bias}
    transformer.layers.i.0.fn.mha.{in_proj_weight [3D,D], in_proj_bias [3D], out_proj.weight, out_proj.bias}
    transformer.layers.i.1.norm.{weight,bias}
    transformer.layers.i.1.fn.net.0.{weight,bias} [mlp,D]   transformer.layers.i.1.fn.net.3.{weight,bias} [D,mlp]
    last_layer.{0,4}.{weight,bias} (LayerNorm)   last_layer.2.{weight,bias} (Linear)
    bias [N + 1, V + 1 + num_classes + 1]          output bias; logits are tied to tok_emb

Pre-LN blocks, exact GELU. Logits = last_layer(x) @ tok_emb.weight.T + bias, read at the image positions and
the V code rows (the mask row is never predicted).

Prompts (``prefix_embeds`` [B, P, D]) are prepended AFTER ``first_layer`` (the embedding stage), in the space the
transformer layers read, without position embeddings - as the VPT-generative code does after BERT's embedding LN.

Training (:meth:`MaskGIT.loss`): per sample r ~ U[0,1), ceil(cos(pi r/2) * N) random positions set to MASK,
cross-entropy with label smoothing on the masked positions only (per-sample mean over masked tokens, then
batch mean), labels dropped to the null class with probability ``label_drop`` for classifier-free guidance.

Decoding (:meth:`MaskGIT.sample`): start fully masked; at step t of T sample every masked token (softmax at
``temperature``), confidence = log p of the sampled token + choice_temperature * (1 - (t+1)/T) * Gumbel noise,
keep the most confident ones and re-mask ``floor(N * gamma((t+1)/T))`` (at least 1 until the last step, which
fills everything). Optional CFG: logits = (1+w)*cond - w*uncond, with w constant or ramped linearly over steps.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .common import attend, categorical, filter_logits, gumbel_noise, sampling, trunc_normal_

__all__ = ["MaskGITConfig", "MaskGIT", "mask_schedule"]

Schedule = Literal["cosine", "arccos", "linear", "square"]


def mask_schedule(r: torch.Tensor, mode: Schedule = "cosine") -> torch.Tensor:
    """gamma(r): fraction of tokens still masked at progress r in [0, 1] (gamma(0) = 1, gamma(1) = 0)."""
    if mode == "cosine":
        return torch.cos(r * (math.pi / 2))
    if mode == "arccos":
        return torch.arccos(r) / (math.pi / 2)
    if mode == "linear":
        return 1 - r
    if mode == "square":
        return 1 - r**2
    raise ValueError(f"unknown mask schedule {mode!r}; allowed: cosine, arccos, linear, square")


@dataclass
class MaskGITConfig:
    vocab_size: int = 1024      # codebook size V
    grid: int = 16              # tokens per side
    num_classes: int = 1000
    hidden_dim: int = 768
    depth: int = 24
    heads: int = 16
    mlp_dim: int = 3072
    dropout: float = 0.1

    @property
    def seq_len(self) -> int:
        return self.grid * self.grid

    @property
    def emb_rows(self) -> int:
        return self.vocab_size + 1 + self.num_classes + 1

    def to_dict(self) -> dict:
        return asdict(self)


class MultiheadSelfAttention(nn.Module):
    """Parameters named as ``nn.MultiheadAttention`` (packed ``in_proj``), computed with SDPA."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden_dim {dim} is not divisible by heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias).view(B, T, 3, self.heads, D // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        y = attend(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(y.transpose(1, 2).reshape(B, T, D))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.mha = MultiheadSelfAttention(dim, heads, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mha(x)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class TransformerEncoder(nn.Module):
    def __init__(self, cfg: MaskGITConfig):
        super().__init__()
        D = cfg.hidden_dim
        self.layers = nn.ModuleList(
            nn.ModuleList([PreNorm(D, Attention(D, cfg.heads, cfg.dropout)), PreNorm(D, FeedForward(D, cfg.mlp_dim, cfg.dropout))])
            for _ in range(cfg.depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:
            x = x + attn(x)
            x = x + ff(x)
        return x


class MaskGIT(nn.Module):
    family = "maskgit"

    def __init__(self, cfg: MaskGITConfig):
        super().__init__()
        self.cfg = cfg
        D, N = cfg.hidden_dim, cfg.seq_len
        self.tok_emb = nn.Embedding(cfg.emb_rows, D)
        self.pos_emb = nn.Parameter(trunc_normal_(torch.zeros(1, N + 1, D), 0.02))
        self.first_layer = nn.Sequential(
            nn.LayerNorm(D, eps=1e-12), nn.Dropout(cfg.dropout), nn.Linear(D, D), nn.GELU(),
            nn.LayerNorm(D, eps=1e-12), nn.Dropout(cfg.dropout), nn.Linear(D, D),
        )
        self.transformer = TransformerEncoder(cfg)
        self.last_layer = nn.Sequential(
            nn.LayerNorm(D, eps=1e-12), nn.Dropout(cfg.dropout), nn.Linear(D, D), nn.GELU(), nn.LayerNorm(D, eps=1e-12),
        )
        self.bias = nn.Parameter(torch.zeros(N + 1, cfg.emb_rows))
        trunc_normal_(self.tok_emb.weight, 0.02)

    # ------------------------------------------------------------------ ids
    @property
    def mask_id(self) -> int:
        return self.cfg.vocab_size

    @property
    def null_label(self) -> int:
        return self.cfg.num_classes

    def class_tokens(self, labels: Optional[torch.Tensor], batch: int, device) -> torch.Tensor:
        nc = self.cfg.num_classes
        if labels is None:
            labels = torch.full((batch,), nc, dtype=torch.long, device=device)
        elif (labels < 0).any() or (labels > nc).any():
            raise ValueError(f"labels must lie in [0, {nc}] ({nc} = null class)")
        return labels.to(device) + self.cfg.vocab_size + 1

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        tokens: torch.Tensor,
        labels: Optional[torch.Tensor] = None,
        *,
        prefix_embeds: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Logits [B, N, V] for every image position. ``tokens`` [B, h, w] or [B, N] with MASK = ``mask_id``;
        ``labels`` [B] (None or ``null_label`` = unconditional)."""
        B = tokens.shape[0]
        tok = tokens.reshape(B, -1)
        N = self.cfg.seq_len
        if tok.shape[1] != N:
            raise ValueError(f"expected {N} tokens per image (grid {self.cfg.grid}), got {tok.shape[1]}")
        idx = torch.cat([tok, self.class_tokens(labels, B, tok.device)[:, None]], dim=1)
        x = self.first_layer(self.tok_emb(idx) + self.pos_emb)
        P = 0
        if prefix_embeds is not None:
            P = prefix_embeds.shape[1]
            x = torch.cat([prefix_embeds.to(x.dtype).expand(B, -1, -1), x], dim=1)
        x = self.last_layer(self.transformer(x))[:, P:P + N]
        V = self.cfg.vocab_size
        return x @ self.tok_emb.weight[:V].T + self.bias[:N, :V]

    def mask_tokens(
        self, tokens: torch.Tensor, *, generator: Optional[torch.Generator] = None, schedule: Schedule = "cosine"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """MaskGIT training corruption: per sample ceil(gamma(r) N) random positions -> MASK. Returns (masked, mask)."""
        B = tokens.shape[0]
        tok = tokens.reshape(B, -1)
        N = tok.shape[1]
        dev = tok.device
        r = torch.rand(B, generator=generator, device=dev)
        n_mask = torch.ceil(mask_schedule(r, schedule).clamp(1e-6, 1.0) * N).long().clamp(1, N)
        scores = torch.rand(B, N, generator=generator, device=dev)
        ranks = scores.argsort(dim=1).argsort(dim=1)
        mask = ranks < n_mask[:, None]
        return tok.masked_fill(mask, self.mask_id), mask

    def loss(
        self,
        tokens: torch.Tensor,
        labels: Optional[torch.Tensor] = None,
        *,
        prefix_embeds: Optional[torch.Tensor] = None,
        label_smoothing: float = 0.1,
        label_drop: float = 0.0,
        schedule: Schedule = "cosine",
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        B = tokens.shape[0]
        target = tokens.reshape(B, -1)
        if labels is not None and label_drop > 0:
            drop = torch.rand(B, generator=generator, device=target.device) < label_drop
            labels = labels.masked_fill(drop, self.null_label)
        masked, mask = self.mask_tokens(target, generator=generator, schedule=schedule)
        logits = self(masked, labels, prefix_embeds=prefix_embeds)
        ce = F.cross_entropy(logits.float().transpose(1, 2), target, label_smoothing=label_smoothing, reduction="none")
        m = mask.float()
        return ((ce * m).sum(1) / m.sum(1)).mean()

    # ------------------------------------------------------------------ decoding
    @sampling
    def sample(
        self,
        labels: Optional[torch.Tensor],
        *,
        generator: Optional[torch.Generator] = None,
        batch_size: Optional[int] = None,
        steps: int = 8,
        schedule: Schedule = "cosine",
        temperature: float = 1.0,
        choice_temperature: float = 4.5,
        top_k: int = 0,
        top_p: float = 0.0,
        cfg: float = 0.0,
        cfg_schedule: Literal["constant", "linear"] = "constant",
        prefix_embeds: Union[None, torch.Tensor, Sequence[torch.Tensor]] = None,
    ) -> torch.Tensor:
        """Iterative parallel decoding -> token grids [B, h, w].

        ``prefix_embeds`` is one tensor [B or 1, P, D] or a sequence of ``steps`` tensors, one per decoding step
        (per-step prompts, e.g. the Marquee Header schedule).
        """
        device = self.pos_emb.device
        B = labels.shape[0] if labels is not None else int(batch_size or 1)
        N, V = self.cfg.seq_len, self.cfg.vocab_size
        if steps < 1:
            raise ValueError("steps must be >= 1")
        guided = cfg > 0 and labels is not None
        if prefix_embeds is not None and not torch.is_tensor(prefix_embeds) and len(prefix_embeds) != steps:
            raise ValueError(f"per-step prefix_embeds must hold {steps} tensors, got {len(prefix_embeds)}")
        lab = labels.to(device) if labels is not None else None
        lab2 = torch.cat([lab, torch.full_like(lab, self.null_label)]) if guided else lab
        cur = torch.full((B, N), self.mask_id, dtype=torch.long, device=device)
        for t in range(steps):
            pe = prefix_embeds if (prefix_embeds is None or torch.is_tensor(prefix_embeds)) else prefix_embeds[t]
            if pe is not None:
                pe = pe.expand(B, -1, -1)
            if guided:
                pe2 = None if pe is None else torch.cat([pe, pe])
                logits = self(torch.cat([cur, cur]), lab2, prefix_embeds=pe2).float()
                c, u = logits.chunk(2)
                w = cfg * (t + 1) / steps if cfg_schedule == "linear" else cfg
                logits = (1 + w) * c - w * u
            else:
                logits = self(cur, lab, prefix_embeds=pe).float()
            if temperature == 0:
                sampled = logits.argmax(-1)
            else:
                logits = filter_logits(logits / temperature, top_k, top_p)
                probs = logits.softmax(-1)
                sampled = categorical(probs, generator=generator)
            unknown = cur == self.mask_id
            sampled = torch.where(unknown, sampled, cur)
            if t == steps - 1:
                cur = sampled
                break
            ratio = (t + 1) / steps
            n_unknown = int(unknown.sum(1).min().item())
            n_mask = int(math.floor(N * float(mask_schedule(torch.tensor(ratio), schedule))))
            n_mask = max(1, min(n_unknown - 1, n_mask))
            logp = torch.log_softmax(logits, -1).gather(-1, sampled[..., None]).squeeze(-1)
            conf = torch.where(unknown, logp, torch.full_like(logp, float("inf")))
            conf = conf + choice_temperature * (1 - ratio) * gumbel_noise(conf, generator)
            lowest = torch.topk(conf, n_mask, dim=1, largest=False).indices
            cur = sampled.scatter(1, lowest, self.mask_id)
        return cur.view(B, self.cfg.grid, self.cfg.grid)
