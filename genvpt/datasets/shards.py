"""Prepared datasets on disk: WebDataset shards plus a manifest.

Layout of a prepared directory (written by ``stages/prepare.py``)::

    <dir>/train/shard-000000.tar ...   samples: <key>.png, <key>.cls, <key>.json
    <dir>/val/shard-000000.tar ...
    <dir>/test/shard-000000.tar ...    (a split's folder is written only when the split has images)
    <dir>/classes.json                 ["circle", "square", ...]  (index = label)
    <dir>/manifest.parquet             key, split, shard, label, class_name, caption, width, height, sha256
    <dir>/rejects.parquet              path, reason
    <dir>/stats.json

Keys contain no dots (WebDataset splits the key at the first dot). Shards are written with a fixed mtime, so the
same records give byte-identical shards.
"""
from __future__ import annotations

import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np
import torch
from PIL import Image

from ..io import sha256_bytes
from .params import SPLITS

log = logging.getLogger(__name__)

__all__ = ["ShardError", "SPLITS", "present_splits", "shard_paths", "write_split", "iter_split", "load_split",
           "read_classes", "SplitData"]

SHARD_PATTERN = "shard-%06d.tar"
FIXED_MTIME = 0.0


class ShardError(RuntimeError):
    """A shard is missing, truncated or holds a malformed sample; the message names the shard."""


def encode_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def write_split(samples: Iterable[dict], split_dir: str | os.PathLike, maxcount: int) -> list[dict]:
    """Write samples ``{"key", "png" (bytes), "label", "class_name", "caption", "source_id", "width", "height"}``
    into ``split_dir/shard-%06d.tar``; return one manifest row per sample."""
    import webdataset as wds

    split_dir = Path(split_dir)
    split_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    writer = wds.ShardWriter(
        str(split_dir / SHARD_PATTERN), maxcount=maxcount, maxsize=3e9, verbose=0, mtime=FIXED_MTIME
    )
    try:
        for s in samples:
            key = s["key"]
            if "." in key:
                raise ValueError(f"sample key {key!r} contains a dot")
            meta = {"class_name": s["class_name"], "caption": s["caption"], "source_id": s["source_id"]}
            writer.write(
                {
                    "__key__": key,
                    "png": s["png"],
                    "cls": str(int(s["label"])).encode(),
                    "json": json.dumps(meta, sort_keys=True).encode(),
                }
            )
            rows.append(
                {
                    "key": key,
                    "shard": Path(writer.fname).name,
                    "label": int(s["label"]),
                    "class_name": s["class_name"],
                    "caption": s["caption"],
                    "source_id": s["source_id"],
                    "width": int(s["width"]),
                    "height": int(s["height"]),
                    "sha256": sha256_bytes(s["png"]),
                }
            )
    finally:
        writer.close()
    return rows


def shard_paths(prepared_dir: str | os.PathLike, split: str, *, stage: str = "prepare",
                error: type[ShardError] = ShardError) -> list[Path]:
    """The sorted ``.tar`` shards of ``split``; ``error`` (naming the folder and the ``stage`` that writes it) if none."""
    d = Path(prepared_dir) / split
    if not d.is_dir():
        raise error(f"no {split!r} split in {prepared_dir} (missing folder {d}); run the {stage} stage first")
    paths = sorted(d.glob("*.tar"))
    if not paths:
        raise error(f"no shards in {d}")
    return paths


def present_splits(prepared_dir: str | os.PathLike) -> list[str]:
    """The splits of :data:`SPLITS` that ``prepared_dir`` holds (a folder each), in that order."""
    return [s for s in SPLITS if (Path(prepared_dir) / s).is_dir()]


def read_classes(prepared_dir: str | os.PathLike) -> list[str]:
    path = Path(prepared_dir) / "classes.json"
    if not path.is_file():
        raise ShardError(f"{path} not found; run the prepare stage first")
    return list(json.loads(path.read_text()))


def iter_split(prepared_dir: str | os.PathLike, split: str, decode: bool = True) -> Iterator[dict]:
    """Yield samples ``{"key", "image" (PIL RGB, or PNG bytes if not decode), "label", "class_name", "caption",
    "source_id", "shard"}`` in shard order. A corrupt shard raises :class:`ShardError` naming it."""
    import webdataset as wds

    for path in shard_paths(prepared_dir, split):
        ds = wds.WebDataset(str(path), shardshuffle=False, empty_check=False)
        try:
            for s in ds:
                missing = [k for k in ("png", "cls", "json") if k not in s]
                if missing:
                    raise ShardError(f"{path}: sample {s.get('__key__')!r} lacks {missing}")
                meta = json.loads(s["json"])
                img = s["png"]
                if decode:
                    img = Image.open(io.BytesIO(img))
                    img.load()
                    img = img.convert("RGB")
                yield {
                    "key": s["__key__"],
                    "image": img,
                    "label": int(s["cls"]),
                    "class_name": meta["class_name"],
                    "caption": meta.get("caption"),
                    "source_id": meta.get("source_id"),
                    "shard": path.name,
                }
        except ShardError:
            raise
        except Exception as err:  # tarfile.ReadError, OSError, PIL errors, JSON errors
            raise ShardError(f"corrupt shard {path}: {type(err).__name__}: {err}") from err


@dataclass
class SplitData:
    """A whole split in memory: ``images`` uint8 [N, 3, H, W]; index i of every field is one sample."""

    images: torch.Tensor
    labels: torch.Tensor
    keys: list[str]
    captions: list[Optional[str]]
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.keys)

    def float_images(self) -> torch.Tensor:
        """Images in [-1, 1], float32, as the tokenizers expect."""
        return self.images.float().div(127.5).sub(1.0)


def load_split(prepared_dir: str | os.PathLike, split: str) -> SplitData:
    """Load a whole split into memory (fine for the embedded default's sizes; stream with iter_split otherwise)."""
    imgs, labels, keys, caps = [], [], [], []
    for s in iter_split(prepared_dir, split):
        imgs.append(np.asarray(s["image"], dtype=np.uint8))
        labels.append(s["label"])
        keys.append(s["key"])
        caps.append(s["caption"])
    if not imgs:
        raise ShardError(f"split {split!r} of {prepared_dir} is empty")
    sizes = {a.shape for a in imgs}
    if len(sizes) != 1:
        raise ShardError(f"split {split!r} of {prepared_dir} mixes image sizes {sorted(sizes)}")
    images = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()
    return SplitData(images, torch.tensor(labels, dtype=torch.long), keys, caps, read_classes(prepared_dir))
