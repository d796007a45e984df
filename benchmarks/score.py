"""Scoring throughput: time to score N generated 32-px images against the target (every metric of the score stage).

    python benchmarks/score.py [--n 10000] [--size 32] [--device auto]
Uses the trained tiny CLIP (params `clip`, data/clip/model.pt) when it exists, else the same architecture with random
weights; the real images are the prepared target (data/prepared/target) when present, else synthetic ones.
Also times writing the N images as PNGs and reading them back (what the sample / score stages do around it).
Writes benchmarks/results/score.json.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from _common import ROOT, save_results

from genvpt.metrics import METRIC_GROUPS, compute_metrics


def _images(n: int, size: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pat = torch.rand(classes, 3, size, size, generator=torch.Generator().manual_seed(99))
    labels = torch.arange(n) % classes
    x = pat[labels] + 0.2 * torch.randn(n, 3, size, size, generator=g)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8), labels


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    os.chdir(ROOT)
    from genvpt.clip import build_clip, load_clip
    from genvpt.config import load_params

    params = load_params()
    if Path(params.clip.pretrained).is_file():
        clip, clip_src = load_clip(params.clip), f"trained ({params.clip.pretrained})"
    else:
        torch.manual_seed(0)
        clip, clip_src = build_clip(params.clip.model).freeze(), f"random weights ({params.clip.model})"
    target = ROOT / "data/prepared/target"
    if (target / "classes.json").is_file():
        from genvpt.datasets.shards import load_split

        val, train = load_split(target, "val"), load_split(target, "train")
        reals, real_labels, names = val.images, val.labels, val.class_names
        train_images, train_labels = train.images, train.labels
        real_src = f"prepared target ({len(reals)} val, {len(train_images)} train)"
    else:
        names = [f"class{i}" for i in range(12)]
        reals, real_labels = _images(240, args.size, 12, 1)
        train_images, train_labels = _images(960, args.size, 12, 2)
        real_src = "synthetic (240 val, 960 train)"
    if reals.shape[-1] != args.size:
        raise SystemExit(f"the prepared target is {reals.shape[-1]} px; run with --size {reals.shape[-1]}")
    samples, labels = _images(args.n, args.size, len(names), 3)

    timings: dict[str, float] = {}
    originals = dict(METRIC_GROUPS)
    for name, fn in originals.items():  # time every metric group inside one compute_metrics call
        def timed(ctx, fn=fn, name=name):
            t = time.perf_counter()
            out = fn(ctx)
            timings[name] = round(time.perf_counter() - t, 3)
            return out

        METRIC_GROUPS[name] = timed
    mp = params.metrics
    t0 = time.perf_counter()
    m = compute_metrics(samples, reals, labels=labels, class_names=names, real_labels=real_labels,
                        train_images=train_images, train_labels=train_labels, clip_model=clip, device=args.device,
                        batch_size=mp.batch_size, kid_subsets=mp.kid_subsets, kid_subset_size=mp.kid_subset_size,
                        text_template=mp.text_template or params.caption.sentence_template, seed=mp.seed)
    total = time.perf_counter() - t0
    METRIC_GROUPS.update(originals)

    from genvpt.sampling import load_png_files, write_png

    with tempfile.TemporaryDirectory() as tmp:
        arr = samples.permute(0, 2, 3, 1).numpy()
        t0 = time.perf_counter()
        for i, im in enumerate(arr):
            write_png(Path(tmp) / f"{i:06d}.png", im)
        write_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        back = load_png_files(sorted(Path(tmp).glob("*.png")))
        read_s = time.perf_counter() - t0
        assert torch.equal(back, samples)

    save_results("score", {
        "n_samples": args.n,
        "image_size": args.size,
        "clip": clip_src,
        "reals": real_src,
        "kid_subsets": mp.kid_subsets,
        "kid_subset_size": min(mp.kid_subset_size, len(reals)),
        "score_seconds_total": round(total, 2),
        "score_seconds_per_group": timings,
        "samples_per_second": round(args.n / total, 1),
        "png_write_seconds": round(write_s, 2),
        "png_read_seconds": round(read_s, 2),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "metrics": {k: round(float(v), 5) for k, v in m.items()},
    })


if __name__ == "__main__":
    main()
