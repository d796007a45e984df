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

Reading checks every shard in the same single pass (:func:`iter_split`, :func:`iter_tar_samples`): its members
are plain files with relative names (no absolute paths, no ``..``, no links or devices), nothing but zero blocks
follows the last one, and the split matches ``manifest.parquet`` (the same shard files, the same keys in each, the
sha256 of each PNG), so a truncated, garbled, replaced or missing shard is a :class:`ShardError` naming it instead
of fewer samples. A folder of bare shards (written by :func:`write_split` alone: no ``stats.json``, no manifest)
is read unverified but for the tar checks, with a warning; a folder the prepare stage wrote (``stats.json``)
without its manifest is an error.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator, Optional

import numpy as np
import torch
from PIL import Image

from ..io import sha256_bytes
from .params import SPLITS

log = logging.getLogger(__name__)

__all__ = ["ShardError", "SPLITS", "present_splits", "shard_paths", "write_split", "iter_split", "load_split",
           "read_classes", "SplitData", "scan_shard", "iter_tar_samples", "read_manifest", "check_shard_files"]

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


_LINK_OR_DEVICE = {tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hard link", tarfile.CHRTYPE: "character device",
                   tarfile.BLKTYPE: "block device", tarfile.FIFOTYPE: "fifo"}
_SAMPLE_MEMBER = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's key/extension split (base_plus_ext)


def _unsafe_name(name: str) -> Optional[str]:
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or PurePosixPath(name).is_absolute():
        return "has an absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "has a '..' path component"
    return None


def _check_tail(path: Path, end: int, error: type[ShardError]) -> None:
    """A plain tar holds only zero blocks after its last member. Anything else is a garbled or cut header, which
    tarfile (and so WebDataset) takes for the end of the archive, silently dropping every sample after it."""
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size < end:
            raise error(f"corrupt shard {path}: truncated ({size} bytes, its last member ends at byte {end})")
        fh.seek(end)
        offset = end
        while True:
            block = fh.read(1 << 16)
            if not block:
                return
            if block.strip(b"\0"):
                at = offset + len(block) - len(block.lstrip(b"\0"))
                raise error(f"corrupt shard {path}: unreadable tar header at byte {at} (every sample after it would "
                            f"be lost)")
            offset += len(block)


def _is_compressed(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(6).startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ"))


def _walk(tf: tarfile.TarFile, path: Path, error: type[ShardError], state: dict) -> Iterator[tuple]:
    """The sample members of an open tar, each checked: ``(member, key, extension)``, split as WebDataset does
    (key up to the first dot of the file name, extension lower-cased). ``state["end"]``: where the last member ends."""
    while True:
        m = tf.next()
        if m is None:
            return
        tf.members = []  # do not keep every TarInfo of a large shard
        state["end"] = m.offset_data + ((m.size + 511) // 512) * 512 if m.isreg() else m.offset_data
        why = _unsafe_name(m.name)
        if why is None and not (m.isreg() or m.isdir()):
            why = f"is a {_LINK_OR_DEVICE.get(m.type, f'member of type {m.type!r}')}"
            if m.issym() or m.islnk():
                why += f" (to {m.linkname!r})"
        if why:
            raise error(f"unsafe shard {path}: member {m.name!r} {why}; shards may hold only regular files with "
                        f"relative paths")
        if not m.isreg() or re.match(r"__[^/]*__($|/)", m.name):
            continue
        match = _SAMPLE_MEMBER.match(m.name)
        if match:
            yield m, match.group(1), match.group(2).lower()


def scan_shard(path: str | os.PathLike, error: type[ShardError] = ShardError) -> list[str]:
    """Check a shard's tar headers (the data is skipped, not read) and return its sample keys in order.

    Raises ``error`` naming the shard (and the member) for a member with an absolute path or a ``..`` component, a
    link, device or fifo member, a truncated member, or a garbled header."""
    path = Path(path)
    keys: list[str] = []
    state = {"end": 0}
    try:
        compressed = _is_compressed(path)
        # a plain tar is read header by header, seeking over the data; a compressed one has to be streamed
        with tarfile.open(path, mode="r|*" if compressed else "r:") as tf:
            for _, key, _ in _walk(tf, path, error, state):
                if not keys or keys[-1] != key:
                    keys.append(key)
        if not compressed:
            _check_tail(path, state["end"], error)
    except error:
        raise
    except (tarfile.TarError, OSError, EOFError) as err:
        raise error(f"corrupt shard {path}: {type(err).__name__}: {err}") from err
    return keys


class _HashingReader:
    def __init__(self, fh):
        self.fh, self.sha = fh, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        b = self.fh.read(n)
        self.sha.update(b)
        return b


def iter_tar_samples(path: str | os.PathLike, error: type[ShardError] = ShardError,
                     digest: Optional[dict] = None) -> Iterator[dict]:
    """Read a shard in one pass and yield its samples as WebDataset groups them (``{"__key__", ext: bytes, ...}``),
    every member checked as in :func:`scan_shard`, the bytes after the last member too. With ``digest`` (a dict),
    ``digest["sha256"]`` is the sha256 of the whole file once the iteration has finished."""
    path = Path(path)
    state = {"end": 0}
    try:
        compressed = _is_compressed(path)
        with open(path, "rb") as raw:
            fh = _HashingReader(raw) if digest is not None else raw
            with tarfile.open(fileobj=fh, mode="r|*" if compressed else "r|") as tf:
                cur: Optional[dict] = None
                for m, key, ext in _walk(tf, path, error, state):
                    data = tf.extractfile(m).read()
                    if cur is None or cur["__key__"] != key:
                        if cur is not None:
                            yield cur
                        cur = {"__key__": key}
                    if ext in cur:
                        raise error(f"corrupt shard {path}: member {m.name!r}: sample {key!r} holds two {ext!r} files")
                    cur[ext] = data
                if cur is not None:
                    yield cur
            if digest is not None:
                while fh.read(1 << 20):
                    pass
                digest["sha256"] = fh.sha.hexdigest()
        if not compressed:
            _check_tail(path, state["end"], error)
    except error:
        raise
    except (tarfile.TarError, OSError, EOFError) as err:
        raise error(f"corrupt shard {path}: {type(err).__name__}: {err}") from err


_UNVERIFIED_WARNED: set[str] = set()


def read_manifest(prepared_dir: str | os.PathLike, split: str) -> Optional[dict[str, dict[str, str]]]:
    """``{shard file name: {key: png sha256}}`` of ``split`` from ``manifest.parquet``; None (with a warning) for a
    folder of bare shards that has no manifest. :class:`ShardError` if the prepare stage wrote the folder
    (``stats.json``) but the manifest is gone, or the manifest is unreadable."""
    import pyarrow.parquet as pq

    prepared_dir = Path(prepared_dir)
    path = prepared_dir / "manifest.parquet"
    if not path.is_file():
        if (prepared_dir / "stats.json").is_file():
            raise ShardError(f"{path} is missing: {prepared_dir} was written by the prepare stage but its manifest is "
                             f"gone, so its shards cannot be verified; run the prepare stage again")
        if str(prepared_dir.resolve()) not in _UNVERIFIED_WARNED:
            _UNVERIFIED_WARNED.add(str(prepared_dir.resolve()))
            log.warning("%s has no manifest.parquet: its shards are read but not verified (sample count, PNG sha256)",
                        prepared_dir)
        return None
    cols = ["key", "split", "shard", "sha256"]
    try:
        t = pq.read_table(path, columns=cols, filters=[("split", "=", split)]).to_pydict()
    except Exception as err:  # ArrowInvalid (not parquet), KeyError / ArrowInvalid (a column is missing), OSError
        raise ShardError(f"unreadable manifest {path} (needs columns {cols}): {type(err).__name__}: {err}") from err
    out: dict[str, dict[str, str]] = {}
    for key, s, shard, sha in zip(t["key"], t["split"], t["shard"], t["sha256"]):
        if s != split:
            continue
        keys = out.setdefault(shard, {})
        if key in keys:
            raise ShardError(f"{path}: key {key!r} is listed twice for {split}/{shard}")
        keys[key] = sha
    return out


def check_shard_files(paths: list[Path], listed: dict[str, int], record: str, split_dir: Path,
                      error: type[ShardError] = ShardError) -> None:
    """The shard files of a split against the ``record`` that lists them (``{file name: samples}``): a listed shard
    that is missing, or a shard it does not list, is ``error`` naming the file."""
    names = {p.name for p in paths}
    gone = sorted(set(listed) - names)
    if gone:
        raise error(f"{split_dir / gone[0]}: missing, but {record} lists {listed[gone[0]]} samples in it (missing "
                    f"shards: {gone})")
    stray = sorted(names - set(listed))
    if stray:
        raise error(f"{split_dir / stray[0]}: {record} does not list this shard (a stray or misplaced shard)")


def iter_split(prepared_dir: str | os.PathLike, split: str, decode: bool = True) -> Iterator[dict]:
    """Yield samples ``{"key", "image" (PIL RGB, or PNG bytes if not decode), "label", "class_name", "caption",
    "source_id", "shard"}`` in shard order, reading each shard once.

    A corrupt or unsafe shard, or one that does not match ``manifest.parquet`` (the shard files, each one's keys and
    count, each PNG's sha256), raises :class:`ShardError` naming it: a stray key or a wrong hash at that sample,
    keys missing from a shard (a truncated shard) once the shard has been read, so a consumer that reads the whole
    split (:func:`load_split`) never gets fewer samples than the manifest lists."""
    paths = shard_paths(prepared_dir, split)
    manifest = read_manifest(prepared_dir, split)
    if manifest is not None:
        check_shard_files(paths, {k: len(v) for k, v in manifest.items()}, "manifest.parquet",
                          Path(prepared_dir) / split)
    for path in paths:
        expected = manifest[path.name] if manifest is not None else None
        seen: set[str] = set()
        try:
            for s in iter_tar_samples(path):
                key = s["__key__"]
                missing = [k for k in ("png", "cls", "json") if k not in s]
                if missing:
                    raise ShardError(f"{path}: sample {key!r} lacks {missing}")
                if key in seen:
                    raise ShardError(f"{path}: sample {key!r} appears twice")
                seen.add(key)
                if expected is not None:
                    if key not in expected:
                        raise ShardError(f"{path}: sample {key!r} is not listed for this shard in manifest.parquet "
                                         f"(a stray or replaced sample)")
                    got = sha256_bytes(s["png"])
                    if got != expected[key]:
                        raise ShardError(f"{path}: sample {key!r}: the PNG's sha256 {got[:16]}... differs from "
                                         f"manifest.parquet's {expected[key][:16]}... (corrupt or replaced image)")
                meta = json.loads(s["json"])
                img = s["png"]
                if decode:
                    img = Image.open(io.BytesIO(img))
                    img.load()
                    img = img.convert("RGB")
                yield {
                    "key": key,
                    "image": img,
                    "label": int(s["cls"]),
                    "class_name": meta["class_name"],
                    "caption": meta.get("caption"),
                    "source_id": meta.get("source_id"),
                    "shard": path.name,
                }
        except ShardError:
            raise
        except Exception as err:  # PIL errors, JSON errors, a label that is not an integer
            raise ShardError(f"corrupt shard {path}: {type(err).__name__}: {err}") from err
        if expected is not None and len(seen) != len(expected):
            lost = [k for k in expected if k not in seen]
            raise ShardError(f"{path}: {len(lost)} of the {len(expected)} samples manifest.parquet lists for this "
                             f"shard are missing (first: {lost[:5]}); the shard is truncated or replaced")


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
