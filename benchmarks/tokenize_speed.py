"""Tokenizer throughput: encode (image -> tokens) and decode (tokens -> image) images/s.

* the embedded default's tokenizers as params.yaml sizes them (``tokenizer.vqgan`` / ``tokenizer.msvq`` at
  ``source.image_size``, batch ``tokenizer.tokenize.batch_size``, the tokenize stage's): the trained files in
  data/tokenizers/ when present, else the same architecture with random weights (speed does not depend on them);
* VAR's official tokenizer size (vae_ch160v4096z32, 108.9 M parameters) at 256 px with random weights.

    .venv/bin/python benchmarks/tokenize_speed.py [--var-batch 2] [--repeats 3] [--smoke]

Writes benchmarks/results/tokenize.json (``--smoke``: embedded tokenizers only, batch 4, 1 repeat, a temporary
folder). Device ``tokenizer.device`` (auto: cuda when available), torch threads ``tokenizer.num_threads``
(overridable with --threads).
"""
from __future__ import annotations

import os
import sys

# This file's name shadows the standard library's ``tokenize`` (imported by ``inspect``): take the benchmarks folder
# off sys.path before anything else is imported, and import from the repository root.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from benchmarks._common import (  # noqa: E402
    ROOT,
    TOKENIZER_ARCH_EXCLUDE,
    block,
    embedded_tokenizer,
    from_params,
    load_repo_params,
    save_results,
)
from genvpt.tokenizers import MSVQConfig, MultiScaleVQVAE, decode_tokens, encode_tokens, load_tokenizer  # noqa: E402
from genvpt.tokenizers.train import resolve_device  # noqa: E402

DEFAULT_REPEATS = 3
DEFAULT_VAR_BATCH = 2
SMOKE = {"batch": 4, "repeats": 1}

declared_overrides = {
    "benchmark.repeats": f"best of {DEFAULT_REPEATS} timed repeats after a warm-up (1 with --smoke)",
    "benchmark.weights": "data/tokenizers/<family>/model.pt when present, else random weights of params' sizes",
    "official.msvq": "VAR's released tokenizer size (MSVQConfig.var_256(): vae_ch160v4096z32 at 256 px), random "
                     "weights: the cost of the real tokenizer, which params do not size",
    "official.batch": f"{DEFAULT_VAR_BATCH} images per batch at the official size (256 px on a CPU)",
    "official.run": "whether the official-size tokenizer runs (--skip-var / --smoke)",
}


def settings(params, args=None) -> dict:
    """Every setting this benchmark runs with (see benchmarks/_common.py)."""
    smoke = bool(args and getattr(args, "smoke", False))
    st = {"source.image_size": params.source.image_size}
    for fam in ("vqgan", "msvq"):
        st.update(block(params, f"tokenizer.{fam}", exclude=TOKENIZER_ARCH_EXCLUDE))
    st.update(from_params(params, "tokenizer.device", "tokenizer.num_threads", "tokenizer.tokenize.batch_size"))
    if args is not None:
        if getattr(args, "batch", None):
            st["tokenizer.tokenize.batch_size"] = args.batch
        if getattr(args, "threads", None):
            st["tokenizer.num_threads"] = args.threads
    if smoke:
        st["tokenizer.tokenize.batch_size"] = SMOKE["batch"]
    st["benchmark.repeats"] = SMOKE["repeats"] if smoke else (getattr(args, "repeats", None) or DEFAULT_REPEATS)
    st["benchmark.weights"] = {fam: (f"data/tokenizers/{fam}/model.pt"
                                     if (ROOT / f"data/tokenizers/{fam}/model.pt").is_file() else "random")
                               for fam in ("vqgan", "msvq")}
    st["official.msvq"] = MSVQConfig.var_256().to_dict()
    st["official.batch"] = (getattr(args, "var_batch", None) if args else None) or DEFAULT_VAR_BATCH
    st["official.run"] = not (smoke or bool(args and getattr(args, "skip_var", False)))
    return st


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
    ap.add_argument("--batch", type=int, default=None, help="batch of the embedded tokenizers (default: params)")
    ap.add_argument("--var-batch", type=int, default=None, help="batch of the official-size VAR tokenizer")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-var", action="store_true")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    os.chdir(ROOT)
    params = load_repo_params()
    st = settings(params, args)
    if st["tokenizer.num_threads"]:
        torch.set_num_threads(int(st["tokenizer.num_threads"]))
    device = resolve_device(st["tokenizer.device"])
    size, batch = int(st["source.image_size"]), int(st["tokenizer.tokenize.batch_size"])
    repeats = int(st["benchmark.repeats"])
    results: dict = {"device": str(device), "runs": {}}
    for family in ("vqgan", "msvq"):
        path = Path(f"data/tokenizers/{family}/model.pt")
        torch.manual_seed(0)
        model, cfg = embedded_tokenizer(st, family)
        weights = "random"
        if st["benchmark.weights"][family] != "random":
            trained = load_tokenizer(path, family=family)
            if trained.config == cfg:  # the trained file has params' sizes: time it (same cost, real codes)
                model, weights = trained, str(path)
            else:
                weights = f"random ({path} has other sizes than params.yaml: {trained.config})"
        r = measure(model, size, batch, repeats, device)
        r["weights"] = weights
        results["runs"][f"embedded_{family}_{size}px"] = r
        print(family, r)
    if st["official.run"]:
        torch.manual_seed(0)
        var = MultiScaleVQVAE(MSVQConfig(**{k: tuple(v) if isinstance(v, list) else v
                                           for k, v in st["official.msvq"].items()}))
        r = measure(var, 256, int(st["official.batch"]), repeats, device)
        r["weights"] = "random (official vae_ch160v4096z32 architecture)"
        results["runs"]["var_vae_ch160v4096z32_256px"] = r
        print("var", r)
    save_results("tokenize", results, settings=st, declared=declared_overrides, params=params, smoke=args.smoke)


if __name__ == "__main__":
    main()
