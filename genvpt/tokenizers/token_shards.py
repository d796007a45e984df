"""Token shards: a prepared dataset encoded by a tokenizer (written by ``stages/tokenize.py``).

Layout of a token directory::

    <dir>/train/shard-000000.tar ...   samples: <key>.cls, <key>.json, <key>.tok0.npy ... <key>.tok{K-1}.npy
    <dir>/val/shard-000000.tar ...
    <dir>/test/shard-000000.tar ...    (the splits of the prepared dataset: the source has no test)
    <dir>/classes.json                 ["circle", "square", ...]  (index = label)
    <dir>/meta.json                    family, grid (side of each scale), vocab_size, counts per split, tokenizer,
                                       shards: {split: {shard file: {count, sha256}}} (token_shard_index)

``tok{k}.npy`` is an integer array [pn_k, pn_k] (int16 when the vocabulary fits, else int32); ``json`` holds
``class_name``, ``caption`` (the caption slot: the prepared caption or null) and ``source_id``. Shards are written
with a fixed mtime, so the same tokens give byte-identical shards.

Reading (:func:`iter_tokens`) checks each shard in the one pass that reads it: the shard files are those
meta.json's ``shards`` lists, each with its sha256 and sample count (checked once the shard has been read); every
member is a regular file with a relative path (:func:`~genvpt.datasets.shards.iter_tar_samples`). Folders written
before ``shards`` was recorded are checked against ``counts`` at the end of the split. Each sample's tokens must fit ``grid`` and ``vocab_size`` and its label
the class list. Any mismatch is a :class:`TokenShardError` naming the shard file.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np
import torch

from ..datasets.shards import ShardError, check_shard_files, iter_tar_samples, scan_shard, shard_paths
from ..io import read_json, sha256_file

__all__ = ["TokenShardError", "TokenData", "write_token_split", "iter_tokens", "load_tokens", "read_token_meta",
           "token_shard_index"]

SHARD_PATTERN = "shard-%06d.tar"
FIXED_MTIME = 0.0


class TokenShardError(ShardError):
    """A token shard is missing, corrupt or inconsistent with meta.json; the message names the shard."""


@dataclass
class TokenData:
    """A whole split of tokens in memory; index i of every field is one image."""

    scales: list[torch.Tensor]  # one LongTensor [N, pn_k * pn_k] per scale (one entry for VQGAN)
    labels: torch.Tensor  # LongTensor [N]
    keys: list[str]
    captions: list[Optional[str]]
    class_names: list[str]
    grid: list[int]  # side of each scale

    def __len__(self) -> int:
        return len(self.keys)


def _dtype(vocab_size: int):
    return np.int16 if vocab_size <= np.iinfo(np.int16).max + 1 else np.int32


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def write_token_split(
    samples: Iterable[dict], split_dir: str | os.PathLike, *, vocab_size: int, maxcount: int = 10000
) -> int:
    """Write samples ``{"key", "label", "class_name", "caption", "source_id", "scales": [np/torch [pn*pn] ...]}``
    into ``split_dir/shard-%06d.tar``; return the number written."""
    import webdataset as wds

    split_dir = Path(split_dir)
    split_dir.mkdir(parents=True, exist_ok=True)
    dt = _dtype(vocab_size)
    n = 0
    writer = wds.ShardWriter(str(split_dir / SHARD_PATTERN), maxcount=maxcount, maxsize=3e9, verbose=0,
                             mtime=FIXED_MTIME)
    try:
        for s in samples:
            rec = {
                "__key__": s["key"],
                "cls": str(int(s["label"])).encode(),
                "json": json.dumps(
                    {"class_name": s["class_name"], "caption": s.get("caption"), "source_id": s.get("source_id")},
                    sort_keys=True,
                ).encode(),
            }
            for k, tok in enumerate(s["scales"]):
                tok = np.asarray(tok)
                side = round(tok.size ** 0.5)
                rec[f"tok{k}.npy"] = _npy(tok.reshape(side, side).astype(dt))
            writer.write(rec)
            n += 1
    finally:
        writer.close()
    return n


def token_shard_index(split_dir: str | os.PathLike) -> dict[str, dict]:
    """``{shard file name: {"count": samples, "sha256": of the file}}`` for the shards of ``split_dir``: what the
    tokenize stage records in meta.json's ``shards`` for :func:`iter_tokens` to verify."""
    paths = sorted(Path(split_dir).glob("*.tar"))
    return {p.name: {"count": len(scan_shard(p, error=TokenShardError)), "sha256": sha256_file(p)} for p in paths}


def _class_count(token_dir: Path, meta: dict) -> Optional[int]:
    path = token_dir / "classes.json"
    if path.is_file():
        try:
            return len(read_json(path))
        except ValueError as err:
            raise TokenShardError(str(err)) from None
    names = meta.get("class_names")
    return len(names) if names else None


def read_token_meta(token_dir: str | os.PathLike) -> dict:
    path = Path(token_dir) / "meta.json"
    if not path.is_file():
        raise TokenShardError(f"{path} not found: {token_dir} is not a token directory (run the tokenize stage)")
    try:
        return read_json(path)
    except ValueError as err:
        raise TokenShardError(str(err)) from None


def iter_tokens(token_dir: str | os.PathLike, split: str) -> Iterator[dict]:
    """Yield ``{"key", "label", "class_name", "caption", "source_id", "scales": [np.int64 [pn*pn] ...], "shard"}``.
    A corrupt, truncated, unsafe or missing shard, one that does not match meta.json (sha256, sample count), or a
    sample whose tokens or label do not fit meta.json / the class list raises :class:`TokenShardError` naming it."""
    token_dir = Path(token_dir)
    meta = read_token_meta(token_dir)
    grid, vocab = list(meta["grid"]), int(meta["vocab_size"])
    n_classes = _class_count(token_dir, meta)
    paths = shard_paths(token_dir, split, stage="tokenize", error=TokenShardError)
    index = (meta.get("shards") or {}).get(split)
    if index is not None:
        check_shard_files(paths, {k: v["count"] for k, v in index.items()}, "meta.json", token_dir / split,
                          TokenShardError)
    total = 0
    for path in paths:
        digest: Optional[dict] = {} if index is not None else None
        n = 0
        try:
            for s in iter_tar_samples(path, error=TokenShardError, digest=digest):
                key = s.get("__key__")
                need = ["cls", "json"] + [f"tok{k}.npy" for k in range(len(grid))]
                missing = [k for k in need if k not in s]
                if missing:
                    raise TokenShardError(f"token shard {path}: sample {key!r} lacks {missing}")
                label = int(s["cls"])
                if label < 0 or (n_classes is not None and label >= n_classes):
                    where = f"the {n_classes} classes of {token_dir} (classes.json)" if n_classes else "any class"
                    raise TokenShardError(f"token shard {path}: sample {key!r} has label {label}, outside {where}")
                scales = []
                for k, side in enumerate(grid):
                    arr = np.load(io.BytesIO(s[f"tok{k}.npy"]), allow_pickle=False)
                    if arr.shape != (side, side) or not np.issubdtype(arr.dtype, np.integer):
                        raise TokenShardError(
                            f"token shard {path}: sample {key!r} scale {k} has {arr.dtype} {arr.shape}, "
                            f"expected integers ({side}, {side})"
                        )
                    if arr.size and (arr.min() < 0 or arr.max() >= vocab):
                        raise TokenShardError(
                            f"token shard {path}: sample {key!r} scale {k} has tokens outside [0, {vocab})"
                        )
                    scales.append(arr.reshape(-1).astype(np.int64))
                meta_s = json.loads(s["json"])
                n += 1
                yield {
                    "key": key,
                    "label": label,
                    "class_name": meta_s.get("class_name"),
                    "caption": meta_s.get("caption"),
                    "source_id": meta_s.get("source_id"),
                    "scales": scales,
                    "shard": path.name,
                }
        except TokenShardError:
            raise
        except Exception as err:  # ValueError from np.load or int(cls), JSON errors
            raise TokenShardError(f"corrupt token shard {path}: {type(err).__name__}: {err}") from err
        total += n
        if index is not None:
            if digest.get("sha256") != index[path.name]["sha256"]:
                raise TokenShardError(f"token shard {path}: its sha256 differs from the one meta.json records (the "
                                      f"shard was truncated, corrupted or replaced after tokenize wrote it)")
            if n != index[path.name]["count"]:
                raise TokenShardError(f"token shard {path}: {n} samples, meta.json says {index[path.name]['count']}")
    expected = (meta.get("counts") or {}).get(split)
    if expected is not None and expected != total:
        raise TokenShardError(f"{token_dir / split}: {total} samples in the shards {[p.name for p in paths]} but "
                              f"meta.json says {expected} (truncated shard?)")


def load_tokens(token_dir: str | os.PathLike, split: str) -> TokenData:
    """Load a whole split of token shards into memory (verified by :func:`iter_tokens`: shards, counts, tokens,
    labels)."""
    token_dir = Path(token_dir)
    meta = read_token_meta(token_dir)
    grid = [int(g) for g in meta["grid"]]
    per_scale: list[list[np.ndarray]] = [[] for _ in grid]
    labels, keys, caps = [], [], []
    for s in iter_tokens(token_dir, split):
        for k, t in enumerate(s["scales"]):
            per_scale[k].append(t)
        labels.append(s["label"])
        keys.append(s["key"])
        caps.append(s["caption"])
    if not keys:
        raise TokenShardError(f"split {split!r} of {token_dir} is empty")
    classes_path = token_dir / "classes.json"
    class_names = list(read_json(classes_path)) if classes_path.is_file() else list(meta.get("class_names", []))
    return TokenData(
        scales=[torch.from_numpy(np.stack(v)) for v in per_scale],
        labels=torch.tensor(labels, dtype=torch.long),
        keys=keys,
        captions=caps,
        class_names=class_names,
        grid=grid,
    )
