"""Where MVP's prompt tokens sit on each scale's token map (paper section 3.2.1 and the Table 5 variants).

Coordinates: a scale of side S is an S x S map flattened row-major (index ``y * S + x``), as VAR flattens its token
maps. Frame (ring) ``n`` holds the tokens whose distance to the border is n: ``min(y, x, S-1-y, S-1-x) == n``;
frame 0 is the outermost ring with 4S-4 tokens (1 token when S = 1).

**Outermost (MVP).** Each scale gets its outermost ring. Above the threshold ``tau`` (the most tokens one scale may
hold) the ring becomes four L-shapes: every corner token plus ``a`` tokens along each of its two edges,
``a = floor((tau - 4) / 8)``, so the scale holds ``8a + 4`` tokens. With VAR-256's scales and tau = 20 that is
4, 8, 12, 16, 20, 20, 20, 20, 20 tokens on scales 2..10; with the embedded default's 32 px scales (1,2,3,4,6,8) it is
4, 8, 12, 20, 20 on scales 2..6.

**Equal-budget variants (Table 5).** Each variant places exactly the outermost budget of that scale:

* ``random``: uniformly random positions, drawn from ``numpy.random.default_rng([seed, scale index])``;
* ``innermost``: frames from the centre outward until the budget is filled;
* ``center_to_outer``: concentric frames from the centre, skipping every other frame (N, N-2, N-4, ...); if the
  budget is still not filled, the skipped frames follow, again from the centre outward (the paper is silent on this
  case; it only arises when the alternate frames hold fewer tokens than the outermost budget);
* ``sub_outermost``: frame 1 first, then frame 0 (outward) if the budget is not yet filled; maps of side <= 2 have
  no frame 1 and fall back to frame 0.

When a variant uses only part of a frame, it takes that frame's tokens nearest to the frame's corners first (among
equally near tokens: the one clockwise of each corner in turn, then the one anticlockwise, so a partial frame is
symmetric under rotation). Applied to the outermost frame this rule *is* the paper's L-shapes
(corners, then the ``a`` tokens along each edge), so all variants share one definition of a partial frame.

**First scale.** The 1x1 first scale holds the start token (class embedding + position). Class-to-image MVP leaves
it unprompted (Table 6); ``first_scale=True`` adds one prompt token there (text-to-image).
"""
from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import torch

__all__ = [
    "VARIANTS",
    "Variant",
    "frame_index",
    "frame_tokens",
    "frame_budget",
    "l_shape_arm",
    "outermost_positions",
    "corner_first",
    "scale_positions",
    "prompt_positions",
    "positions_grid",
    "describe_positions",
]

Variant = Literal["outermost", "random", "innermost", "center_to_outer", "sub_outermost"]
VARIANTS: tuple[str, ...] = ("outermost", "random", "innermost", "center_to_outer", "sub_outermost")


def _check_side(S: int) -> None:
    if int(S) != S or S < 1:
        raise ValueError(f"a scale's side must be a positive integer, got {S!r}")


def _check_tau(tau: int) -> None:
    if int(tau) != tau or tau < 4:
        raise ValueError(f"tau (the most prompt tokens one scale may hold) must be an integer >= 4, got {tau!r}")


def frame_index(S: int) -> np.ndarray:
    """[S, S] array: the frame (ring) of every token, 0 = outermost."""
    _check_side(S)
    r = np.arange(S)
    d = np.minimum(r, S - 1 - r)
    return np.minimum(d[:, None], d[None, :])


def frame_tokens(S: int, n: int) -> list[int]:
    """Flat indices of frame ``n`` in clockwise order from its top-left corner (top row, right column, bottom row
    backwards, left column upwards)."""
    _check_side(S)
    s = S - 2 * n  # side of frame n
    if n < 0 or s < 1:
        raise ValueError(f"an {S}x{S} map has frames 0..{(S - 1) // 2}, not {n}")
    lo, hi = n, S - 1 - n
    if s == 1:
        return [lo * S + lo]
    out = [lo * S + x for x in range(lo, hi + 1)]  # top row, left to right
    out += [y * S + hi for y in range(lo + 1, hi + 1)]  # right column, downwards
    out += [hi * S + x for x in range(hi - 1, lo - 1, -1)]  # bottom row, right to left
    out += [y * S + lo for y in range(hi - 1, lo, -1)]  # left column, upwards
    return out


def frame_budget(S: int, tau: int) -> int:
    """Prompt tokens MVP puts on an S x S scale: 4S-4 (1 at S = 1), or 8a+4 when 4S-4 exceeds tau."""
    _check_side(S)
    _check_tau(tau)
    ring = 1 if S == 1 else 4 * S - 4
    return ring if ring <= tau else 8 * l_shape_arm(tau) + 4


def l_shape_arm(tau: int) -> int:
    """a = floor((tau - 4) / 8): tokens each L-shape adds along each edge beyond its corner."""
    _check_tau(tau)
    return (tau - 4) // 8


def outermost_positions(S: int, tau: int) -> list[int]:
    """MVP's positions on one scale, straight from the paper's definition (sorted flat indices)."""
    _check_side(S)
    ring = 1 if S == 1 else 4 * S - 4
    if ring <= tau:
        return sorted(frame_tokens(S, 0))
    a = l_shape_arm(tau)
    e = S - 1
    pts = {(0, 0), (0, e), (e, 0), (e, e)}
    for i in range(1, a + 1):
        pts |= {(0, i), (i, 0), (0, e - i), (i, e), (e, i), (e - i, 0), (e, e - i), (e - i, e)}
    return sorted(y * S + x for y, x in pts)


def corner_first(S: int, n: int) -> list[int]:
    """Frame ``n``'s tokens, nearest to the frame's corners first (distance along the frame; ties clockwise)."""
    toks = frame_tokens(S, n)
    m = len(toks)
    if m <= 4:
        return toks
    side = S - 2 * n
    corners = [0, side - 1, 2 * (side - 1), 3 * (side - 1)]

    def key(p: int) -> tuple[int, int, int]:
        # signed offset from each corner along the frame (clockwise positive); the nearest corner wins, a token
        # midway between two corners belongs to the one it follows clockwise
        best = None
        for ci, c in enumerate(corners):
            d = (p - c) % m
            off = d if d <= m // 2 else d - m
            k = (abs(off), 0 if off >= 0 else 1, ci)
            best = k if best is None or k < best else best
        return best  # (distance, clockwise/anticlockwise, corner): rotation-symmetric partial frames

    order = sorted(range(m), key=key)
    return [toks[p] for p in order]


def _fill(S: int, frames: Sequence[int], budget: int) -> list[int]:
    out: list[int] = []
    for n in frames:
        if len(out) >= budget:
            break
        out += corner_first(S, n)[: budget - len(out)]
    if len(out) != budget:  # cannot happen for budgets <= S*S with every frame listed
        raise RuntimeError(f"could not place {budget} tokens on a {S}x{S} map from frames {list(frames)}")
    return sorted(out)


def scale_positions(S: int, tau: int, variant: str = "outermost", *, seed: int = 0, scale_index: int = 0) -> torch.Tensor:
    """Sorted flat positions (LongTensor) of one S x S scale for ``variant``; every variant holds the same number of
    tokens as the outermost variant (:func:`frame_budget`)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown position variant {variant!r}; allowed: {', '.join(VARIANTS)}")
    budget = frame_budget(S, tau)
    last = (S - 1) // 2  # the innermost frame
    if variant == "outermost":
        pos = outermost_positions(S, tau)
    elif variant == "random":
        rng = np.random.default_rng([int(seed), int(scale_index)])
        pos = sorted(int(p) for p in rng.choice(S * S, size=budget, replace=False))
    elif variant == "innermost":
        pos = _fill(S, range(last, -1, -1), budget)
    elif variant == "center_to_outer":
        alternate = list(range(last, -1, -2))
        skipped = [n for n in range(last, -1, -1) if n not in alternate]
        pos = _fill(S, alternate + skipped, budget)
    else:  # sub_outermost
        pos = _fill(S, [1, 0] if last >= 1 else [0], budget)
    return torch.tensor(pos, dtype=torch.long)


def prompt_positions(
    patch_nums: Sequence[int], tau: int, variant: str = "outermost", *, first_scale: bool = False, seed: int = 0
) -> list[torch.Tensor]:
    """Positions for every scale of ``patch_nums``: a list of sorted LongTensors (empty for an unprompted scale).

    The first scale (the 1x1 start token) is prompted only when ``first_scale``."""
    _check_tau(tau)
    out = []
    for si, S in enumerate(patch_nums):
        if si == 0 and not first_scale:
            out.append(torch.zeros(0, dtype=torch.long))
        else:
            out.append(scale_positions(int(S), tau, variant, seed=seed, scale_index=si))
    return out


def positions_grid(S: int, positions: torch.Tensor | Sequence[int]) -> np.ndarray:
    """[S, S] uint8 mask with 1 at the prompted tokens (for tests, figures and the report)."""
    grid = np.zeros(S * S, dtype=np.uint8)
    grid[np.asarray(list(map(int, positions)), dtype=np.int64)] = 1
    return grid.reshape(S, S)


def describe_positions(patch_nums: Sequence[int], positions: Sequence[torch.Tensor]) -> str:
    """Text drawing of every scale's mask ('#' prompted, '.' not), for logs and docs."""
    blocks = []
    for S, pos in zip(patch_nums, positions):
        g = positions_grid(int(S), pos)
        rows = ["".join("#" if v else "." for v in row) for row in g]
        blocks.append(f"{S}x{S} ({len(pos)} tokens)\n" + "\n".join(rows))
    return "\n\n".join(blocks)
