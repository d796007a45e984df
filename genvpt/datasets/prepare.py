"""The prepare stage's work: a dataset block -> train/val/test WebDataset shards, manifest, rejects, stats.

Everything is written into a temporary folder that replaces the output folder in one rename at the end, so a crash
never leaves a partial shard set that looks complete. The outputs depend only on the params (no timestamps), so
identical params give byte-identical files.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from .params import DatasetParams, PrepareParams
from ..io import atomic_dir, write_json
from .base import Reject
from .registry import Item, build_dataset, select_items
from .shards import SPLITS, encode_png, write_split

log = logging.getLogger(__name__)

__all__ = ["PrepareError", "prepare_dataset", "MANIFEST_SCHEMA", "REJECTS_SCHEMA"]

MANIFEST_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("split", pa.string()),
        ("shard", pa.string()),
        ("label", pa.int64()),
        ("class_name", pa.string()),
        ("caption", pa.string()),
        ("source_id", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("sha256", pa.string()),
    ]
)
REJECTS_SCHEMA = pa.schema([("path", pa.string()), ("reason", pa.string())])


class PrepareError(RuntimeError):
    pass


def _samples(items: list[Item], split: str, label_map: dict[int, int], class_names: list[str], rejects: list[Reject], desc: str):
    n = 0
    for it in tqdm(items, desc=desc, unit="img", leave=False, mininterval=2.0):
        rec = it.load()
        if isinstance(rec, Reject):
            rejects.append(rec)
            continue
        label = label_map[rec.label]
        yield {
            "key": f"{split}_{n:07d}",
            "png": encode_png(rec.image),
            "label": label,
            "class_name": class_names[label],
            "caption": rec.caption,
            "source_id": rec.source_id,
            "width": rec.image.width,
            "height": rec.image.height,
        }
        n += 1


def _write_parquet(path: Path, rows: list[dict], schema: pa.Schema) -> None:
    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(table, path, compression="zstd")


def prepare_dataset(p: DatasetParams, prep: PrepareParams, out_dir: str | Path, block: str = "dataset") -> dict:
    """Write the prepared folder for dataset params ``p`` at ``out_dir``; return the stats dict."""
    t0 = time.perf_counter()
    ds = build_dataset(p)
    sel = select_items(ds.items(), ds.class_names, p)
    if not sel.train:
        raise PrepareError(f"{block}: no training images selected from {p.name} ({sel.listed} listed, {len(sel.rejects)} rejected)")
    rejects: list[Reject] = list(sel.rejects)
    manifest: list[dict] = []
    with atomic_dir(out_dir) as tmp:
        for split in SPLITS:
            items = sel.split(split)
            if not items:  # no folder for an empty split (the source's test_fraction: 0)
                continue
            gen = _samples(items, split, sel.label_map, sel.class_names, rejects, f"prepare {block}/{split}")
            rows = write_split(gen, tmp / split, prep.shard_maxcount)
            manifest += [{"split": split, **r} for r in rows]
        n_bad = len(rejects)
        frac = n_bad / max(1, sel.listed)
        if frac > prep.max_reject_fraction:
            reasons = Counter(r.reason.split(":")[0] for r in rejects).most_common(5)
            examples = "\n".join(f"  {r.path}: {r.reason}" for r in rejects[:10])
            raise PrepareError(
                f"{block}: {n_bad} of {sel.listed} inputs rejected ({frac:.1%}), more than "
                f"prepare.max_reject_fraction={prep.max_reject_fraction:.1%}. Most common reasons: {reasons}\n{examples}"
            )
        fractions = {"val": p.val_fraction, "test": p.test_fraction}
        for split in ("val", "test"):
            wanted = sel.origin[split] == "shipped" or fractions[split] > 0
            if wanted and not any(r["split"] == split for r in manifest):
                if sel.origin[split] == "shipped":
                    raise PrepareError(f"{block}: every image of the source's own {split} split was rejected")
                raise PrepareError(
                    f"{block}: the {split} split is empty: no class has an image to spare for it "
                    f"({block}.{split}_fraction={fractions[split]}; one image of each class stays in train, test is "
                    f"served before val). Use more images per class (later stages read {split})."
                )
        write_json(tmp / "classes.json", sel.class_names)
        _write_parquet(tmp / "manifest.parquet", manifest, MANIFEST_SCHEMA)
        _write_parquet(tmp / "rejects.parquet", [{"path": r.path, "reason": r.reason} for r in rejects], REJECTS_SCHEMA)
        stats = {
            "dataset": p.name,
            "block": block,
            "image_size": p.image_size,
            "classes": len(sel.class_names),
            "listed": sel.listed,
            "rejected": n_bad,
            "splits": {
                s: {
                    "images": sum(r["split"] == s for r in manifest),
                    "shards": len({r["shard"] for r in manifest if r["split"] == s}),
                    "per_class": dict(sorted(Counter(r["class_name"] for r in manifest if r["split"] == s).items())),
                    "origin": sel.origin[s],
                }
                for s in SPLITS
            },
        }
        write_json(tmp / "stats.json", stats)
    dt = time.perf_counter() - t0
    log.info(
        "%s: wrote %d images (%d rejected) to %s in %.1fs (%.0f images/s)",
        block, len(manifest), n_bad, out_dir, dt, len(manifest) / max(dt, 1e-9),
    )
    return stats
