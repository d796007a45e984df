"""Sampling speed of the three generator families, with and without the KV cache, and peak memory.

    python benchmarks/sample.py [--threads N] [--only default|d16] [--batch-size 8]

Random weights, batch 8, token sampling only (the tokenizer decode is timed separately at the default size).
Each measurement runs in a fresh subprocess so that its peak memory (max RSS on CPU, peak allocated on CUDA) is its own.

Sizes:
* ``default``: the embedded default from params (AR / MaskGIT over 8x8 VQGAN tokens, VAR over scales 1,2,3,4,6,8;
  vocabulary 512, Cvae 16).
* ``d16``: VAR-d16 (16 blocks, width 1024, 16 heads, 4096 codes, the 10 scales of 256 px) and AR / MaskGIT of the
  same depth and width over 16x16 tokens with 1024 codes. To stay short on a CPU: VAR runs every scale with
  cfg 0 (no unconditional branch; guidance doubles both variants alike); AR runs the full 16x16 grid with the
  cache, and cache on/off is compared on the first 36 tokens (a 6x6 grid); MaskGIT runs 2 decoding steps
  (time is linear in steps) and has no KV cache (bidirectional: every step re-reads the whole sequence).

Writes benchmarks/results/sample.json.
"""
from __future__ import annotations

import os
import sys

# Run as a script, this folder is sys.path[0]; a module named like a standard-library one would shadow the standard library's module (imported
# by torch), so import from the repository root instead.
_HERE = os.path.dirname(os.path.abspath(__file__))
if sys.path and os.path.abspath(sys.path[0] or ".") == _HERE:
    sys.path.pop(0)
sys.path.insert(0, os.path.dirname(_HERE))

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from benchmarks._common import save_results  # noqa: E402

DEFAULT_SIZE = "default"
D16 = "d16"


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


def _cases(batch: int) -> list[dict]:
    c = []
    for size in (DEFAULT_SIZE, D16):
        for cache in (True, False):
            c.append({"size": size, "family": "var", "cache": cache, "batch": batch})
        c.append({"size": size, "family": "ar", "cache": True, "batch": batch})
        if size == DEFAULT_SIZE:
            c.append({"size": size, "family": "ar", "cache": False, "batch": batch})
        else:  # cache on/off on a 6x6 prefix of the d16-size AR
            c.append({"size": size, "family": "ar", "cache": True, "batch": batch, "grid": 6})
            c.append({"size": size, "family": "ar", "cache": False, "batch": batch, "grid": 6})
        c.append({"size": size, "family": "maskgit", "cache": None, "batch": batch})
    c.append({"size": DEFAULT_SIZE, "family": "decode", "cache": None, "batch": batch})
    return c


def _build(case: dict):
    from genvpt.generators import GPT, MaskGIT, VAR, ARConfig, MaskGITConfig, build_var_config
    from genvpt.generators.params import GeneratorParams
    from genvpt.generators.var import VAR_256_PATCH_NUMS
    from genvpt.tokenizers import MSVQConfig, MultiScaleVQVAE, VQGAN, VQGANConfig

    gp = GeneratorParams()
    fam, size = case["family"], case["size"]
    torch.manual_seed(0)
    if size == DEFAULT_SIZE:
        if fam == "ar":
            p = gp.ar
            return GPT(ARConfig(vocab_size=512, grid=case.get("grid", 8), num_classes=12, n_layer=p.n_layer,
                                n_head=p.n_head, n_embd=p.n_embd, order=p.order)), None, {"top_k": p.sample.top_k}
        if fam == "maskgit":
            p = gp.maskgit
            return MaskGIT(MaskGITConfig(vocab_size=512, grid=8, num_classes=12, hidden_dim=p.hidden_dim, depth=p.depth,
                                         heads=p.heads, mlp_dim=p.mlp_dim, dropout=0.0)), None, {"steps": p.sample.steps}
        if fam == "var":
            p = gp.var
            vq = MultiScaleVQVAE(MSVQConfig())
            m = VAR(build_var_config(p.depth, patch_nums=vq.patch_nums, vocab_size=512, Cvae=vq.Cvae, num_classes=12,
                                     embed_dim=p.embed_dim, num_heads=p.num_heads))
            return m, vq, {"cfg": p.sample.cfg}
        if fam == "decode":
            return None, (VQGAN(VQGANConfig()), MultiScaleVQVAE(MSVQConfig())), {}
    if fam == "ar":
        return GPT(ARConfig(vocab_size=1024, grid=case.get("grid", 16), num_classes=1000, n_layer=16, n_head=16, n_embd=1024,
                            block_size=256)), None, {"top_k": 100}
    if fam == "maskgit":
        return MaskGIT(MaskGITConfig(vocab_size=1024, grid=16, num_classes=1000, hidden_dim=1024, depth=16, heads=16,
                                     mlp_dim=4096, dropout=0.0)), None, {"steps": 2}
    if fam == "var":
        m = VAR(build_var_config(16, patch_nums=VAR_256_PATCH_NUMS))
        return m, _QuantizerStub(m.cfg), {"cfg": 0.0}
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


def run_case(case: dict) -> dict:
    """One measurement (in this process): seconds for one batch, images/s, peak memory."""
    if case.get("threads"):
        torch.set_num_threads(int(case["threads"]))
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base = _rss_mb()
    model, tok, kw = _build(case)
    B = case["batch"]
    labels = torch.arange(B) % 12
    g = torch.Generator(device=dev).manual_seed(0)
    if case["family"] == "decode":
        vq, ms = (t.to(dev).eval() for t in tok)
        idx = torch.randint(0, 512, (B, 8, 8), device=dev)
        ms_idx = [torch.randint(0, 512, (B, p * p), device=dev) for p in ms.patch_nums]
        out = {}
        for name, fn in (("vqgan", lambda: vq.decode_indices(idx)), ("msvq", lambda: ms.idxBl_to_img(ms_idx, same_shape=True, last_one=True))):
            with torch.inference_mode():
                fn()
                t0 = time.perf_counter()
                fn()
                dt = time.perf_counter() - t0
            out[f"{name}_decode_images_per_second"] = B / dt
        return {**case, **out, **_peak(dev), "baseline_rss_mb": base}
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
            "images_per_second": B / dt, **_peak(dev), "baseline_rss_mb": base}


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
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--only", choices=[DEFAULT_SIZE, D16], default=None)
    args = ap.parse_args()
    if args.case:
        print("RESULT " + json.dumps(run_case(json.loads(args.case))), flush=True)
        return
    rows = []
    for case in _cases(args.batch_size):
        if args.only and case["size"] != args.only:
            continue
        case["threads"] = args.threads
        proc = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)], capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            raise RuntimeError(f"benchmark case {case} failed:\n{proc.stderr[-3000:]}")
        row = json.loads(line[len("RESULT "):])
        rows.append(row)
        print(json.dumps({k: row[k] for k in row if k not in ("sampling",)}), flush=True)
    speedups = {}
    for size in (DEFAULT_SIZE, D16):
        for fam, grid in (("var", None), ("ar", None if size == DEFAULT_SIZE else 6)):
            on = [r for r in rows if r["size"] == size and r["family"] == fam and r["cache"] is True and r.get("grid") == grid]
            off = [r for r in rows if r["size"] == size and r["family"] == fam and r["cache"] is False and r.get("grid") == grid]
            if on and off:
                speedups[f"{fam}_{size}"] = off[0]["seconds"] / on[0]["seconds"]
    from genvpt.generators.var import VAR_256_PATCH_NUMS

    bound = {"var_d16": var_cache_flop_ratio(VAR_256_PATCH_NUMS, 1024)}
    save_results("sample", {"batch_size": args.batch_size, "rows": rows, "kv_cache_speedup": speedups,
                            "kv_cache_flop_ratio_bound": bound,
                            "notes": __doc__.split("Sizes:")[1].strip()})


if __name__ == "__main__":
    main()
