"""``imagefolder``: class-per-folder trees (ImageNet, Food101 layouts).

``root/<class>/<image>`` or ``root/{train,val,test}/<class>/<image>`` (``validation/`` counts as val): then the
splits in the tree are kept and the missing ones are carved from ``train/`` (genvpt/datasets/registry.py).
Unreadable folders, empty class folders and files that are not decodable images (empty, not an image, truncated,
decompression bombs: :func:`~genvpt.datasets.base.open_image`) are yielded as :class:`Reject` with the path and
the reason; grayscale, palette, CMYK, 16-bit and alpha images are converted.
"""
from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from .params import SPLIT_DIRS, DatasetParams
from .base import BadImage, Record, Reject, open_image
from .registry import Item, register_dataset

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def load_image_file(path: Path, size: int) -> Image.Image | Reject:
    """The image at ``path`` as RGB ``size`` x ``size``, or a :class:`Reject` saying why not (empty file, not an
    image, truncated or corrupt, unreadable file, decompression bomb)."""
    try:
        if path.stat().st_size == 0:
            return Reject(str(path), "empty file (0 bytes)")
        return open_image(path, size)
    except BadImage as err:
        return Reject(str(path), str(err))
    except OSError as err:  # stat: the file vanished or cannot be read
        return Reject(str(path), f"unreadable file: {err}")


class ImageFolderDataset:
    def __init__(self, root: str | os.PathLike, image_size: int):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset.path: folder not found: {self.root}")
        self.image_size = image_size
        splits = [(s, self.root / d) for d, s in SPLIT_DIRS.items() if (self.root / d).is_dir()]
        self.split_roots = splits or [(None, self.root)]
        names: set[str] = set()
        self._empty: list[Reject] = []
        self._unreadable: list[Reject] = []
        for _, r in self.split_roots:
            for d in sorted(p for p in r.iterdir() if p.is_dir()):
                try:
                    files = [f for f in d.iterdir() if f.is_file()]
                except PermissionError as err:
                    self._unreadable.append(Reject(str(d), f"unreadable folder: {err}"))
                    continue
                if not any(f.suffix.lower() in IMAGE_EXTENSIONS for f in files):
                    self._empty.append(Reject(str(d), "empty class folder (no image files)"))
                    continue
                names.add(d.name)
        if not names:
            raise ValueError(f"dataset.path {self.root}: no class folders with images found")
        self.class_names = sorted(names)

    def _load(self, path: Path, label: int) -> Record | Reject:
        img = load_image_file(path, self.image_size)
        if isinstance(img, Reject):
            return img
        rel = path.relative_to(self.root).as_posix()
        return Record(img, label, self.class_names[label], None, rel)

    def items(self):
        yield from self._unreadable
        yield from self._empty
        index = {n: i for i, n in enumerate(self.class_names)}
        for split, r in self.split_roots:
            for name in self.class_names:
                d = r / name
                if not d.is_dir():
                    continue
                for f in sorted(d.iterdir()):
                    if not f.is_file():
                        continue
                    if f.suffix.lower() not in IMAGE_EXTENSIONS:
                        continue  # README.txt, .DS_Store...: not inputs, not rejects
                    yield Item(f.relative_to(self.root).as_posix(), index[name], lambda f=f, l=index[name]: self._load(f, l), split)


@register_dataset("imagefolder")
def _imagefolder(p: DatasetParams):
    return ImageFolderDataset(p.path, p.image_size)
