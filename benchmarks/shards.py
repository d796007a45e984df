"""Shard throughput: images/s written by the prepare stage and read back (decoded) from WebDataset shards.

    python benchmarks/shards.py [--images-per-class N] [--smoke]
Prepares params.yaml's target ``dataset`` block with its ``prepare`` block (what the prepare stage does) into a
temporary folder, then reads every split back. Writes benchmarks/results/shards.json (``--smoke``: 5 images per
class, a temporary folder).
"""
from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from benchmarks._common import block, load_repo_params, save_results, unflatten  # noqa: E402

SMOKE_PER_CLASS = 5

declared_overrides = {}  # everything comes from params.yaml's dataset and prepare blocks


def settings(params, args=None) -> dict:
    """Every setting this benchmark runs with (see benchmarks/_common.py)."""
    st = block(params, "dataset")
    st.update(block(params, "prepare"))
    smoke = bool(args and getattr(args, "smoke", False))
    per_class = SMOKE_PER_CLASS if smoke else (getattr(args, "images_per_class", None) if args else None)
    if per_class:
        st["dataset.shapes.images_per_class"] = per_class
    return st


def main() -> None:
    from genvpt.config import DatasetParams, PrepareParams
    from genvpt.datasets import iter_split, load_split
    from genvpt.datasets.prepare import prepare_dataset

    ap = argparse.ArgumentParser()
    ap.add_argument("--images-per-class", type=int, default=None, help="shapes only (default: params)")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    params = load_repo_params()
    st = settings(params, args)
    p = DatasetParams.model_validate(unflatten(st, "dataset"))
    prep = PrepareParams.model_validate(unflatten(st, "prepare"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "prep"
        t0 = time.perf_counter()
        stats = prepare_dataset(p, prep, out)
        write_s = time.perf_counter() - t0
        splits = [s for s, v in stats["splits"].items() if v.get("images")]
        n = sum(stats["splits"][s]["images"] for s in splits)
        t0 = time.perf_counter()
        m = sum(1 for s in splits for _ in iter_split(out, s))
        read_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        k = sum(len(load_split(out, s)) for s in splits)
        load_s = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in out.rglob("*.tar"))
    assert m == n == k, (m, n, k)
    save_results(
        "shards",
        {
            "images": n,
            "splits": {s: stats["splits"][s]["images"] for s in splits},
            "dataset": p.name,
            "image_size": p.image_size,
            "shard_bytes": size,
            "write_images_per_s (render + PNG encode + tar)": round(n / write_s, 1),
            "read_images_per_s (webdataset + PNG decode)": round(n / read_s, 1),
            "load_split_images_per_s (to uint8 tensor)": round(n / load_s, 1),
        },
        settings=st, declared=declared_overrides, params=params, smoke=args.smoke,
    )


if __name__ == "__main__":
    main()
