"""CLIP throughput: what scoring (batched inference) and MVP's loss (encode + backward to the images) cost per image.

    python benchmarks/clip.py [--n 4096] [--device auto] [--threads N] [--smoke]
Uses the CLIP params.yaml names (``clip``: model, weights ``clip.pretrained`` = data/clip/model.pt by default,
precision, ``clip.batch_size`` for the inference batches, ``clip.device``) when its weights file exists, else the
same architecture with random weights (same cost). The differentiable encode runs at the adapt stage's batch
(``adaptation.train.batch_size``). Writes benchmarks/results/clip.json (``--smoke``: 64 images, a temporary folder).
"""
from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import argparse  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from benchmarks._common import ROOT, block, from_params, load_repo_params, save_results  # noqa: E402

DEFAULT_N = 4096
N_TEXTS = 1024
SMOKE_N = 64

declared_overrides = {
    "benchmark.n_images": f"images embedded for the inference timing ({DEFAULT_N}; {SMOKE_N} with --smoke): enough "
                          "for a steady rate",
    "benchmark.n_texts": f"texts embedded for the text timing ({N_TEXTS})",
    "benchmark.repeats": "best of 2 repeats (inference) and 3 (differentiable encode) after one warm-up",
    "benchmark.threads": "torch threads: torch's default unless --threads (params have no thread count for CLIP "
                         "inference; clip.train.num_threads is for training)",
    "benchmark.weights": "clip.pretrained when the file exists, else random weights of the same architecture",
}


def settings(params, args=None) -> dict:
    """Every setting this benchmark runs with (see benchmarks/_common.py)."""
    smoke = bool(args and getattr(args, "smoke", False))
    st = block(params, "clip", exclude=("train",))
    st.update(from_params(params, "adaptation.train.batch_size"))
    if args is not None and getattr(args, "device", None):
        st["clip.device"] = args.device
    if args is not None and getattr(args, "grad_batch", None):
        st["adaptation.train.batch_size"] = args.grad_batch
    st["benchmark.n_images"] = SMOKE_N if smoke else (getattr(args, "n", None) or DEFAULT_N)
    st["benchmark.n_texts"] = N_TEXTS
    st["benchmark.repeats"] = {"inference": 2, "grad_encode": 3}
    st["benchmark.threads"] = (getattr(args, "threads", None) if args else None) or "torch default"
    weights = ROOT / params.clip.pretrained
    st["benchmark.weights"] = str(params.clip.pretrained) if weights.is_file() else "random"
    return st


def _timed(fn, repeat: int = 3) -> float:
    fn()  # warm-up (oneDNN kernel selection)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    from genvpt.clip import build_clip, load_clip, resolve_device

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=None, help=f"images for the inference timing (default {DEFAULT_N})")
    ap.add_argument("--grad-batch", type=int, default=None, help="differentiable encode batch (default: params)")
    ap.add_argument("--device", default=None, help="default: params clip.device")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    params = load_repo_params()
    st = settings(params, args)
    if isinstance(st["benchmark.threads"], int):
        torch.set_num_threads(st["benchmark.threads"])
    cp = params.clip.model_copy(update={"device": st["clip.device"]})
    device = resolve_device(cp.device)
    if st["benchmark.weights"] != "random":
        clip = load_clip(cp.model_copy(update={"pretrained": str(ROOT / cp.pretrained)}), device=device)
        source = st["benchmark.weights"]
    else:
        clip = build_clip(cp.model, quick_gelu=bool(cp.quick_gelu), device=device, precision=cp.precision,
                          batch_size=cp.batch_size).freeze()
        source = f"random weights ({cp.pretrained} missing)"
    size = clip.image_size[0]
    n, grad_batch = st["benchmark.n_images"], st["adaptation.train.batch_size"]
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    texts = [f"a small red shape number {i} in the upper left on a striped blue background"
             for i in range(st["benchmark.n_texts"])]

    reps = st["benchmark.repeats"]
    t_img = _timed(lambda: clip.embed_images(images, batch_size=cp.batch_size), repeat=reps["inference"])
    t_txt = _timed(lambda: clip.embed_texts(texts, batch_size=cp.batch_size), repeat=reps["inference"])
    x = (images[:grad_batch].float() / 127.5 - 1).to(device)

    def grad_step() -> None:
        xi = x.clone().requires_grad_(True)
        clip.encode_images(xi).sum().backward()

    t_grad = _timed(grad_step, repeat=reps["grad_encode"])
    results = {
        "clip": cp.model,
        "weights": source,
        "device": str(device),
        "image_size": size,
        "embed_images_per_s": round(n / t_img, 1),
        "embed_texts_per_s": round(len(texts) / t_txt, 1),
        "grad_encode_batch": x.shape[0],
        "grad_encode_ms_per_image": round(1000 * t_grad / x.shape[0], 3),
    }
    print(results)
    save_results("clip", results, settings=st, declared=declared_overrides, params=params, smoke=args.smoke)


if __name__ == "__main__":
    main()
