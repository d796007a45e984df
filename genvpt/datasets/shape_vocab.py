"""The ``shapes`` dataset's vocabulary: class, colour, position and size names, and which colour pairs read.

Plain Python (no numpy / PIL), so the params models (``genvpt/datasets/params.py``) validate names against it
without importing the renderer; ``genvpt/datasets/shapes.py`` draws with the same tables.
"""
from __future__ import annotations

import math
from typing import Sequence

__all__ = ["SHAPE_CLASSES", "NEW_SHAPE_CLASSES", "ALL_SHAPE_CLASSES", "COLOURS", "POSITIONS", "SIZES", "TEXTURES", "colour_pairs", "far", "secondary"]

# The procedurally generated dataset's classes (genvpt/datasets/shapes.py draws each of them).
SHAPE_CLASSES = (
    "circle",
    "square",
    "triangle",
    "star",
    "pentagon",
    "hexagon",
    "cross",
    "diamond",
    "heart",
    "crescent",
    "arrow",
    "ring",
)
# Shapes the source domain never has (``classes: null`` means SHAPE_CLASSES only): a ``classes`` list may name them,
# for columns of classes the source-trained models never saw (classify.datasets.held-out-classes).
NEW_SHAPE_CLASSES = (
    "trapezoid",
    "parallelogram",
    "semicircle",
    "hourglass",
    "ell",
    "tee",
)
ALL_SHAPE_CLASSES = SHAPE_CLASSES + NEW_SHAPE_CLASSES
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 220, 40),
    "orange": (245, 140, 30),
    "purple": (140, 60, 190),
    "pink": (240, 130, 190),
    "cyan": (40, 200, 220),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
    "brown": (130, 80, 40),
}
# (name, phrase, centre as a fraction of the canvas)
POSITIONS: dict[str, tuple[str, tuple[float, float]]] = {
    "upper left": ("in the upper left", (0.27, 0.27)),
    "top": ("at the top", (0.5, 0.27)),
    "upper right": ("in the upper right", (0.73, 0.27)),
    "left": ("on the left", (0.27, 0.5)),
    "center": ("in the center", (0.5, 0.5)),
    "right": ("on the right", (0.73, 0.5)),
    "lower left": ("in the lower left", (0.27, 0.73)),
    "bottom": ("at the bottom", (0.5, 0.73)),
    "lower right": ("in the lower right", (0.73, 0.73)),
}
SIZES: dict[str, float] = {"small": 0.14, "medium": 0.19, "large": 0.25}  # radius / canvas side
TEXTURES = ("striped", "dotted", "checkered", "gradient")


def far(c1: tuple[int, int, int], c2: tuple[int, int, int], min_dist: float = 140.0) -> bool:
    return math.dist(c1, c2) >= min_dist


def secondary(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """The texture's second colour: the background mixed towards white (dark colours) or black (light ones)."""
    lum = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    target = 255 if lum < 128 else 0
    return tuple(int(round(0.55 * v + 0.45 * target)) for v in rgb)  # type: ignore[return-value]


def colour_pairs(colours: Sequence[str] | None, domain: str) -> list[tuple[str, str]]:
    """The (shape colour, background) pairs far enough apart to read (textured: also from the pattern colour)."""
    names = list(colours) if colours else list(COLOURS)
    textured = domain == "textured"
    return [(c, b) for c in names for b in names if c != b and far(COLOURS[c], COLOURS[b])
            and (not textured or far(COLOURS[c], secondary(COLOURS[b]), 110.0))]
