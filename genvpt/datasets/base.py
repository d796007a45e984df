"""The one interface every dataset implements: an iterable of :class:`Record` (or :class:`Reject`)."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import IO, Iterator, Optional, Protocol, Union

from PIL import Image, UnidentifiedImageError

__all__ = ["Record", "Reject", "Dataset", "BadImage", "open_image", "to_rgb", "fit_square"]

# fit_square resizes the short side first; past this many pixels (an absurd aspect ratio: 1 x 2,000,000 would need a
# 16 x 32,000,000 intermediate) it resamples just the centre square instead. Ordinary images never get near it.
MAX_INTERMEDIATE_PIXELS = 1 << 24


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


class BadImage(ValueError):
    """An input image that cannot be used; ``str(err)`` is the reason recorded in rejects.parquet."""


def open_image(src: str | os.PathLike | IO[bytes], size: int) -> Image.Image:
    """Decode ``src`` (a path or a binary file object) fully, convert it to RGB and fit it to ``size`` x ``size``.

    Raises :class:`BadImage` with the reason for anything that is not a usable image: not an image, truncated or
    corrupt data, or a decompression bomb, i.e. more pixels than ``PIL.Image.MAX_IMAGE_PIXELS`` (checked from the
    header, before anything is decoded; PIL itself refuses twice that many and only warns below)."""
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below, with the reason recorded
            im = Image.open(src)
        with im:
            w, h = im.size
            if limit and w * h > limit:
                raise BadImage(f"decompression bomb: {w} x {h} = {w * h} pixels, more than the {limit} pixels allowed "
                               f"(PIL.Image.MAX_IMAGE_PIXELS)")
            im.load()  # forces a full decode: truncated files fail here
            return fit_square(to_rgb(im), size)
    except BadImage:
        raise
    except Image.DecompressionBombError as err:
        raise BadImage(f"decompression bomb: {err}") from None
    except UnidentifiedImageError:
        raise BadImage("not an image (cannot identify image file)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:  # truncated or corrupt data
        raise BadImage(f"unreadable image: {err}") from None
    except Exception as err:  # a decoder tripping over crafted data (struct.error, IndexError, ...)
        raise BadImage(f"unreadable image: {type(err).__name__}: {err}") from None


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
    left, top = (nw - size) // 2, (nh - size) // 2
    if nw * nh > MAX_INTERMEDIATE_PIXELS:  # resample only the source region that becomes the crop
        sx, sy = w / nw, h / nh
        box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
        return img.resize((size, size), Image.BICUBIC, box=box, reducing_gap=None)
    img = img.resize((nw, nh), Image.BICUBIC, reducing_gap=None)
    return img.crop((left, top, left + size, top + size))
