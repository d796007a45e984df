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

``sampler="official_v1"`` instead reproduces ``MaskGIT.sample`` of valeoai/Maskgit-pytorch at tag v1.0
(``Trainer/vit.py``, with its ``adap_sche`` schedule); see :func:`official_unmask_counts` and :meth:`MaskGIT.sample`.
``sampler="official_v1_2023"`` is the same code before the maintainer's fix of Halton-MaskGIT issue #2 (Nov 2023),
whose ramps used ``t / T`` instead of ``t / (T - 1)``; the README's FID 6.80 dates from then.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..distributed import batch_rand
from .common import attend, categorical, filter_logits, gumbel_noise, sampling, trunc_normal_

__all__ = ["MaskGITConfig", "MaskGIT", "mask_schedule", "official_unmask_counts", "SAMPLERS"]

Schedule = Literal["cosine", "arccos", "linear", "square"]
Sampler = Literal["genvpt", "official_v1", "official_v1_2023"]
SAMPLERS = ("genvpt", "official_v1", "official_v1_2023")


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


def official_unmask_counts(steps: int, n_tokens: int, mode: str = "arccos") -> list[int]:
    """Tokens revealed at each of ``steps`` decoding steps by valeoai MaskGIT v1.0's ``adap_sche`` (float32 torch,
    as the official code): ``r = linspace(1, 0, steps)``; ``v = 1 - r`` (linear), ``1 - r^2`` (square),
    ``cos(r pi/2)`` (cosine), ``arccos(r) / (pi/2)`` (arccos) or ``1 - sqrt(r)`` (root); counts =
    ``round(v / sum(v) * n_tokens)`` (half to even), zeros raised to 1, and the last count corrected so the counts
    sum to ``n_tokens`` (it can end <= 0 when rounding over-fills; decoding then stops once every token is known)."""
    if steps < 2:
        raise ValueError("the official v1 schedule needs steps >= 2 (its ramps divide by steps - 1)")
    r = torch.linspace(1, 0, steps)
    if mode == "root":
        v = 1 - r ** 0.5
    elif mode == "linear":
        v = 1 - r
    elif mode == "square":
        v = 1 - r ** 2
    elif mode == "cosine":
        v = torch.cos(r * math.pi * 0.5)
    elif mode == "arccos":
        v = torch.arccos(r) / (math.pi * 0.5)
    else:
        raise ValueError(f"unknown official schedule {mode!r}; allowed: root, linear, square, cosine, arccos")
    sche = ((v / v.sum()) * n_tokens).round()
    sche[sche == 0] = 1
    sche[-1] += n_tokens - sche.sum()
    return [int(c) for c in sche.int().tolist()]


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

    @property
    def layout(self) -> str:
        """The valeoai network layout: ``"v1"`` (Maskgit-pytorch v1.0); v2 is :class:`MaskGITv2Config`."""
        return "v1"

    def to_dict(self) -> dict:
        return asdict(self)


class MultiheadSelfAttention(nn.Module):
    """Parameters named as ``nn.MultiheadAttention`` (packed ``in_proj``), computed with SDPA."""

    prefix_gate = None  # (prompt length, gates [heads]) while common.prefix_gates is active

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
        y = attend(q, k, v, dropout_p=self.dropout if self.training else 0.0, prefix_gate=self.prefix_gate)
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
    layout = "v1"

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

    def gated_attention(self) -> list[nn.Module]:
        """The attention module of every layer, in order (what ``common.prefix_gates`` gates)."""
        return [attn.fn.mha for attn, _ in self.transformer.layers]

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
        replace_class: bool = False,
        with_mask_logit: bool = False,
    ) -> torch.Tensor:
        """Logits [B, N, V] (``with_mask_logit``: [B, N, V + 1] with the MASK row, the official output) for every image position. ``tokens`` [B, h, w] or [B, N] with MASK = ``mask_id``;
        ``labels`` [B] (None or ``null_label`` = unconditional). ``prefix_embeds`` [B or 1, P, D] are prepended
        after the embedding stage; with ``replace_class`` the class token is dropped and the prefix takes its place
        (VPT-generative's prompts; ``labels`` are then ignored)."""
        B = tokens.shape[0]
        tok = tokens.reshape(B, -1)
        N = self.cfg.seq_len
        if tok.shape[1] != N:
            raise ValueError(f"expected {N} tokens per image (grid {self.cfg.grid}), got {tok.shape[1]}")
        if replace_class:
            if prefix_embeds is None:
                raise ValueError("replace_class needs prefix_embeds (they take the class token's place)")
            x = self.first_layer(self.tok_emb(tok) + self.pos_emb[:, :N])
        else:
            idx = torch.cat([tok, self.class_tokens(labels, B, tok.device)[:, None]], dim=1)
            x = self.first_layer(self.tok_emb(idx) + self.pos_emb)
        P = 0
        if prefix_embeds is not None:
            P = prefix_embeds.shape[1]
            x = torch.cat([prefix_embeds.to(x.dtype).expand(B, -1, -1), x], dim=1)
        x = self.last_layer(self.transformer(x))[:, P:P + N]
        V = self.cfg.vocab_size + (1 if with_mask_logit else 0)
        return x @ self.tok_emb.weight[:V].T + self.bias[:N, :V]

    def mask_tokens(
        self, tokens: torch.Tensor, *, generator: Optional[torch.Generator] = None, schedule: Schedule = "cosine"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """MaskGIT training corruption: per sample ceil(gamma(r) N) random positions -> MASK. Returns (masked, mask)."""
        B = tokens.shape[0]
        tok = tokens.reshape(B, -1)
        N = tok.shape[1]
        dev = tok.device
        # batch_rand: torch.rand, except under multi-process training (the global batch's draws, this rank's rows)
        r = batch_rand(B, generator=generator, device=dev)
        n_mask = torch.ceil(mask_schedule(r, schedule).clamp(1e-6, 1.0) * N).long().clamp(1, N)
        scores = batch_rand(B, N, generator=generator, device=dev)
        ranks = scores.argsort(dim=1).argsort(dim=1)
        mask = ranks < n_mask[:, None]
        return tok.masked_fill(mask, self.mask_id), mask

    def loss(
        self,
        tokens: torch.Tensor,
        labels: Optional[torch.Tensor] = None,
        *,
        prefix_embeds: Optional[torch.Tensor] = None,
        replace_class: bool = False,
        label_smoothing: float = 0.1,
        label_drop: float = 0.0,
        schedule: Schedule = "cosine",
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        B = tokens.shape[0]
        target = tokens.reshape(B, -1)
        if labels is not None and label_drop > 0:
            drop = batch_rand(B, generator=generator, device=target.device) < label_drop
            labels = labels.masked_fill(drop, self.null_label)
        masked, mask = self.mask_tokens(target, generator=generator, schedule=schedule)
        logits = self(masked, labels, prefix_embeds=prefix_embeds, replace_class=replace_class)
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
        uncond_prefix_embeds: Union[None, torch.Tensor, Sequence[torch.Tensor]] = None,
        replace_class: bool = False,
        sampler: Sampler = "genvpt",
    ) -> torch.Tensor:
        """Iterative parallel decoding -> token grids [B, h, w].

        ``prefix_embeds`` is one tensor [B or 1, P, D] or a sequence of ``steps`` tensors, one per decoding step
        (per-step prompts, e.g. the Marquee Header schedule). With ``replace_class`` the prefix replaces the class
        token (VPT's prompts) and guidance's unconditional branch uses ``uncond_prefix_embeds`` (a learned null
        prompt); without it both branches see ``prefix_embeds`` unless ``uncond_prefix_embeds`` is given.

        ``sampler``:

        * ``"genvpt"`` (default): the decoder described in the module docstring (re-mask ``floor(N gamma((t+1)/T))``,
          Gumbel factor ``1 - (t+1)/T``, ``cfg_schedule`` constant or ``cfg (t+1)/T``).
        * ``"official_v1"``: valeoai Maskgit-pytorch v1.0 ``MaskGIT.sample``. Step t of T reveals
          ``official_unmask_counts(T, N, schedule)[t]`` tokens (at most the still-masked ones); guidance weight
          ``cfg * t/(T-1)`` (always ramped; ``cfg_schedule`` is not used); probabilities over the V codes AND the
          MASK row (the official logits keep it); confidence ``log p(sampled) + choice_temperature * (1 - t/(T-1))
          * Gumbel``; the most confident still-masked tokens are revealed; a sampled MASK id is kept and clamped to
          V - 1 at the end, as the official decode does. Official ``sm_temp`` multiplies the logits: pass
          ``temperature = 1 / sm_temp`` (1 for the published numbers). Noise comes from ``generator`` (the
          official code draws from numpy's and torch's global generators), so draws match in law, not bit for bit.
          Settings of the published ImageNet-256 FID 6.80: ``schedule="arccos", steps=8, cfg=3,
          choice_temperature=4.5, temperature=1``.
        * ``"official_v1_2023"``: as ``official_v1`` with both ramps at ``t/T`` (the code before Nov 2023).
        """
        device = self.tok_emb.weight.device
        B = labels.shape[0] if labels is not None else int(batch_size or 1)
        N, V = self.cfg.seq_len, self.cfg.vocab_size
        if steps < 1:
            raise ValueError("steps must be >= 1")
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown MaskGIT sampler {sampler!r}; allowed: {', '.join(SAMPLERS)}")
        official = sampler != "genvpt"
        counts = official_unmask_counts(steps, N, schedule) if official else None
        if replace_class and prefix_embeds is None:
            raise ValueError("replace_class needs prefix_embeds")
        guided = cfg > 0 and (uncond_prefix_embeds is not None if replace_class else labels is not None)
        for name, pe_all in (("prefix_embeds", prefix_embeds), ("uncond_prefix_embeds", uncond_prefix_embeds)):
            if pe_all is not None and not torch.is_tensor(pe_all) and len(pe_all) != steps:
                raise ValueError(f"per-step {name} must hold {steps} tensors, got {len(pe_all)}")
        lab = labels.to(device) if labels is not None else None
        lab2 = torch.cat([lab, torch.full_like(lab, self.null_label)]) if guided and lab is not None else lab
        extra = {"with_mask_logit": True} if official else {}

        def predict(t: int, cur: torch.Tensor, w: float) -> torch.Tensor:
            pe = prefix_embeds if (prefix_embeds is None or torch.is_tensor(prefix_embeds)) else prefix_embeds[t]
            if pe is not None:
                pe = pe.expand(B, -1, -1)
            if not guided:
                return self(cur, lab, prefix_embeds=pe, replace_class=replace_class, **extra).float()
            ue = uncond_prefix_embeds
            ue = ue if (ue is None or torch.is_tensor(ue)) else ue[t]
            ue = pe if ue is None else ue.to(pe.dtype).expand(B, -1, -1) if pe is not None else ue.expand(B, -1, -1)
            pe2 = None if pe is None else torch.cat([pe, ue])
            logits = self(torch.cat([cur, cur]), lab2, prefix_embeds=pe2, replace_class=replace_class, **extra).float()
            c, u = logits.chunk(2)
            return (1 + w) * c - w * u

        def draw(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """(sampled ids, log-probability of each sampled id)."""
            if temperature == 0:
                sampled = logits.argmax(-1)
                return sampled, torch.log_softmax(logits, -1).gather(-1, sampled[..., None]).squeeze(-1)
            logits = filter_logits(logits / temperature, top_k, top_p)
            sampled = categorical(logits.softmax(-1), generator=generator)
            return sampled, torch.log_softmax(logits, -1).gather(-1, sampled[..., None]).squeeze(-1)

        cur = torch.full((B, N), self.mask_id, dtype=torch.long, device=device)
        if official:
            unknown = torch.ones(B, N, dtype=torch.bool, device=device)
            remaining = N
            denom = steps - 1 if sampler == "official_v1" else steps
            for t in range(steps):
                if remaining == 0:
                    break
                k = min(counts[t], remaining)
                ratio = t / denom
                sampled, logp = draw(predict(t, cur, cfg * ratio))
                conf = logp + choice_temperature * (1 - ratio) * gumbel_noise(logp, generator)
                conf = conf.masked_fill(~unknown, float("-inf"))
                chosen = torch.topk(conf, k, dim=1).indices
                cur = cur.scatter(1, chosen, sampled.gather(1, chosen))
                unknown = unknown.scatter(1, chosen, False)
                remaining -= k
            return cur.clamp(max=V - 1).view(B, self.cfg.grid, self.cfg.grid)

        for t in range(steps):
            w = cfg * (t + 1) / steps if cfg_schedule == "linear" else cfg
            sampled, logp = draw(predict(t, cur, w))
            unknown = cur == self.mask_id
            sampled = torch.where(unknown, sampled, cur)
            if t == steps - 1:
                cur = sampled
                break
            ratio = (t + 1) / steps
            n_unknown = int(unknown.sum(1).min().item())
            n_mask = int(math.floor(N * float(mask_schedule(torch.tensor(ratio), schedule))))
            n_mask = max(1, min(n_unknown - 1, n_mask))
            conf = torch.where(unknown, logp, torch.full_like(logp, float("inf")))
            conf = conf + choice_temperature * (1 - ratio) * gumbel_noise(conf, generator)
            lowest = torch.topk(conf, n_mask, dim=1, largest=False).indices
            cur = sampled.scatter(1, lowest, self.mask_id)
        return cur.view(B, self.cfg.grid, self.cfg.grid)
