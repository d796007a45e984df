"""What the three generator families truly share: a pre-allocated KV cache, logit filtering and sampling.

The transformer blocks themselves differ between the families (their official checkpoints name and pack the
weights differently: taming's separate key/query/value, MaskGIT's packed ``in_proj``, VAR's ``mat_qkv`` with
q/v biases and AdaLN), so each family keeps its own block in its own file and calls :func:`attend` here.
"""
from __future__ import annotations

import contextlib
import functools
import math
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F

from ..training import resolve_device

__all__ = [
    "sampling",
    "KVCache",
    "compute_dtype",
    "attend",
    "gated_prefix_attend",
    "prefix_gates",
    "filter_logits",
    "sample_logits",
    "categorical",
    "gumbel_noise",
    "pick_device",
]


def _plain(x: Any) -> Any:
    if torch.is_tensor(x):
        return x.clone()
    if isinstance(x, (list, tuple)):
        return type(x)(_plain(v) for v in x)
    return x


def sampling(fn: Callable) -> Callable:
    """Run a sampler under ``torch.inference_mode()`` and hand back ordinary tensors (clones made outside it), so
    samples can be used as training targets or saved without "inference tensor" errors."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with torch.inference_mode():
            out = fn(*args, **kwargs)
        return _plain(out)

    return wrapper


class KVCache:
    """Keys and values of one attention layer, pre-allocated for ``max_len`` positions.

    ``update(k, v)`` writes ``[B, H, T, D]`` at position ``pos`` and returns the keys/values so far
    (``[B, H, pos + T, D]`` views of the buffers). The buffers are allocated at the first update, or up front with
    :meth:`allocate` - then their addresses never change, which is what a compiled or CUDA-graph-captured step needs
    (a "static" cache: every shape is fixed once the position is; VAR's sampler sets ``pos`` per scale).
    """

    def __init__(self, max_len: int):
        self.max_len = int(max_len)
        self.k: Optional[torch.Tensor] = None
        self.v: Optional[torch.Tensor] = None
        self.pos = 0

    @classmethod
    def allocate(cls, max_len: int, B: int, H: int, D: int, *, dtype: torch.dtype,
                 device: torch.device | str) -> "KVCache":
        """A cache whose buffers ``[B, H, max_len, D]`` exist from the start (zeros)."""
        c = cls(max_len)
        c.k = torch.zeros(B, H, c.max_len, D, dtype=dtype, device=device)
        c.v = torch.zeros(B, H, c.max_len, D, dtype=dtype, device=device)
        return c

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, H, T, D = k.shape
        if self.k is None:
            self.k = k.new_empty(B, H, self.max_len, D)
            self.v = v.new_empty(B, H, self.max_len, v.shape[-1])
        if self.pos + T > self.max_len:
            raise RuntimeError(f"KV cache full: {self.pos} + {T} > {self.max_len} positions")
        end = self.pos + T
        self.k[:, :, self.pos:end] = k
        self.v[:, :, self.pos:end] = v
        self.pos = end
        return self.k[:, :, :end], self.v[:, :, :end]


def compute_dtype(device: torch.device, default: torch.dtype) -> torch.dtype:
    """The dtype activations take on ``device`` now: autocast's when it is on there, else ``default``."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return default


# On CPU, torch's fused SDPA kernels are slow to train the short sequences of the embedded models (the flash
# kernel's backward took 40% of a VAR training step): when a gradient is recorded, up to this many attention-matrix
# entries (B*H*Tq*Tk) the explicit softmax(q k^T) v is used there, 1.5x faster per training step under bf16
# autocast. Without a gradient (every sampler, evaluation) SDPA is faster: VAR-d16 sampling at batch 2 spent 6.7 s
# in the explicit product against 1.8 s in SDPA (issue #16; benchmarks/var_speed.py measures both). GPUs always
# take SDPA.
MATH_ATTENTION_MAX_ENTRIES = 1 << 24


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    attn_mask: Optional[torch.Tensor] = None,
    causal: bool = False,
    dropout_p: float = 0.0,
    scale: Optional[float] = None,
    prefix_gate: Optional[tuple[int, torch.Tensor]] = None,
) -> torch.Tensor:
    """Scaled dot-product attention on ``[B, H, T, D]`` (torch SDPA, or the explicit product on CPU for short
    sequences; see ``MATH_ATTENTION_MAX_ENTRIES``). ``attn_mask``: boolean (True = attend) or additive float.

    ``causal`` with a query chunk shorter than the keys (cached decoding) aligns the chunk to the END of the keys.
    ``prefix_gate`` (prompt length, gates [H]), as :func:`prefix_gates` sets it on an attention module: the first
    keys are a gated prompt (:func:`gated_prefix_attend`).
    """
    if prefix_gate is not None:
        return gated_prefix_attend(q, k, v, prefix_len=prefix_gate[0], gate=prefix_gate[1], attn_mask=attn_mask,
                                   causal=causal, dropout_p=dropout_p, scale=scale)
    Tq, Tk = q.shape[-2], k.shape[-2]
    explicit = _use_math(q, k, dropout_p)
    if causal and (Tq != Tk or explicit):
        if Tq == 1:
            causal = False  # one new query sees every cached key
        else:
            offset = Tk - Tq
            rows = torch.arange(Tq, device=q.device)[:, None] + offset
            cols = torch.arange(Tk, device=q.device)[None, :]
            attn_mask = (cols <= rows) if attn_mask is None else attn_mask & (cols <= rows)
            causal = False
    if explicit:
        a = (q @ k.transpose(-1, -2)) * (scale if scale is not None else q.shape[-1] ** -0.5)
        if attn_mask is not None:
            a = a.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else a + attn_mask
        return a.softmax(dim=-1).to(v.dtype) @ v
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=causal, scale=scale)


def gated_prefix_attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    prefix_len: int,
    gate: torch.Tensor,
    attn_mask: Optional[torch.Tensor] = None,
    causal: bool = False,
    dropout_p: float = 0.0,
    scale: Optional[float] = None,
) -> torch.Tensor:
    """Attention with a zero-initialisable gate on the first ``prefix_len`` keys (the prompt tokens), in the manner of
    LLaMA-Adapter's zero-init attention: a non-prompt query attends to the non-prompt keys exactly as the frozen
    network does (``attn_mask`` / ``causal`` restricted to them), and adds ``tanh(gate[h])`` times its separate
    softmax attention over the prompt keys. A prompt query attends to the prompt keys only. At ``gate == 0`` every
    non-prompt token's output is the frozen network's without the prompt, while the gate's gradient is not zero: a
    prompt method starts at the frozen model and learns how much to let the prompt in.

    ``q`` [B, H, Tq, D] are the last Tq positions of the keys [B, H, Tk, D] (a cached step); their rows may start
    with the whole prompt (a full pass, or a cache's prefill) or hold none of it. ``gate`` [H]. ``attn_mask``
    (boolean or additive) must cover [Tq, Tk]; every non-prompt query sees every prompt key.
    """
    P = int(prefix_len)
    Tq, Tk = q.shape[-2], k.shape[-2]
    if not 0 < P <= Tk:
        raise ValueError(f"prefix_len {P} must lie in [1, {Tk}] (the keys)")
    n_pq = max(0, P - (Tk - Tq))  # leading query rows that are prompt tokens
    if n_pq not in (0, P):
        raise ValueError(f"a query chunk of {Tq} rows starts inside the {P}-token prompt")
    if attn_mask is not None and tuple(attn_mask.shape[-2:]) != (Tq, Tk):
        raise ValueError(f"attn_mask covers {tuple(attn_mask.shape[-2:])}, the attention is {(Tq, Tk)}")

    def part(m: Optional[torch.Tensor], rows: slice, cols: slice) -> Optional[torch.Tensor]:
        return None if m is None else m[..., rows, cols]

    kp, vp, ks, vs = k[..., :P, :], v[..., :P, :], k[..., P:, :], v[..., P:, :]
    outs = []
    if n_pq:
        outs.append(attend(q[..., :P, :], kp, vp, attn_mask=part(attn_mask, slice(0, P), slice(0, P)),
                           causal=causal, dropout_p=dropout_p, scale=scale))
    if Tq > n_pq:
        qs = q[..., n_pq:, :]
        own = attend(qs, ks, vs, attn_mask=part(attn_mask, slice(n_pq, Tq), slice(P, Tk)), causal=causal,
                     dropout_p=dropout_p, scale=scale)
        prompt = attend(qs, kp, vp, dropout_p=dropout_p, scale=scale)
        outs.append(own + torch.tanh(gate).to(own.dtype).view(1, -1, 1, 1) * prompt)
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=-2)


@contextlib.contextmanager
def prefix_gates(modules: Sequence[Any], prefix_len: int, gates: torch.Tensor) -> Iterator[None]:
    """Within the block, each attention module of ``modules`` (one per layer, in order; each passes its
    ``prefix_gate`` attribute, None outside the block, to :func:`attend`) gates the first ``prefix_len`` keys with its row of ``gates`` [layers, heads]
    (:func:`gated_prefix_attend`)."""
    if gates.dim() != 2 or gates.shape[0] != len(modules):
        raise ValueError(f"prefix gates of shape {tuple(gates.shape)}: expected [{len(modules)} layers, heads]")
    for m, g in zip(modules, gates):
        m.prefix_gate = (int(prefix_len), g)
    try:
        yield
    finally:
        for m in modules:
            m.prefix_gate = None


def _use_math(q: torch.Tensor, k: torch.Tensor, dropout_p: float) -> bool:
    return (q.device.type == "cpu" and dropout_p == 0.0 and torch.is_grad_enabled()
            and q.shape[:-2].numel() * q.shape[-2] * k.shape[-2] <= MATH_ATTENTION_MAX_ENTRIES)


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """Keep the ``top_k`` largest logits and the smallest set whose probability reaches ``top_p``; others -> -inf.

    ``top_k <= 0`` and ``top_p <= 0`` (or >= 1) switch a filter off. Works on ``[..., V]``; returns a new tensor.
    """
    V = logits.shape[-1]
    out = logits
    if top_k and 0 < top_k < V:
        kth = torch.topk(out, top_k, dim=-1).values[..., -1:]
        out = out.masked_fill(out < kth, float("-inf"))
    if top_p and 0.0 < top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(out, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the tokens ranked above it already reach top_p (the top token always stays)
        remove_sorted = (probs.cumsum(dim=-1) - probs) >= top_p
        remove = torch.zeros_like(remove_sorted).scatter(-1, sorted_idx, remove_sorted)
        out = out.masked_fill(remove, float("-inf"))
    return out


def sample_logits(
    logits: torch.Tensor,
    *,
    generator: Optional[torch.Generator] = None,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 0.0,
) -> torch.Tensor:
    """Draw one index per row of ``[..., V]`` logits; ``temperature == 0`` is greedy (argmax)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits.float() / temperature, top_k, top_p)
    return categorical(logits.softmax(dim=-1), generator=generator)


def categorical(probs: torch.Tensor, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One draw per row of ``[..., V]`` probabilities by inverse-CDF search: one uniform per row, a cumulative sum
    and a binary search (several times faster than ``torch.multinomial`` on CPU for large V). Zero-probability
    entries are never drawn."""
    flat = probs.reshape(-1, probs.shape[-1])
    cdf = flat.cumsum(dim=-1)
    u = torch.rand(flat.shape[0], 1, generator=generator, device=flat.device, dtype=cdf.dtype) * cdf[:, -1:]
    idx = torch.searchsorted(cdf, u, right=True).clamp_max_(flat.shape[-1] - 1)
    return idx.view(probs.shape[:-1])


def gumbel_noise(like: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Standard Gumbel noise shaped like ``like`` (float32), drawn from ``generator``."""
    u = torch.rand(like.shape, generator=generator, device=like.device, dtype=torch.float32)
    return -torch.log(-torch.log(u.clamp_(1e-20, 1.0)).clamp_(min=1e-20))


def pick_device(name: str = "auto") -> torch.device:
    """The generators' device from ``generator.device`` (see :func:`genvpt.training.resolve_device`)."""
    return resolve_device(name, "generator.device")


def trunc_normal_(t: torch.Tensor, std: float) -> torch.Tensor:
    return torch.nn.init.trunc_normal_(t, mean=0.0, std=std, a=-2 * std, b=2 * std)


def cosine_mask_rate(r: torch.Tensor) -> torch.Tensor:
    """MaskGIT's cosine schedule gamma(r) = cos(pi r / 2): the fraction of tokens masked at progress r in [0, 1]."""
    return torch.cos(r * (math.pi / 2))
