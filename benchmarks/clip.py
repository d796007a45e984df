"""CLIP throughput: what scoring (batched inference) and MVP's loss (encode + backward to the images) cost per image.

    python benchmarks/clip.py [--n 4096] [--device auto] [--threads N]
Uses the trained tiny CLIP (params `clip`, data/clip/model.pt) when it exists, else the same architecture with random
weights (same cost). Writes benchmarks/results/clip.json.
"""
from __future__ import annotations

import argparse
import time

import torch
from _common import ROOT, save_results

from genvpt.clip import build_clip, load_clip, resolve_device
from genvpt.config import load_params


def _timed(fn, repeat: int = 3) -> float:
    fn()  # warm-up (oneDNN kernel selection)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=4096, help="images for the inference timing")
    ap.add_argument("--grad-batch", type=int, default=32, help="batch of the differentiable encode (MVP's loss)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    params = load_params(ROOT / "params.yaml").clip
    device = resolve_device(args.device)
    weights = ROOT / params.pretrained
    if weights.is_file():
        clip = load_clip(params.model_copy(update={"pretrained": str(weights)}), device=device)
        source = str(weights.relative_to(ROOT))
    else:
        clip = build_clip(params.model, device=device).freeze()
        source = "random weights (data/clip/model.pt missing)"
    size = clip.image_size[0]
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.n, 3, size, size), dtype=torch.uint8, generator=g)
    texts = [f"a small red shape number {i} in the upper left on a striped blue background" for i in range(1024)]

    t_img = _timed(lambda: clip.embed_images(images, batch_size=params.batch_size), repeat=2)
    t_txt = _timed(lambda: clip.embed_texts(texts, batch_size=params.batch_size), repeat=2)
    x = (images[: args.grad_batch].float() / 127.5 - 1).to(device)

    def grad_step() -> None:
        xi = x.clone().requires_grad_(True)
        clip.encode_images(xi).sum().backward()

    t_grad = _timed(grad_step)
    results = {
        "clip": params.model,
        "weights": source,
        "device": str(device),
        "image_size": size,
        "embed_images_per_s": round(args.n / t_img, 1),
        "embed_texts_per_s": round(len(texts) / t_txt, 1),
        "grad_encode_batch": args.grad_batch,
        "grad_encode_ms_per_image": round(1000 * t_grad / args.grad_batch, 3),
    }
    print(results)
    save_results("clip", results)


if __name__ == "__main__":
    main()
