"""Peak training memory of MVP (frame prompts added to the input maps) vs the prefilled prompt (the same number of
learnable tokens prepended) on a randomly initialised VAR (paper Table 4: VAR-d16, 14.5 GB vs 23.2 GB, ratio 0.63),
at two sizes: ``d16`` (VAR-d16's official sizes, depth ``adaptation.memory_benchmark.depth``) and ``embedded`` (the
embedded default's VAR exactly as params.yaml builds it: ``generator.var`` over ``tokenizer.msvq``).

    python benchmarks/mvp_memory.py [--sizes d16,embedded] [--batch-size B] [--embedded-batch-size B] [--steps 2]
                                    [--attention sdpa|math] [--smoke]
Writes benchmarks/results/mvp_memory.json (``--smoke``: embedded size, 1 step, batch 2, a temporary folder).

Method: each method runs in its own fresh process (so one method's allocations cannot lower the other's peak). The
model (frozen, fp32) and a batch of random tokens are built, then ``--steps`` training steps (forward with the
prompts, VAR's cross-entropy, backward into the prompts, AdamW step) run inside
:class:`genvpt.adaptation.memory.PeakMemory`:

* on a GPU: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (everything allocated, weights
  included, like the paper's "peak GPU memory"); ``above_start`` subtracts what was allocated before the steps;
* on CPU: the resident-set high-water mark (VmHWM, reset through /proc/self/clear_refs) of the step phase;
  ``above_start`` subtracts the resident set before the steps (the weights, the process) = the memory the training
  step itself needs. On CPU the ratio of ``above_start`` is the comparable figure: the whole-process peak also counts
  the interpreter, torch and the weights, which both methods share.

Both methods run on the same attention kernel (``--attention``, default ``sdpa``: torch's scaled_dot_product_attention,
what GPUs always use). On CPU, ``genvpt.generators.common.attend`` would otherwise pick the explicit product for short
sequences (``MATH_ATTENTION_MAX_ENTRIES`` entries of B*H*L*L) and SDPA above: at d16 and batch 2, MVP (680 tokens)
fell below the limit and prefilled (820) above it, so the two were measured on different kernels. Each run records
the kernel(s) it used, and the benchmark stops if the two methods' differ.

The d16 batch comes from params (``adaptation.memory_benchmark.batch_size`` on a GPU, ``cpu_batch_size`` without one)
unless ``--batch-size`` is given; the embedded size trains at the adapt stage's ``adaptation.train.batch_size``. The
methods' options are params' ``adaptation.configs.mvp`` / ``.prefilled`` with ``tau`` from
``adaptation.memory_benchmark`` and the CLIP terms off: only the token cross-entropy is in the step (the CLIP terms add
the same images for both methods, and the comparison is about sequence length).
"""
from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

from benchmarks._common import (  # noqa: E402
    NUM_CLASSES_WHY,
    ROOT,
    embedded_generator,
    embedded_settings,
    from_params,
    load_repo_params,
    save_results,
)

SIZES = ("d16", "embedded")
METHODS = ("mvp", "prefilled")
DEFAULT_STEPS = 2
ATTENTION = ("sdpa", "math")
# VAR-d16's official sizes (var_d16.pth with vae_ch160v4096z32 at 256 px); the depth is params'
D16_VAR = {"vocab_size": 4096, "Cvae": 32, "num_classes": 1000, "patch_nums": [1, 2, 3, 4, 5, 6, 8, 10, 13, 16]}
METHOD_OVERRIDES = {"mvp": {"lambda_sen": 0.0, "lambda_cap": 0.0}, "prefilled": {}}  # + tau of memory_benchmark

declared_overrides = {
    "benchmark.steps": "training steps measured per method (2; 1 with --smoke): the peak is reached in the first",
    "benchmark.attention": "both methods forced onto one attention kernel (sdpa unless --attention math), so that "
                           "the comparison is about memory, not about which kernel a sequence length selects",
    "benchmark.sizes": "which sizes run (--sizes / --smoke)",
    "benchmark.num_classes": NUM_CLASSES_WHY,
    "benchmark.method_overrides": "CLIP terms off (lambda_sen = lambda_cap = 0: only the token cross-entropy is in the "
                                  "step) and tau = adaptation.memory_benchmark.tau for both methods",
    "benchmark.weights": "random weights: memory does not depend on them",
    "d16.var": "VAR-d16's official vocabulary, latent width, classes and 256 px scales (params size the embedded VAR)",
}


def settings(params, args=None) -> dict:
    """Every setting this benchmark runs with (see benchmarks/_common.py)."""
    a = args
    smoke = bool(a and getattr(a, "smoke", False))
    st = embedded_settings(params, ("var",))
    st.update(from_params(params, "adaptation.device", "adaptation.memory_benchmark.depth",
                          "adaptation.memory_benchmark.tau", "adaptation.memory_benchmark.batch_size",
                          "adaptation.memory_benchmark.cpu_batch_size", "adaptation.train.batch_size"))
    if a is not None:
        if getattr(a, "device", None):
            st["adaptation.device"] = a.device
        if getattr(a, "depth", None):
            st["adaptation.memory_benchmark.depth"] = a.depth
        if getattr(a, "tau", None):
            st["adaptation.memory_benchmark.tau"] = a.tau
        if getattr(a, "batch_size", None):
            key = "batch_size" if _device(st["adaptation.device"]) == "cuda" else "cpu_batch_size"
            st[f"adaptation.memory_benchmark.{key}"] = a.batch_size
        if getattr(a, "embedded_batch_size", None) or smoke:
            st["adaptation.train.batch_size"] = 2 if smoke else a.embedded_batch_size
    for m in METHODS:
        st[f"adaptation.configs.{m}"] = dict(params.adaptation.configs.get(m, {"backbone": "var", "method": m}))
    st["benchmark.method_overrides"] = {m: {**o, "tau": st["adaptation.memory_benchmark.tau"]}
                                        for m, o in METHOD_OVERRIDES.items()}
    st["benchmark.steps"] = 1 if smoke else (getattr(a, "steps", None) or DEFAULT_STEPS)
    st["benchmark.attention"] = (getattr(a, "attention", None) if a else None) or "sdpa"
    sizes = ["embedded"] if smoke else [s for s in (getattr(a, "sizes", None) or ",".join(SIZES)).split(",") if s]
    st["benchmark.sizes"] = sizes
    st["benchmark.weights"] = "random"
    st["d16.var"] = dict(D16_VAR)
    return st


def _device(name: str) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def batch_for(st: dict, size: str) -> int:
    if size == "embedded":
        return int(st["adaptation.train.batch_size"])
    key = "batch_size" if _device(st["adaptation.device"]) == "cuda" else "cpu_batch_size"
    return int(st[f"adaptation.memory_benchmark.{key}"])


def build_var(st: dict, size: str):
    """(VAR, tokenizer) of ``size``, random weights."""
    import torch

    from genvpt.generators.var import VAR, build_var_config
    from genvpt.tokenizers.msvq import MSVQConfig, MultiScaleVQVAE

    torch.manual_seed(0)
    if size == "embedded":
        var, tok, _ = embedded_generator(st, "var")
        return var, tok
    d = st["d16.var"]
    var = VAR(build_var_config(int(st["adaptation.memory_benchmark.depth"]), patch_nums=d["patch_nums"],
                               vocab_size=d["vocab_size"], Cvae=d["Cvae"], num_classes=d["num_classes"]))
    tok = MultiScaleVQVAE(MSVQConfig(vocab_size=var.cfg.vocab_size, z_channels=var.cfg.Cvae,
                                     patch_nums=tuple(var.patch_nums)))
    return var, tok


def _force_attention(kind: str) -> set:
    """Make ``attend`` take one kernel everywhere; returns the set the kernels actually used are recorded in."""
    from genvpt.generators import common

    used: set = set()

    def use_math(q, k, dropout_p):
        explicit = kind == "math" and dropout_p == 0.0
        used.add("math" if explicit else "sdpa")
        return explicit

    common._use_math = use_math
    return used


def worker(method: str, size: str, st: dict) -> dict:
    import torch
    import torch.nn.functional as F

    from genvpt.adaptation.memory import PeakMemory
    from genvpt.adaptation.method import MethodInfo
    from genvpt.adaptation.params import AdaptationParams
    from genvpt.adaptation.train import build_method
    from genvpt.backbones import backbone_class

    dev = torch.device(_device(st["adaptation.device"]))
    used = _force_attention(st["benchmark.attention"])
    var, tok = build_var(st, size)
    var, tok = var.to(dev), tok.to(dev)
    L = var.L
    params = sum(p.numel() for p in var.parameters())
    backbone = backbone_class("var")(var, tok)
    opts = {k: v for k, v in st[f"adaptation.configs.{method}"].items() if k != "train"}
    opts.update(st["benchmark.method_overrides"][method])
    opts.setdefault("tokenizer", "msvq")
    cfg = AdaptationParams(configs={"m": opts}).config("m")
    model = build_method(cfg, backbone, MethodInfo(num_classes=var.num_classes), 0)
    trainable = [p for _, p in model.trainable_parameters()]
    opt = torch.optim.AdamW(trainable, lr=1e-3)
    batch = batch_for(st, size)
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, var.num_classes, (batch,), generator=g).to(dev)
    x = torch.randn(batch, L - 1, var.cfg.Cvae, generator=g).to(dev)
    gt = torch.randint(0, var.cfg.vocab_size, (batch, L), generator=g).to(dev)
    times = []
    with PeakMemory(dev) as mem:
        for _ in range(int(st["benchmark.steps"])):
            t0 = time.perf_counter()
            inj = model.injections(labels)
            logits = var(labels, x, input_offsets=inj.input_offsets, prefix_embeds=inj.prefix)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), gt.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            del logits, loss
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            times.append(time.perf_counter() - t0)
    n_tok = model.prompt.num_tokens if method == "mvp" else model.num_tokens
    return {
        "method": method,
        "size": size,
        "batch_size": batch,
        "prompt_tokens": n_tok,
        "sequence_length": L + (n_tok if method == "prefilled" else 0),
        "backbone_params": params,
        "trainable_params": sum(p.numel() for p in trainable),
        "attention_kernels": sorted(used),
        "peak_mb": round(mem.peak_mb, 1),
        "start_mb": round(mem.start_mb, 1),
        "above_start_mb": round(mem.delta_mb, 1),
        "memory_kind": mem.kind,
        "step_time_s": [round(t, 3) for t in times],
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=None, help="comma-separated: d16,embedded (default: both)")
    ap.add_argument("--batch-size", type=int, default=None, help="d16 batch (default: params)")
    ap.add_argument("--embedded-batch-size", type=int, default=None, help="embedded batch (default: adaptation.train)")
    ap.add_argument("--depth", type=int, default=None)
    ap.add_argument("--tau", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--attention", choices=ATTENTION, default=None)
    ap.add_argument("--device", default=None, help="default: params adaptation.device")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        payload = json.loads(args.worker)
        print("RESULT " + json.dumps(worker(payload["method"], payload["size"], payload["settings"])))
        return
    import torch

    params = load_repo_params()
    st = settings(params, args)
    bad = [s for s in st["benchmark.sizes"] if s not in SIZES]
    if bad:
        raise SystemExit(f"unknown sizes {bad}; allowed: {', '.join(SIZES)}")
    device = _device(st["adaptation.device"])
    by_size = {}
    for size in st["benchmark.sizes"]:
        runs = {}
        for method in METHODS:
            payload = json.dumps({"method": method, "size": size, "settings": st})
            proc = subprocess.run([sys.executable, __file__, "--worker", payload], capture_output=True, text=True,
                                  cwd=ROOT)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                raise SystemExit(f"{method} worker ({size}) failed:\n{proc.stderr[-3000:]}")
            runs[method] = json.loads(line[len("RESULT "):])
            print(size, method, runs[method], flush=True)
        m, p = runs["mvp"], runs["prefilled"]
        if m["attention_kernels"] != p["attention_kernels"] or len(m["attention_kernels"]) != 1:
            raise SystemExit(f"{size}: MVP used {m['attention_kernels']} and prefilled {p['attention_kernels']}: "
                             "not one attention kernel for both")
        by_size[size] = {
            "depth": st["adaptation.memory_benchmark.depth"] if size == "d16" else st["generator.var.depth"],
            "batch_size": m["batch_size"],
            "attention_kernel": m["attention_kernels"][0],
            "runs": runs,
            "ratio_peak": round(m["peak_mb"] / p["peak_mb"], 3),
            "ratio_above_start": round(m["above_start_mb"] / p["above_start_mb"], 3) if p["above_start_mb"] else None,
        }
    results = {
        "what": "peak training memory, MVP vs prefilled prompt (same number of learnable tokens), random-weight VAR",
        "device": device,
        "gpu_available": torch.cuda.is_available(),
        "tau": st["adaptation.memory_benchmark.tau"],
        "steps": st["benchmark.steps"],
        "batch_size_note": None if device == "cuda" else
        "no GPU here: d16 at adaptation.memory_benchmark.cpu_batch_size; the GPU batch in params is "
        f"{st['adaptation.memory_benchmark.batch_size']}",
        "method": "fresh process per method; CUDA max_memory_allocated, or on CPU the VmHWM of the step phase; "
                  "both methods on one attention kernel",
        "sizes": by_size,
        "paper_ratio": round(14.5 / 23.2, 3),
    }
    save_results("mvp_memory", results, settings=st, declared=declared_overrides, params=params, smoke=args.smoke)


if __name__ == "__main__":
    main()
