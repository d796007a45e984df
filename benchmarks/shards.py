"""Shard throughput: images/s written by the prepare stage and read back (decoded) from WebDataset shards.

    python benchmarks/shards.py [--images-per-class 300] [--image-size 32]
Writes benchmarks/results/shards.json.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import save_results

from genvpt.config import DatasetParams, PrepareParams
from genvpt.datasets import iter_split, load_split
from genvpt.datasets.prepare import prepare_dataset


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images-per-class", type=int, default=300)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--domain", default="textured")
    args = ap.parse_args()
    p = DatasetParams(name="shapes", image_size=args.image_size, shapes={"images_per_class": args.images_per_class, "domain": args.domain})
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "prep"
        t0 = time.perf_counter()
        stats = prepare_dataset(p, PrepareParams(shard_maxcount=1000), out)
        write_s = time.perf_counter() - t0
        n = stats["splits"]["train"]["images"] + stats["splits"]["val"]["images"]
        t0 = time.perf_counter()
        m = sum(1 for s in ("train", "val") for _ in iter_split(out, s))
        read_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        k = len(load_split(out, "train")) + len(load_split(out, "val"))
        load_s = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in out.rglob("*.tar"))
    assert m == n == k
    save_results(
        "shards",
        {
            "images": n,
            "image_size": args.image_size,
            "domain": args.domain,
            "shard_bytes": size,
            "write_images_per_s (render + PNG encode + tar)": round(n / write_s, 1),
            "read_images_per_s (webdataset + PNG decode)": round(n / read_s, 1),
            "load_split_images_per_s (to uint8 tensor)": round(n / load_s, 1),
        },
    )


if __name__ == "__main__":
    main()
