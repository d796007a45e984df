"""``shapes``: a procedurally generated, seeded image dataset with ground-truth captions.

Each image shows 1..max_count copies of one shape class, with varied colour, size, position, rotation and
background. Domains give a real style shift between source and target:

* ``flat``: filled shapes on a plain background;
* ``textured``: filled shapes on a striped / dotted / checkered / gradient background;
* ``outlined``: outline-only shapes on a plain background.

The caption is built from the attributes, e.g. "a small red star in the upper left on a striped blue background".
Image ``i`` of class ``c`` depends only on (seed, domain, c, i): the same params give the same bytes, whatever
subset is drawn. Shapes are drawn at 4x and downsampled with a box filter (antialiasing).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, ImageDraw

from .base import Record
from .shape_vocab import ALL_SHAPE_CLASSES, COLOURS, POSITIONS, SHAPE_CLASSES, SIZES, TEXTURES, colour_pairs
from .shape_vocab import far as _far, secondary as _secondary

__all__ = ["ShapesDataset", "ShapeAttributes", "SHAPE_CLASSES", "COLOURS", "POSITIONS", "TEXTURES", "SIZES",
           "colour_pairs", "caption_for", "render"]

COUNT_WORDS = {1: "a", 2: "two", 3: "three"}
SS = 4  # supersampling factor


@dataclass(frozen=True)
class ShapeAttributes:
    shape: str
    colour: str
    size: str
    count: int
    positions: tuple[str, ...]
    rotation: float
    background: str
    texture: str | None  # None = plain
    outlined: bool


def _plural(name: str) -> str:
    return name + ("es" if name.endswith(("s", "x", "ch", "sh")) else "s")


def caption_for(a: ShapeAttributes) -> str:
    adjectives = f"{a.size} {a.colour}" + (" outlined" if a.outlined else "")
    background = f"{a.texture + ' ' if a.texture else ''}{a.background} background"
    on = f"on {_article(background)} {background}"
    if a.count == 1:
        return f"{_article(adjectives)} {adjectives} {a.shape} {POSITIONS[a.positions[0]][0]} {on}"
    return f"{COUNT_WORDS[a.count]} {adjectives} {_plural(a.shape)} {on}"


def _article(phrase: str) -> str:
    return "an" if phrase[:1] in "aeiou" else "a"


def sample_attributes(rng: np.random.Generator, shape: str, domain: str, max_count: int,
                      colours: Sequence[str] | None = None, rotation_range: float = 360.0,
                      positions: Sequence[str] | None = None, sizes: Sequence[str] | None = None) -> ShapeAttributes:
    """Random attributes of one image. ``positions`` / ``sizes`` restrict single shapes to those named (None: all)."""
    names = list(colours) if colours else list(COLOURS)
    count = int(rng.integers(1, max_count + 1))
    size = str(rng.choice(list(sizes or SIZES) if count == 1 else ["small", "medium"]))
    textured = domain == "textured"
    while True:
        colour, background = (str(x) for x in rng.choice(names, size=2, replace=False))
        fg, bg = COLOURS[colour], COLOURS[background]
        if _far(fg, bg) and (not textured or _far(fg, _secondary(bg), 110.0)):
            break
    if count == 1 and positions:
        positions = (str(rng.choice(list(positions))),)
    else:
        positions = tuple(str(p) for p in rng.choice(list(POSITIONS), size=count, replace=False))
    if count > 1:  # keep several shapes apart: corners and edges only
        corners = ["upper left", "upper right", "lower left", "lower right"]
        positions = tuple(str(p) for p in rng.choice(corners, size=count, replace=False))
    texture = str(rng.choice(TEXTURES)) if textured else None
    # 360: any angle; less: uniform within +-range/2 of upright
    rotation = float(rng.uniform(0, 360)) if rotation_range >= 360 else float(rng.uniform(-rotation_range / 2, rotation_range / 2))
    return ShapeAttributes(shape, colour, size, count, positions, rotation, background, texture, domain == "outlined")


# ---- geometry: unit-radius outlines centred at the origin ------------------------------------------------------
def _regular(n: int, start: float = -math.pi / 2) -> list[tuple[float, float]]:
    return [(math.cos(start + 2 * math.pi * k / n), math.sin(start + 2 * math.pi * k / n)) for k in range(n)]


def _star(points: int = 5, inner: float = 0.45) -> list[tuple[float, float]]:
    out = []
    for k in range(2 * points):
        r = 1.0 if k % 2 == 0 else inner
        a = -math.pi / 2 + math.pi * k / points
        out.append((r * math.cos(a), r * math.sin(a)))
    return out


def _cross(w: float = 0.34) -> list[tuple[float, float]]:
    return [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w)]


def _heart(n: int = 48) -> list[tuple[float, float]]:
    pts = []
    for k in range(n):
        t = 2 * math.pi * k / n
        x = 16 * math.sin(t) ** 3
        y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
        pts.append((x / 17.0, (y + 2.5) / 17.0))
    return pts


def _crescent(n: int = 40) -> list[tuple[float, float]]:
    # outer unit circle minus a circle of radius 0.85 centred at (0.45, 0): the left-facing crescent
    t0, t1 = 1.0086, 2 * math.pi - 1.0086
    p0, p1 = 2 * math.pi - 1.4726, 1.4726
    outer = [(math.cos(t0 + (t1 - t0) * k / n), math.sin(t0 + (t1 - t0) * k / n)) for k in range(n + 1)]
    inner = [(0.45 + 0.85 * math.cos(p0 + (p1 - p0) * k / n), 0.85 * math.sin(p0 + (p1 - p0) * k / n)) for k in range(n + 1)]
    return outer + inner


def _arrow() -> list[tuple[float, float]]:
    return [(-1, -0.25), (0.15, -0.25), (0.15, -0.62), (1, 0), (0.15, 0.62), (0.15, 0.25), (-1, 0.25)]


POLYGONS = {
    "square": [(x * 0.85, y * 0.85) for x, y in [(-1, -1), (1, -1), (1, 1), (-1, 1)]],
    "triangle": _regular(3),
    "star": _star(),
    "pentagon": _regular(5),
    "hexagon": _regular(6),
    "cross": _cross(),
    "diamond": [(0, -1), (0.62, 0), (0, 1), (-0.62, 0)],
    "heart": _heart(),
    "crescent": _crescent(),
    "arrow": _arrow(),
    # NEW_SHAPE_CLASSES: never in the source domain
    "trapezoid": [(-1, 0.6), (1, 0.6), (0.5, -0.6), (-0.5, -0.6)],
    "parallelogram": [(-1, 0.55), (0.4, 0.55), (1, -0.55), (-0.4, -0.55)],
    "semicircle": [(math.cos(math.pi + math.pi * k / 32), 0.45 + math.sin(math.pi + math.pi * k / 32))
                   for k in range(33)],
    "hourglass": [(-0.75, -1), (0.75, -1), (0.12, 0), (0.75, 1), (-0.75, 1), (-0.12, 0)],
    "ell": [(-0.65, -1), (-0.15, -1), (-0.15, 0.5), (0.75, 0.5), (0.75, 1), (-0.65, 1)],
    "tee": [(-1, -1), (1, -1), (1, -0.5), (0.25, -0.5), (0.25, 1), (-0.25, 1), (-0.25, -0.5), (-1, -0.5)],
}
assert set(POLYGONS) | {"circle", "ring"} == set(ALL_SHAPE_CLASSES)
_EXTENT = {k: max(math.hypot(x, y) for x, y in v) for k, v in POLYGONS.items()}  # farthest vertex / radius


def _background(a: ShapeAttributes, side: int, rng: np.random.Generator) -> Image.Image:
    bg = np.array(COLOURS[a.background], dtype=np.float32)
    if a.texture is None:
        return Image.new("RGB", (side, side), tuple(int(v) for v in bg))
    sec = np.array(_secondary(COLOURS[a.background]), dtype=np.float32)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    period = side / float(rng.uniform(4.0, 6.0))
    if a.texture == "striped":
        theta = float(rng.choice([0.0, 45.0, 90.0, 135.0])) * math.pi / 180
        u = xx * math.cos(theta) + yy * math.sin(theta)
        mask = (np.floor(u / (period / 2)) % 2).astype(np.float32)
    elif a.texture == "checkered":
        mask = ((np.floor(xx / period) + np.floor(yy / period)) % 2).astype(np.float32)
    elif a.texture == "dotted":
        cx = (xx % period) - period / 2
        cy = (yy % period) - period / 2
        mask = (cx * cx + cy * cy <= (period * 0.22) ** 2).astype(np.float32)
    else:  # gradient
        theta = float(rng.uniform(0, 2 * math.pi))
        u = (xx - side / 2) * math.cos(theta) + (yy - side / 2) * math.sin(theta)
        mask = (u / side + 0.5).clip(0, 1)
    arr = bg[None, None, :] * (1 - mask[..., None]) + sec[None, None, :] * mask[..., None]
    return Image.fromarray(arr.round().astype(np.uint8), "RGB")


def render(a: ShapeAttributes, size: int, rng: np.random.Generator, size_scale: float = 1.0,
           jitter: float = 0.04) -> Image.Image:
    """Draw ``a`` at ``size`` px; ``jitter`` moves each shape's centre by up to that fraction of the side."""
    side = size * SS
    img = _background(a, side, rng)
    draw = ImageDraw.Draw(img)
    fg = COLOURS[a.colour]
    radius = SIZES[a.size] * size_scale * side
    width = max(2, int(round(radius * 0.22)))
    rot = math.radians(a.rotation)
    for pos in a.positions:
        fx, fy = POSITIONS[pos][1]
        jx, jy = rng.uniform(-jitter, jitter, size=2)
        cx, cy = (fx + jx) * side, (fy + jy) * side
        if size_scale != 1.0:  # larger shapes: keep the whole shape on the canvas
            reach = radius * _EXTENT.get(a.shape, 1.0) + SS
            lo, hi = min(reach, side / 2), max(side - reach, side / 2)
            cx, cy = min(max(cx, lo), hi), min(max(cy, lo), hi)
        if a.shape in ("circle", "ring"):
            box = [cx - radius, cy - radius, cx + radius, cy + radius]
            if a.shape == "circle" and not a.outlined:
                draw.ellipse(box, fill=fg)
            elif a.shape == "circle":
                draw.ellipse(box, outline=fg, width=width)
            elif not a.outlined:
                draw.ellipse(box, outline=fg, width=max(3, int(radius * 0.38)))
            else:  # outlined ring: two thin circles
                draw.ellipse(box, outline=fg, width=width)
                r2 = radius * 0.55
                draw.ellipse([cx - r2, cy - r2, cx + r2, cy + r2], outline=fg, width=width)
            continue
        pts = []
        for x, y in POLYGONS[a.shape]:
            xr = x * math.cos(rot) - y * math.sin(rot)
            yr = x * math.sin(rot) + y * math.cos(rot)
            pts.append((cx + radius * xr, cy + radius * yr))
        if a.outlined:
            draw.polygon(pts, outline=fg, width=width)
        else:
            draw.polygon(pts, fill=fg)
    return img.resize((size, size), Image.BOX)


class ShapesDataset:
    """Lazily rendered shapes; ``items()`` lists (id, label, caption, loader) without drawing anything."""

    def __init__(
        self,
        image_size: int = 32,
        domain: str = "flat",
        images_per_class: int = 300,
        classes: Sequence[str] | None = None,
        max_count: int = 2,
        seed: int = 0,
        size_scale: float = 1.0,
        colours: Sequence[str] | None = None,
        rotation_range: float = 360.0,
        positions: Sequence[str] | None = None,
        sizes: Sequence[str] | None = None,
        position_jitter: float = 0.04,
    ):
        self.image_size = image_size
        self.domain = domain
        self.images_per_class = images_per_class
        self.class_names = list(classes) if classes else list(SHAPE_CLASSES)
        self.max_count = max_count
        self.seed = seed
        self.size_scale = size_scale
        self.colours = list(colours) if colours else None
        self.rotation_range = rotation_range
        self.positions = list(positions) if positions else None
        self.sizes = list(sizes) if sizes else None
        self.position_jitter = position_jitter
        for what, given, known in (("colours", self.colours, COLOURS), ("positions", self.positions, POSITIONS),
                                   ("sizes", self.sizes, SIZES)):
            unknown = [c for c in given or [] if c not in known]
            if unknown:
                raise ValueError(f"unknown {what} {unknown}; allowed: {', '.join(known)}")
        if not colour_pairs(self.colours, domain):
            raise ValueError(f"colours {self.colours} have no (shape, background) pair far enough apart to read in "
                             f"the {domain!r} domain; add contrasting colours (e.g. white and black)")

    def _rng(self, shape: str, i: int) -> np.random.Generator:
        # keyed by the class *name*, so a subset of classes renders the same images as the full set
        return np.random.default_rng([self.seed, ALL_SHAPE_CLASSES.index(shape), i,
                                      ("flat", "textured", "outlined").index(self.domain)])

    def attributes(self, shape: str, i: int) -> ShapeAttributes:
        return sample_attributes(self._rng(shape, i), shape, self.domain, self.max_count, self.colours, self.rotation_range,
                                 self.positions, self.sizes)

    def make(self, label: int, i: int) -> Record:
        shape = self.class_names[label]
        rng = self._rng(shape, i)
        attrs = sample_attributes(rng, shape, self.domain, self.max_count, self.colours, self.rotation_range,
                                  self.positions, self.sizes)
        img = render(attrs, self.image_size, rng, self.size_scale, self.position_jitter)
        return Record(img, label, shape, caption_for(attrs), f"shapes/{self.domain}/{shape}/{i}")

    def items(self) -> Iterator["Item"]:
        from .registry import Item

        for i in range(self.images_per_class):
            for label, shape in enumerate(self.class_names):
                yield Item(
                    f"shapes/{self.domain}/{shape}/{i}",
                    label,
                    lambda label=label, i=i: self.make(label, i),
                )

    def __iter__(self) -> Iterator[Record]:
        for it in self.items():
            yield it.load()
