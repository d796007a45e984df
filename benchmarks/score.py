"""Scoring throughput: time to score N generated images against the target (every metric of the score stage, with
every ``metrics`` setting of params.yaml, as the score stage passes them).

    python benchmarks/score.py [--n 10000] [--device auto] [--smoke]
Uses the CLIP params.yaml names (``clip``; data/clip/model.pt by default) when its weights exist, else the same
architecture with random weights; the real images are the prepared target's ``metrics.real_split`` split (and its
train split for the probe and the diversity centres) when data/prepared/target exists, else synthetic ones of
``dataset.image_size``. The samples are synthetic (random class patterns plus noise). Also times writing the N
images as PNGs and reading them back (what the sample / score stages do around it).
Writes benchmarks/results/score.json (``--smoke``: 120 samples, a temporary folder).
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

import torch  # noqa: E402

from benchmarks._common import ROOT, block, from_params, load_repo_params, save_results  # noqa: E402

DEFAULT_N = 10000
SMOKE_N = 120
SYNTHETIC = {"classes": 12, "reals": 240, "train": 960}
TARGET = ROOT / "data" / "prepared" / "target"

declared_overrides = {
    "benchmark.n_samples": f"synthetic samples scored ({DEFAULT_N}; {SMOKE_N} with --smoke): a throughput "
                           "measurement, not a sample set of sample.images_per_class",
    "benchmark.reals": "the prepared target when it exists, else synthetic reals "
                       f"({SYNTHETIC['reals']} compared, {SYNTHETIC['train']} train, {SYNTHETIC['classes']} classes)",
    "benchmark.weights": "clip.pretrained when the file exists, else random weights of the same architecture",
}


def settings(params, args=None) -> dict:
    """Every setting this benchmark runs with (see benchmarks/_common.py)."""
    smoke = bool(args and getattr(args, "smoke", False))
    st = block(params, "metrics")
    st.update(block(params, "clip", exclude=("train",)))
    st.update(from_params(params, "dataset.image_size", "caption.sentence_template"))
    if args is not None and getattr(args, "device", None):
        st["metrics.device"] = args.device
    st["benchmark.n_samples"] = SMOKE_N if smoke else (getattr(args, "n", None) or DEFAULT_N)
    st["benchmark.reals"] = (f"data/prepared/target ({params.metrics.real_split}; train)"
                             if (TARGET / "classes.json").is_file() else "synthetic")
    st["benchmark.weights"] = str(params.clip.pretrained) if (ROOT / params.clip.pretrained).is_file() else "random"
    return st


def _images(n: int, size: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pat = torch.rand(classes, 3, size, size, generator=torch.Generator().manual_seed(99))
    labels = torch.arange(n) % classes
    x = pat[labels] + 0.2 * torch.randn(n, 3, size, size, generator=g)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8), labels


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=None, help=f"samples (default {DEFAULT_N})")
    ap.add_argument("--device", default=None, help="default: params metrics.device")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    os.chdir(ROOT)
    from genvpt.clip import build_clip, load_clip
    from genvpt.metrics import METRIC_GROUPS, compute_metrics
    from genvpt.training import resolve_device

    params = load_repo_params()
    st = settings(params, args)
    cp = params.clip
    if st["benchmark.weights"] != "random":
        clip, clip_src = load_clip(cp), f"trained ({cp.pretrained})"
    else:
        torch.manual_seed(0)
        clip = build_clip(cp.model, quick_gelu=bool(cp.quick_gelu), precision=cp.precision,
                          batch_size=cp.batch_size).freeze()
        clip_src = f"random weights ({cp.model})"
    mp = params.metrics.model_copy(update={"device": st["metrics.device"]})
    size = st["dataset.image_size"]
    if st["benchmark.reals"] != "synthetic":
        from genvpt.datasets.shards import load_split

        real = load_split(TARGET, mp.real_split)
        train = real if mp.real_split == "train" else load_split(TARGET, "train")
        reals, real_labels, names = real.images, real.labels, real.class_names
        train_images, train_labels = train.images, train.labels
        real_src = f"prepared target ({len(reals)} {mp.real_split}, {len(train_images)} train)"
    else:
        names = [f"class{i}" for i in range(SYNTHETIC["classes"])]
        reals, real_labels = _images(SYNTHETIC["reals"], size, len(names), 1)
        train_images, train_labels = _images(SYNTHETIC["train"], size, len(names), 2)
        real_src = f"synthetic ({SYNTHETIC['reals']} {mp.real_split}, {SYNTHETIC['train']} train)"
    if reals.shape[-1] != size:
        raise SystemExit(f"the prepared target is {reals.shape[-1]} px but dataset.image_size is {size}")
    n = st["benchmark.n_samples"]
    samples, labels = _images(n, size, len(names), 3)

    timings: dict[str, float] = {}
    originals = dict(METRIC_GROUPS)
    for name, fn in originals.items():  # time every metric group inside one compute_metrics call
        def timed(ctx, fn=fn, name=name):
            t = time.perf_counter()
            out = fn(ctx)
            timings[name] = round(time.perf_counter() - t, 3)
            return out

        METRIC_GROUPS[name] = timed
    device = resolve_device(mp.device, "metrics.device")
    t0 = time.perf_counter()
    try:  # every metrics setting, as genvpt/metrics/scoring.py passes them
        m = compute_metrics(
            samples, reals,
            fid=mp.fid, isc=mp.isc, kid=mp.kid, prc=mp.prc, clip_score=mp.clip_score, diversity=mp.diversity,
            class_accuracy=mp.class_accuracy,
            labels=labels, class_names=names, real_labels=real_labels,
            train_images=train_images, train_labels=train_labels,
            inception_weights=mp.inception_weights, clip_model=clip,
            lpips_weights=mp.lpips_weights, lpips_vgg_weights=mp.lpips_vgg_weights, device=device,
            batch_size=mp.batch_size, isc_splits=mp.isc_splits, kid_subsets=mp.kid_subsets,
            kid_subset_size=mp.kid_subset_size, prc_neighborhood=mp.prc_neighborhood,
            clip_score_weight=mp.clip_score_weight,
            text_template=mp.text_template or params.caption.sentence_template,
            diversity_centers_per_class=mp.diversity_centers_per_class,
            diversity_max_per_cluster=mp.diversity_max_per_cluster, lpips_resize=mp.lpips_resize,
            probe_c=mp.probe_c, probe_max_iter=mp.probe_max_iter, seed=mp.seed,
        )
    finally:
        METRIC_GROUPS.update(originals)
    total = time.perf_counter() - t0

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
        "n_samples": n,
        "image_size": size,
        "clip": clip_src,
        "reals": real_src,
        "kid_subset_size_used": min(mp.kid_subset_size, len(reals), n),
        "score_seconds_total": round(total, 2),
        "score_seconds_per_group": timings,
        "samples_per_second": round(n / total, 1),
        "png_write_seconds": round(write_s, 2),
        "png_read_seconds": round(read_s, 2),
        "metrics": {k: round(float(v), 5) for k, v in m.items()},
    }, settings=st, declared=declared_overrides, params=params, smoke=args.smoke)


if __name__ == "__main__":
    main()
