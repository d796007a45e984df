"""The one interface every dataset implements: an iterable of :class:`Record` (or :class:`Reject`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Protocol, Union

from PIL import Image

__all__ = ["Record", "Reject", "Dataset", "to_rgb", "fit_square"]


@dataclass
class Record:
    """One image with its label. ``image`` is RGB at the dataset's image size."""

    image: Image.Image
    label: int
    class_name: str
    caption: Optional[str]
    source_id: str
    split: Optional[str] = None  # 'train'/'val'/'test' when the source ships splits, else None (prepare splits)


@dataclass
class Reject:
    """An input that could not be used, recorded in rejects.parquet instead of being lost."""

    path: str
    reason: str


class Dataset(Protocol):
    class_names: list[str]

    def __iter__(self) -> Iterator[Union[Record, Reject]]: ...


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert grayscale, palette, CMYK, 16-bit and alpha images to RGB (alpha composited on white)."""
    if img.mode == "RGB":
        return img
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, img).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        import numpy as np

        arr = np.asarray(img, dtype="float64")
        hi = arr.max() or 1.0
        img = Image.fromarray((arr / hi * 255.0).round().astype("uint8"), mode="L")
    return img.convert("RGB")


def fit_square(img: Image.Image, size: int) -> Image.Image:
    """Resize the short side to ``size`` (bicubic, antialiased) and centre-crop to ``size`` x ``size``."""
    w, h = img.size
    if (w, h) == (size, size):
        return img
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.BICUBIC, reducing_gap=None)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))
