"""Sampling speed of the three generator families, with and without the KV cache, and peak memory.

    python benchmarks/sample.py [--threads N] [--only default|d16] [--batch-size 8] [--smoke]

Random weights, token sampling only (the tokenizer decode is timed separately at the default size).
Each measurement runs in a fresh subprocess so that its peak memory (max RSS on CPU, peak allocated on CUDA) is its own.

Sizes:
* ``default``: the embedded default exactly as params.yaml builds it (``generator.<family>`` sizes over the
  ``tokenizer.vqgan`` / ``tokenizer.msvq`` grids and vocabularies at ``source.image_size``, as many classes as the
  source, through the pretrain stages' own builders) and sampled with ``generator.<family>.sample``.
* ``d16``: VAR-d16 (16 blocks, width 1024, 16 heads, 4096 codes, the 10 scales of 256 px) and AR / MaskGIT of the
  same depth and width over 16x16 tokens with 1024 codes, 1000 classes; sampled with params'
  ``generator.<family>.sample`` except, to stay short on a CPU, guidance off (cfg 0: no unconditional branch;
  guidance doubles cached and uncached runs alike) and MaskGIT at 2 decoding steps (time is linear in steps). AR runs
  the full 16x16 grid with the cache, and cache on/off is compared on the first 36 tokens (a 6x6 grid); MaskGIT has
  no KV cache (bidirectional: every step re-reads the whole sequence).

Every setting is in the results (``settings``; ``declared_overrides`` for those params.yaml does not give).
Writes benchmarks/results/sample.json (``--smoke``: default size, batch 2, a temporary folder).
"""
from __future__ import annotations

import os
import sys

# Run as a script, this folder is sys.path[0]; a module named like a standard-library one would shadow the standard
# library's module (imported by torch), so import from the repository root instead.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from benchmarks._common import (  # noqa: E402
    NUM_CLASSES_WHY,
    embedded_generator,
    embedded_settings,
    embedded_tokenizer,
    load_repo_params,
    save_results,
)

DEFAULT_SIZE = "default"
D16 = "d16"
FAMILIES = ("ar", "maskgit", "var")
DEFAULT_BATCH = 8
SMOKE_BATCH = 2

# the published sizes of the d16 rows (not params: params size the embedded default)
D16_SIZES = {
    "var": {"depth": 16, "vocab_size": 4096, "Cvae": 32, "num_classes": 1000,
            "patch_nums": [1, 2, 3, 4, 5, 6, 8, 10, 13, 16]},
    "ar": {"vocab_size": 1024, "grid": 16, "num_classes": 1000, "n_layer": 16, "n_head": 16, "n_embd": 1024,
           "block_size": 256},
    "maskgit": {"vocab_size": 1024, "grid": 16, "num_classes": 1000, "hidden_dim": 1024, "depth": 16, "heads": 16,
                "mlp_dim": 4096, "dropout": 0.0},
}
D16_SAMPLE_OVERRIDES = {"ar": {"cfg": 0.0}, "maskgit": {"cfg": 0.0, "steps": 2}, "var": {"cfg": 0.0}}
D16_AR_CACHE_GRID = 6

declared_overrides = {
    "benchmark.batch_size": f"images per sample() call: {DEFAULT_BATCH} ({SMOKE_BATCH} with --smoke), not the sample "
                            "stage's sample.batch_size, so that the d16 sizes finish on a CPU; results are per image",
    "benchmark.weights": "random weights: sampling time does not depend on them",
    "benchmark.sizes": "which of the two sizes run (--only / --smoke)",
    "benchmark.num_classes": NUM_CLASSES_WHY,
    "d16.sizes": "the published sizes (VAR-d16, and AR / MaskGIT of its depth and width), not the embedded default's",
    "d16.ar.sample": "params' generator.ar.sample with cfg 0 (no unconditional branch at d16 on a CPU)",
    "d16.maskgit.sample": "params' generator.maskgit.sample with cfg 0 and 2 decoding steps (time is linear in steps)",
    "d16.var.sample": "params' generator.var.sample with cfg 0 (no unconditional branch at d16 on a CPU)",
    "d16.ar.cache_comparison_grid": "the d16 AR's cache on/off is compared on a 6x6 prefix (uncached 16x16 takes too "
                                    "long on a CPU)",
}


def settings(params, args=None) -> dict:
    """Every setting this benchmark runs with (see benchmarks/_common.py)."""
    smoke = bool(args and getattr(args, "smoke", False))
    st = embedded_settings(params, FAMILIES)
    threads = getattr(args, "threads", None) if args else None  # --threads 0: torch's default
    st["generator.num_threads"] = params.generator.num_threads if threads is None else (threads or None)
    st["benchmark.batch_size"] = SMOKE_BATCH if smoke else (args.batch_size if args else DEFAULT_BATCH)
    st["benchmark.weights"] = "random"
    only = DEFAULT_SIZE if smoke else (getattr(args, "only", None) if args else None)
    st["benchmark.sizes"] = [only] if only else [DEFAULT_SIZE, D16]
    st["d16.sizes"] = D16_SIZES
    for fam in FAMILIES:
        st[f"d16.{fam}.sample"] = {**params.generator.family(fam).sample.model_dump(), **D16_SAMPLE_OVERRIDES[fam]}
    st["d16.ar.cache_comparison_grid"] = D16_AR_CACHE_GRID
    return st


def var_cache_flop_ratio(patch_nums, width: int) -> float:
    """Uncached / KV-cached multiply-adds of one VAR sampling pass (no guidance): the upper bound on the speed-up.

    Scale k adds n_k = p_k^2 tokens to a prefix of L_k tokens. With the cache a block runs its projections and MLP
    (12 C^2 per token) on the n_k new tokens and attends them to all L_k; without it, it re-runs all L_k tokens and
    their L_k x L_k attention (2 C per query-key pair: scores and weighted sum)."""
    n = [p * p for p in patch_nums]
    L = [sum(n[: i + 1]) for i in range(len(n))]
    C = width
    cached = sum(nk * 12 * C * C + nk * Lk * 2 * C for nk, Lk in zip(n, L))
    uncached = sum(Lk * 12 * C * C + Lk * Lk * 2 * C for Lk in L)
    return uncached / cached


def _cases(batch: int, sizes: list[str]) -> list[dict]:
    c = []
    for size in (DEFAULT_SIZE, D16):
        if size not in sizes:
            continue
        for cache in (True, False):
            c.append({"size": size, "family": "var", "cache": cache, "batch": batch})
        c.append({"size": size, "family": "ar", "cache": True, "batch": batch})
        if size == DEFAULT_SIZE:
            c.append({"size": size, "family": "ar", "cache": False, "batch": batch})
        else:  # cache on/off on a 6x6 prefix of the d16-size AR
            c.append({"size": size, "family": "ar", "cache": True, "batch": batch, "grid": D16_AR_CACHE_GRID})
            c.append({"size": size, "family": "ar", "cache": False, "batch": batch, "grid": D16_AR_CACHE_GRID})
        c.append({"size": size, "family": "maskgit", "cache": None, "batch": batch})
    if DEFAULT_SIZE in sizes:
        c.append({"size": DEFAULT_SIZE, "family": "decode", "cache": None, "batch": batch})
    return c


def _build(case: dict, st: dict):
    """(model, tokenizer(s), sampling kwargs) of one case, from the settings only."""
    from genvpt.generators import GPT, MaskGIT, VAR, ARConfig, MaskGITConfig, build_var_config

    fam, size = case["family"], case["size"]
    torch.manual_seed(0)
    if size == DEFAULT_SIZE:
        if fam == "decode":
            return None, (embedded_tokenizer(st, "vqgan")[0], embedded_tokenizer(st, "msvq")[0]), {}
        model, tok, kw = embedded_generator(st, fam)
        return model, (tok if fam == "var" else None), kw
    d16, kw = st["d16.sizes"][fam], dict(st[f"d16.{fam}.sample"])
    if fam == "ar":
        return GPT(ARConfig(**{**d16, "grid": case.get("grid", d16["grid"])})), None, kw
    if fam == "maskgit":
        return MaskGIT(MaskGITConfig(**d16)), None, kw
    if fam == "var":
        cfg = dict(d16)
        m = VAR(build_var_config(cfg.pop("depth"), patch_nums=cfg.pop("patch_nums"), **cfg))
        return m, _QuantizerStub(m.cfg), kw
    raise ValueError(case)


class _QuantizerStub(torch.nn.Module):
    """VAR's quantizer steps at d16 size (codebook lookup, bicubic upsample, area downsample) without building the
    109 M-parameter VAE, whose convolutions VAR's sampling loop does not touch (phi is omitted: 4 tiny 3x3 convs)."""

    def __init__(self, cfg):
        super().__init__()
        self.embedding = torch.nn.Embedding(cfg.vocab_size, cfg.Cvae)
        self.pns = cfg.patch_nums

    def get_next_autoregressive_input(self, si, SN, f_hat, h):
        import torch.nn.functional as F

        HW = self.pns[-1]
        if si != SN - 1:
            f_hat.add_(F.interpolate(h, size=(HW, HW), mode="bicubic"))
            return f_hat, F.interpolate(f_hat, size=(self.pns[si + 1],) * 2, mode="area")
        f_hat.add_(h)
        return f_hat, f_hat


def run_case(case: dict, st: dict) -> dict:
    """One measurement (in this process): seconds for one batch, images/s, peak memory."""
    if st.get("generator.num_threads"):
        torch.set_num_threads(int(st["generator.num_threads"]))
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base = _rss_mb()
    model, tok, kw = _build(case, st)
    B = case["batch"]
    labels = torch.arange(B) % int(st["benchmark.num_classes"] if case["size"] == DEFAULT_SIZE
                                   else st["d16.sizes"].get(case["family"], {}).get("num_classes", 1000))
    g = torch.Generator(device=dev).manual_seed(0)
    if case["family"] == "decode":
        vq, ms = (t.to(dev).eval() for t in tok)
        side = int(st["source.image_size"]) // vq.downsample
        idx = torch.randint(0, int(st["tokenizer.vqgan.n_embed"]), (B, side, side), device=dev)
        ms_idx = [torch.randint(0, int(st["tokenizer.msvq.vocab_size"]), (B, p * p), device=dev) for p in ms.patch_nums]
        out = {}
        for name, fn in (("vqgan", lambda: vq.decode_indices(idx)), ("msvq", lambda: ms.idxBl_to_img(ms_idx, same_shape=True, last_one=True))):
            with torch.inference_mode():
                fn()
                t0 = time.perf_counter()
                fn()
                dt = time.perf_counter() - t0
            out[f"{name}_decode_images_per_second"] = B / dt
        return {**case, **out, **_peak(dev), "baseline_rss_mb": base, "torch_threads": torch.get_num_threads()}
    model = model.to(dev).eval()
    if tok is not None:
        tok = tok.to(dev).eval()
        kw["tokenizer"] = tok
    if case["cache"] is not None:
        kw["use_cache"] = case["cache"]
    if case["size"] == DEFAULT_SIZE:  # warm-up (lazy initialisation) where it is cheap
        model.sample(labels, generator=g, **kw)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    model.sample(labels, generator=g, **kw)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    kw.pop("tokenizer", None)
    return {**case, "sampling": kw, "parameters": sum(p.numel() for p in model.parameters()), "seconds": dt,
            "images_per_second": B / dt, **_peak(dev), "baseline_rss_mb": base,
            "torch_threads": torch.get_num_threads()}


def _rss_mb() -> float:
    """Resident memory now (after imports, before the model is built): subtract it from a CPU peak."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _peak(dev: torch.device) -> dict:
    if dev.type == "cuda":
        return {"peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20, "memory": "cuda peak allocated"}
    return {"peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "memory": "process max RSS"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: params generator.num_threads)")
    ap.add_argument("--batch-size", type=int, default=DEFAULT_BATCH)
    ap.add_argument("--only", choices=[DEFAULT_SIZE, D16], default=None)
    ap.add_argument("--smoke", action="store_true", help="default size, batch 2, results to a temporary folder")
    args = ap.parse_args()
    if args.case:
        payload = json.loads(args.case)
        print("RESULT " + json.dumps(run_case(payload["case"], payload["settings"])), flush=True)
        return
    params = load_repo_params()
    st = settings(params, args)
    rows = []
    for case in _cases(st["benchmark.batch_size"], st["benchmark.sizes"]):
        payload = json.dumps({"case": case, "settings": st})
        proc = subprocess.run([sys.executable, __file__, "--case", payload], capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            raise RuntimeError(f"benchmark case {case} failed:\n{proc.stderr[-3000:]}")
        row = json.loads(line[len("RESULT "):])
        rows.append(row)
        print(json.dumps({k: row[k] for k in row if k not in ("sampling",)}), flush=True)
    speedups = {}
    for size in (DEFAULT_SIZE, D16):
        for fam, grid in (("var", None), ("ar", None if size == DEFAULT_SIZE else D16_AR_CACHE_GRID)):
            on = [r for r in rows if r["size"] == size and r["family"] == fam and r["cache"] is True and r.get("grid") == grid]
            off = [r for r in rows if r["size"] == size and r["family"] == fam and r["cache"] is False and r.get("grid") == grid]
            if on and off:
                speedups[f"{fam}_{size}"] = off[0]["seconds"] / on[0]["seconds"]
    bound = {"var_d16": var_cache_flop_ratio(D16_SIZES["var"]["patch_nums"], 64 * D16_SIZES["var"]["depth"])}
    save_results("sample", {"batch_size": st["benchmark.batch_size"], "rows": rows, "kv_cache_speedup": speedups,
                            "kv_cache_flop_ratio_bound": bound,
                            "notes": __doc__.split("Sizes:")[1].strip()},
                 settings=st, declared=declared_overrides, params=params, smoke=args.smoke)


if __name__ == "__main__":
    main()
