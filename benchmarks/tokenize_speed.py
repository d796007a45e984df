"""Tokenizer throughput: encode (image -> tokens) and decode (tokens -> image) images/s.

* the embedded default's tokenizers (params.yaml sizes, 32 px): the trained files in data/tokenizers/ when present,
  else the same architecture with random weights (speed does not depend on the weights);
* VAR's official tokenizer size (vae_ch160v4096z32, 108.9 M parameters) at 256 px with random weights.

    .venv/bin/python benchmarks/tokenize_speed.py [--var-batch 2] [--repeats 3]

Writes benchmarks/results/tokenize.json. Device: cuda when available, else CPU (torch threads as set by
tokenizer.num_threads, overridable with --threads).
"""
from __future__ import annotations

import os
import sys

# This file's name shadows the standard library's ``tokenize`` (imported by ``inspect``): move the benchmarks folder
# from the front of sys.path to its end before anything else is imported.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE] + [_HERE]

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from _common import ROOT, save_results  # noqa: E402  (puts the repo on sys.path)

import torch  # noqa: E402

from genvpt.config import load_params
from genvpt.tokenizers import MSVQConfig, MultiScaleVQVAE, decode_tokens, encode_tokens, load_tokenizer
from genvpt.tokenizers.train import build_model, model_config, resolve_device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def measure(model, image_size: int, batch: int, repeats: int, device: torch.device) -> dict:
    model.to(device).eval()
    x = torch.rand(batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(0)).mul(2).sub(1).to(device)
    toks = encode_tokens(model, x)  # warm-up
    decode_tokens(model, toks)
    _sync(device)
    enc, dec = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        toks = encode_tokens(model, x)
        _sync(device)
        t1 = time.perf_counter()
        decode_tokens(model, toks)
        _sync(device)
        t2 = time.perf_counter()
        enc.append(t1 - t0)
        dec.append(t2 - t1)
    enc_s, dec_s = min(enc), min(dec)  # best of repeats: least disturbed by other processes
    return {
        "image_size": image_size,
        "batch": batch,
        "repeats": repeats,
        "tokens_per_image": sum(t.shape[1] for t in toks),
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "encode_images_per_s": round(batch / enc_s, 2),
        "decode_images_per_s": round(batch / dec_s, 2),
        "encode_ms_per_batch": round(enc_s * 1e3, 1),
        "decode_ms_per_batch": round(dec_s * 1e3, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256, help="batch of the embedded tokenizers")
    ap.add_argument("--var-batch", type=int, default=2, help="batch of the official-size VAR tokenizer")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-var", action="store_true")
    args = ap.parse_args()
    os.chdir(ROOT)
    params = load_params()
    tp = params.tokenizer
    threads = args.threads or tp.num_threads
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(tp.device)
    size = params.source.image_size
    results: dict = {"device": str(device), "load_average_1m_at_start": round(os.getloadavg()[0], 2), "runs": {}}
    for family in ("vqgan", "msvq"):
        path = Path(f"data/tokenizers/{family}/model.pt")
        if path.is_file():
            model, weights = load_tokenizer(path, family=family), str(path)
        else:
            torch.manual_seed(0)
            model, weights = build_model(family, model_config(family, getattr(tp, family), size)), "random"
        r = measure(model, size, args.batch, args.repeats, device)
        r["weights"] = weights
        results["runs"][f"embedded_{family}_{size}px"] = r
        print(family, r)
    if not args.skip_var:
        torch.manual_seed(0)
        var = MultiScaleVQVAE(MSVQConfig.var_256())
        r = measure(var, 256, args.var_batch, args.repeats, device)
        r["weights"] = "random (official vae_ch160v4096z32 architecture)"
        results["runs"]["var_vae_ch160v4096z32_256px"] = r
        print("var", r)
    results["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    save_results("tokenize", results)


if __name__ == "__main__":
    main()
