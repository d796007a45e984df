"""Token shards: a prepared dataset encoded by a tokenizer (written by ``stages/tokenize.py``).

Layout of a token directory::

    <dir>/train/shard-000000.tar ...   samples: <key>.cls, <key>.json, <key>.tok0.npy ... <key>.tok{K-1}.npy
    <dir>/val/shard-000000.tar ...
    <dir>/test/shard-000000.tar ...    (the splits of the prepared dataset: the source has no test)
    <dir>/classes.json                 ["circle", "square", ...]  (index = label)
    <dir>/meta.json                    family, grid (side of each scale), vocab_size, counts per split, tokenizer

``tok{k}.npy`` is an integer array [pn_k, pn_k] (int16 when the vocabulary fits, else int32); ``json`` holds
``class_name``, ``caption`` (the caption slot: the prepared caption or null) and ``source_id``. Shards are written
with a fixed mtime, so the same tokens give byte-identical shards.
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

from ..datasets.shards import ShardError, shard_paths
from ..io import read_json

__all__ = ["TokenShardError", "TokenData", "write_token_split", "iter_tokens", "load_tokens", "read_token_meta"]

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
    A corrupt shard, or a sample whose tokens do not fit meta.json, raises :class:`TokenShardError` naming it."""
    import webdataset as wds

    token_dir = Path(token_dir)
    meta = read_token_meta(token_dir)
    grid, vocab = list(meta["grid"]), int(meta["vocab_size"])
    for path in shard_paths(token_dir, split, stage="tokenize", error=TokenShardError):
        ds = wds.WebDataset(str(path), shardshuffle=False, empty_check=False)
        try:
            for s in ds:
                key = s.get("__key__")
                need = ["cls", "json"] + [f"tok{k}.npy" for k in range(len(grid))]
                missing = [k for k in need if k not in s]
                if missing:
                    raise TokenShardError(f"token shard {path}: sample {key!r} lacks {missing}")
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
                yield {
                    "key": key,
                    "label": int(s["cls"]),
                    "class_name": meta_s.get("class_name"),
                    "caption": meta_s.get("caption"),
                    "source_id": meta_s.get("source_id"),
                    "scales": scales,
                    "shard": path.name,
                }
        except TokenShardError:
            raise
        except Exception as err:  # tarfile.ReadError, OSError, ValueError from np.load, JSON errors
            raise TokenShardError(f"corrupt token shard {path}: {type(err).__name__}: {err}") from err


def load_tokens(token_dir: str | os.PathLike, split: str) -> TokenData:
    """Load a whole split of token shards into memory; checks the sample count against meta.json."""
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
    expected = meta.get("counts", {}).get(split)
    if expected is not None and expected != len(keys):
        raise TokenShardError(
            f"{token_dir / split}: {len(keys)} samples in the shards but meta.json says {expected} (truncated shard?)"
        )
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
