"""Autoregressive GPT over VQ tokens with taming-transformers' minGPT layout.

State-dict layout (taming ``GPT``; a taming ``Net2NetTransformer`` checkpoint holds it under ``transformer.``)::

    tok_emb.weight [rows, C]            pos_emb [1, block_size, C]
    blocks.N.ln1.{weight,bias}          blocks.N.attn.{key,query,value,proj}.{weight,bias}
    blocks.N.attn.mask [1,1,block_size,block_size] (buffer)
    blocks.N.ln2.{weight,bias}          blocks.N.mlp.0.{weight,bias}  blocks.N.mlp.2.{weight,bias}
    ln_f.{weight,bias}                  head.weight [head_rows, C]  (no bias)

Sequence: ``[prefix embeddings (optional, no position embedding)] + [start token] + z_0 .. z_{N-2}`` where the
start token is the class token (class-conditional) or the SOS token (unconditional), and ``z`` are the image
tokens permuted into the configured order (``orders.py``). Position embeddings cover the start token and image
tokens only, so prepended prompts never shift the positions a frozen model learned.

Two token layouts:

* ``separate`` (our models): rows ``[0, V)`` are image codes, ``V + c`` is class ``c``, ``V + num_classes`` is the
  null class (classifier-free guidance, unconditional sampling) or SOS when ``num_classes == 0``; the head predicts
  the ``V`` image codes only.
* ``taming``: one table of ``vocab_size`` rows shared by codes and classes (taming's ``Labelator`` passes the raw
  class index; ``SOSProvider`` uses token 0), head of ``vocab_size`` rows, as in the official cIN checkpoints.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .common import KVCache, attend, sample_logits, sampling
from .orders import Order

log = logging.getLogger(__name__)

__all__ = ["ARConfig", "GPT", "CausalSelfAttention", "Block"]


@dataclass
class ARConfig:
    vocab_size: int = 1024           # image codebook size V
    grid: int = 16                   # tokens per side (h = w = grid)
    num_classes: int = 1000          # 0 = unconditional
    n_layer: int = 24
    n_head: int = 16
    n_embd: int = 1536
    embd_pdrop: float = 0.0
    resid_pdrop: float = 0.0
    attn_pdrop: float = 0.0
    order: str = "row_major"
    token_layout: Literal["separate", "taming"] = "separate"
    block_size: Optional[int] = None  # positions in pos_emb; default grid*grid (taming cIN: 256)

    @property
    def seq_len(self) -> int:
        return self.grid * self.grid

    @property
    def positions(self) -> int:
        return self.block_size or self.seq_len

    @property
    def emb_rows(self) -> int:
        if self.token_layout == "taming":
            return self.vocab_size
        return self.vocab_size + self.num_classes + 1

    @property
    def head_rows(self) -> int:
        return self.vocab_size

    def to_dict(self) -> dict:
        return asdict(self)


class CausalSelfAttention(nn.Module):
    prefix_gate = None  # (prompt length, gates [heads]) while common.prefix_gates is active

    def __init__(self, cfg: ARConfig):
        super().__init__()
        C = cfg.n_embd
        if C % cfg.n_head:
            raise ValueError(f"n_embd {C} is not divisible by n_head {cfg.n_head}")
        self.key = nn.Linear(C, C)
        self.query = nn.Linear(C, C)
        self.value = nn.Linear(C, C)
        self.attn_drop = cfg.attn_pdrop
        self.resid_drop = nn.Dropout(cfg.resid_pdrop)
        self.proj = nn.Linear(C, C)
        # taming keeps its causal mask as a (saved) buffer; we keep it for the checkpoint layout and use SDPA's
        # causal mode, which also covers prepended prompts beyond block_size.
        n = cfg.positions
        self.register_buffer("mask", torch.tril(torch.ones(n, n)).view(1, 1, n, n))
        self.n_head = cfg.n_head

    def forward(self, x: torch.Tensor, cache: Optional[KVCache] = None) -> torch.Tensor:
        B, T, C = x.shape
        h = self.n_head
        q = self.query(x).view(B, T, h, C // h).transpose(1, 2)
        k = self.key(x).view(B, T, h, C // h).transpose(1, 2)
        v = self.value(x).view(B, T, h, C // h).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(k, v)
        y = attend(q, k, v, causal=True, dropout_p=self.attn_drop if self.training else 0.0,
                   prefix_gate=self.prefix_gate)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_drop(self.proj(y))


class Block(nn.Module):
    def __init__(self, cfg: ARConfig):
        super().__init__()
        C = cfg.n_embd
        self.ln1 = nn.LayerNorm(C)
        self.ln2 = nn.LayerNorm(C)
        self.attn = CausalSelfAttention(cfg)
        self.mlp = nn.Sequential(nn.Linear(C, 4 * C), nn.GELU(), nn.Linear(4 * C, C), nn.Dropout(cfg.resid_pdrop))

    def forward(self, x: torch.Tensor, cache: Optional[KVCache] = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Class-conditional (or unconditional) GPT over a token grid in a chosen sequence order."""

    family = "ar"

    def __init__(self, cfg: ARConfig):
        super().__init__()
        if cfg.token_layout == "taming" and cfg.num_classes > cfg.vocab_size:
            raise ValueError("token_layout 'taming' needs num_classes <= vocab_size (classes share the code table)")
        if cfg.positions < cfg.seq_len:
            raise ValueError(f"block_size {cfg.positions} < {cfg.seq_len} tokens")
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.emb_rows, cfg.n_embd)
        self.pos_emb = nn.Parameter(torch.zeros(1, cfg.positions, cfg.n_embd))
        self.drop = nn.Dropout(cfg.embd_pdrop)
        self.blocks = nn.Sequential(*[Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.head_rows, bias=False)
        self.order = Order(cfg.order, cfg.grid)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------ tokens
    @property
    def null_label(self) -> int:
        """The label that means "no class" (CFG's unconditional branch); -1 for the taming layout."""
        return self.cfg.num_classes if self.cfg.token_layout == "separate" else -1

    def start_tokens(self, labels: Optional[torch.Tensor], batch: int, device) -> torch.Tensor:
        """Start-token ids [B]: the class token, or the null/SOS token for ``labels is None`` / ``label == null``."""
        cfg = self.cfg
        if cfg.token_layout == "taming":
            if labels is None or cfg.num_classes == 0:
                return torch.zeros(batch, dtype=torch.long, device=device)  # SOSProvider(sos_token=0)
            if (labels < 0).any():
                raise ValueError("the taming token layout has no null class (no classifier-free guidance)")
            return labels.to(device)
        null = cfg.vocab_size + cfg.num_classes
        if labels is None or cfg.num_classes == 0:
            return torch.full((batch,), null, dtype=torch.long, device=device)
        if (labels < 0).any() or (labels > cfg.num_classes).any():
            raise ValueError(f"labels must lie in [0, {cfg.num_classes}] ({cfg.num_classes} = null class)")
        return labels.to(device) + cfg.vocab_size

    def _embed(self, idx: torch.Tensor, start_pos: int) -> torch.Tensor:
        T = idx.shape[1]
        return self.tok_emb(idx) + self.pos_emb[:, start_pos:start_pos + T]

    def gated_attention(self) -> list[nn.Module]:
        """The attention module of every block, in order (what ``common.prefix_gates`` gates)."""
        return [blk.attn for blk in self.blocks]

    def _run(self, x: torch.Tensor, caches: Optional[list[KVCache]] = None) -> torch.Tensor:
        for i, blk in enumerate(self.blocks):
            x = blk(x, None if caches is None else caches[i])
        return x

    # ------------------------------------------------------------------ training
    def forward(
        self,
        tokens: torch.Tensor,
        labels: Optional[torch.Tensor] = None,
        *,
        prefix_embeds: Optional[torch.Tensor] = None,
        replace_start: bool = False,
        label_smoothing: float = 0.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced pass. ``tokens`` [B, h, w] or [B, h*w] in raster order; ``labels`` [B] (or None).

        ``prefix_embeds`` [B or 1, P, C] are prepended (no position embedding). With ``replace_start`` they take the
        start (class) token's slot, as VPT-generative's prompts do: the last prefix token predicts the first image
        token, and ``labels`` are ignored.

        Returns ``(logits [B, N, V] in sequence order, mean next-token cross-entropy)``.
        """
        B = tokens.shape[0]
        raster = tokens.reshape(B, -1)
        if raster.shape[1] != self.cfg.seq_len:
            raise ValueError(f"expected {self.cfg.seq_len} tokens per image (grid {self.cfg.grid}), got {raster.shape[1]}")
        seq = self.order.to_sequence(raster)
        if replace_start:
            if prefix_embeds is None or prefix_embeds.shape[1] < 1:
                raise ValueError("replace_start needs at least one prefix embedding (it takes the start token's slot)")
            x = self._embed(seq[:, :-1], 1)
        else:
            start = self.start_tokens(labels, B, tokens.device)
            x = self._embed(torch.cat([start[:, None], seq[:, :-1]], dim=1), 0)
        P = 0
        if prefix_embeds is not None:
            P = prefix_embeds.shape[1]
            x = torch.cat([prefix_embeds.to(x.dtype).expand(B, -1, -1), x], dim=1)
        x = self.drop(x)
        x = self.ln_f(self._run(x))
        first = P - 1 if replace_start else P
        logits = self.head(x[:, first:first + self.cfg.seq_len])[..., : self.cfg.vocab_size]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), seq.reshape(-1), label_smoothing=label_smoothing)
        return logits, loss

    # ------------------------------------------------------------------ sampling
    @sampling
    def sample(
        self,
        labels: Optional[torch.Tensor],
        *,
        generator: Optional[torch.Generator] = None,
        batch_size: Optional[int] = None,
        temperature: float = 1.0,
        top_k: int = 100,
        top_p: float = 0.0,
        cfg: float = 0.0,
        prefix_embeds: Optional[torch.Tensor] = None,
        uncond_prefix_embeds: Optional[torch.Tensor] = None,
        replace_start: bool = False,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Sample token grids [B, h, w] (raster order). ``cfg > 0`` mixes logits as (1+cfg)*cond - cfg*uncond.

        ``prefix_embeds`` [B or 1, P, C] are prepended; with ``replace_start`` they replace the start token (VPT's
        prompts) and guidance's unconditional branch uses ``uncond_prefix_embeds`` (a learned null prompt), else the
        null class. Without ``replace_start`` both branches see ``prefix_embeds`` unless ``uncond_prefix_embeds``
        is given."""
        device = self.pos_emb.device
        if replace_start and prefix_embeds is None:
            raise ValueError("replace_start needs prefix_embeds")
        B = labels.shape[0] if labels is not None else (prefix_embeds.shape[0] if replace_start and prefix_embeds.shape[0] > 1 else int(batch_size or 1))
        N = self.cfg.seq_len
        if replace_start:
            guided = cfg > 0 and uncond_prefix_embeds is not None
        else:
            guided = cfg > 0 and labels is not None and self.cfg.num_classes > 0
            if guided and self.cfg.token_layout == "taming":
                raise ValueError("classifier-free guidance needs the 'separate' token layout (a null class)")
        prefix = None
        if prefix_embeds is not None:
            prefix = prefix_embeds.to(self.pos_emb.dtype).expand(B, -1, -1)
            if guided:
                un = prefix if uncond_prefix_embeds is None else uncond_prefix_embeds.to(prefix.dtype).expand(B, -1, -1)
                prefix = torch.cat([prefix, un])
        P = 0 if prefix is None else prefix.shape[1]

        def pick(logits_last: torch.Tensor) -> torch.Tensor:
            logits_last = logits_last[..., : self.cfg.vocab_size].float()
            if guided:
                c, u = logits_last.chunk(2)
                logits_last = (1 + cfg) * c - cfg * u
            return sample_logits(logits_last, generator=generator, temperature=temperature, top_k=top_k, top_p=top_p)

        out = torch.empty(B, N, dtype=torch.long, device=device)
        if replace_start:
            x = prefix
        else:
            start = self.start_tokens(labels, B, device)
            if guided:
                start = torch.cat([start, self.start_tokens(None, B, device)])
            first = self._embed(start[:, None], 0)
            x = first if prefix is None else torch.cat([prefix, first], dim=1)
        if use_cache:
            caches = [KVCache(x.shape[1] + N) for _ in self.blocks]
            h = self.ln_f(self._run(x, caches))
            for t in range(N):
                nxt = pick(self.head(h[:, -1]))
                out[:, t] = nxt
                if t == N - 1:
                    break
                nxt2 = torch.cat([nxt, nxt]) if guided else nxt
                h = self.ln_f(self._run(self._embed(nxt2[:, None], t + 1), caches))
        else:
            for t in range(N):
                h = self.ln_f(self._run(x))
                nxt = pick(self.head(h[:, -1]))
                out[:, t] = nxt
                if t == N - 1:
                    break
                nxt2 = torch.cat([nxt, nxt]) if guided else nxt
                x = torch.cat([x, self._embed(nxt2[:, None], t + 1)], dim=1)
        return self.order.to_raster(out).view(B, self.cfg.grid, self.cfg.grid)
