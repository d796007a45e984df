"""Sequence orders for autoregressive models over a 2-D token grid (taming-transformers, Sec. "On the inherent
ordering of image data").

An order is an invertible permutation of the raster (row-major) positions of an ``h x w`` grid:

* ``forward_idx[s]`` is the raster index of the token at sequence position ``s``,
  so ``seq = raster[:, forward_idx]``;
* ``backward_idx = argsort(forward_idx)`` undoes it: ``raster = seq[:, backward_idx]``.

Orders (registry :data:`ORDERS`):

* ``row_major``  - top left to bottom right.
* ``alternate``  - row major, every other row right to left (boustrophedon).
* ``spiral_out`` - from the centre outwards: start at ``(h//2, (w-1)//2)``, then up 1, right 1, down 2, left 2,
  up 3, ... (cells outside the grid are skipped). On even square grids this is taming's ``SpiralOut``.
* ``spiral_in``  - ``spiral_out`` reversed (from the outer ring to the centre).
* ``z_curve``    - Morton order: sort by the interleaved bits of (row, col), row bit above column bit.
* ``subsample``  - coarse to fine: every prefix of length ``(h/2^k)*(w/2^k)`` is the grid subsampled with stride
  ``2^k``; the key is the Morton code of the bit-reversed coordinates (taming's ``Subsample`` on 2^n grids).
* ``random``     - a fixed permutation from ``numpy.random.RandomState(1)`` (taming's ``Random``).

Every order is defined for any ``h x w``; ``z_curve`` and ``subsample`` are exactly taming's on power-of-two grids.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

__all__ = ["ORDERS", "order_indices", "Order"]


def _row_major(h: int, w: int) -> list[int]:
    return list(range(h * w))


def _alternate(h: int, w: int) -> list[int]:
    idx = np.arange(h * w).reshape(h, w)
    idx[1::2] = idx[1::2, ::-1]
    return idx.ravel().tolist()


def _spiral_out(h: int, w: int) -> list[int]:
    i, j = h // 2, (w - 1) // 2
    out = [i * w + j]
    moves = ((-1, 0), (0, 1), (1, 0), (0, -1))  # up, right, down, left
    length, d = 1, 0
    while len(out) < h * w:
        for _ in range(2):  # each run length is used for two directions
            di, dj = moves[d % 4]
            for _ in range(length):
                i, j = i + di, j + dj
                if 0 <= i < h and 0 <= j < w:
                    out.append(i * w + j)
            d += 1
        length += 1
    return out


def _spiral_in(h: int, w: int) -> list[int]:
    return _spiral_out(h, w)[::-1]


def _bits(n: int) -> int:
    return max(1, int(n - 1).bit_length())


def _interleave(i: int, j: int, nbits: int) -> int:
    code = 0
    for b in range(nbits):
        code |= ((j >> b) & 1) << (2 * b)
        code |= ((i >> b) & 1) << (2 * b + 1)
    return code


def _z_curve(h: int, w: int) -> list[int]:
    nbits = _bits(max(h, w))
    keys = [_interleave(i, j, nbits) for i in range(h) for j in range(w)]
    return np.argsort(np.asarray(keys), kind="stable").tolist()


def _reverse_bits(x: int, nbits: int) -> int:
    out = 0
    for b in range(nbits):
        out |= ((x >> b) & 1) << (nbits - 1 - b)
    return out


def _subsample(h: int, w: int) -> list[int]:
    nbits = _bits(max(h, w))
    keys = [_interleave(_reverse_bits(i, nbits), _reverse_bits(j, nbits), nbits) for i in range(h) for j in range(w)]
    return np.argsort(np.asarray(keys), kind="stable").tolist()


def _random(h: int, w: int) -> list[int]:
    return np.random.RandomState(1).permutation(h * w).tolist()


ORDERS: dict[str, Callable[[int, int], list[int]]] = {
    "row_major": _row_major,
    "alternate": _alternate,
    "spiral_out": _spiral_out,
    "spiral_in": _spiral_in,
    "z_curve": _z_curve,
    "subsample": _subsample,
    "random": _random,
}


def order_indices(name: str, h: int, w: int | None = None) -> torch.Tensor:
    """``forward_idx`` (LongTensor [h*w]) of order ``name`` on an ``h x w`` grid (``w`` defaults to ``h``)."""
    w = h if w is None else w
    if name not in ORDERS:
        raise ValueError(f"unknown sequence order {name!r}; allowed: {', '.join(ORDERS)}")
    if h < 1 or w < 1:
        raise ValueError(f"grid must be at least 1x1, got {h}x{w}")
    idx = torch.tensor(ORDERS[name](h, w), dtype=torch.long)
    if idx.numel() != h * w or not torch.equal(idx.sort().values, torch.arange(h * w)):
        raise AssertionError(f"order {name!r} is not a permutation of a {h}x{w} grid")  # a bug, never user input
    return idx


class Order(nn.Module):
    """A sequence order as a module: ``to_sequence`` / ``to_raster`` permute dimension 1 of ``[B, h*w, ...]``.

    The index buffers are not saved in state dicts (they follow from name and grid, as in the model config).
    """

    def __init__(self, name: str, h: int, w: int | None = None):
        super().__init__()
        self.name, self.h, self.w = name, h, (h if w is None else w)
        fwd = order_indices(name, self.h, self.w)
        self.register_buffer("forward_idx", fwd, persistent=False)
        self.register_buffer("backward_idx", torch.argsort(fwd), persistent=False)

    def to_sequence(self, raster: torch.Tensor) -> torch.Tensor:
        """``[B, h*w, ...]`` in raster order -> the same in sequence order."""
        return raster[:, self.forward_idx]

    def to_raster(self, seq: torch.Tensor) -> torch.Tensor:
        """``[B, h*w, ...]`` in sequence order -> the same in raster order."""
        return seq[:, self.backward_idx]

    def extra_repr(self) -> str:
        return f"{self.name}, {self.h}x{self.w}"
