"""Peak training memory of MVP (frame prompts added to the input maps) vs the prefilled prompt (the same number of
learnable tokens prepended) on a randomly initialised VAR-d16 (paper Table 4: 14.5 GB vs 23.2 GB, ratio 0.63).

    python benchmarks/mvp_memory.py [--batch-size B] [--depth 16] [--steps 2]
Writes benchmarks/results/mvp_memory.json.

Method: each method runs in its own fresh process (so one method's allocations cannot lower the other's peak). The
model (frozen, fp32) and a batch of random tokens are built, then ``--steps`` training steps (forward with the
prompts, VAR's cross-entropy, backward into the prompts, AdamW step) run inside :class:`genvpt.adaptation.memory.PeakMemory`:

* on a GPU: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (everything allocated, weights
  included, like the paper's "peak GPU memory"); ``above_start`` subtracts what was allocated before the steps;
* on CPU: the resident-set high-water mark (VmHWM, reset through /proc/self/clear_refs) of the step phase;
  ``above_start`` subtracts the resident set before the steps (the weights, the process) = the memory the training
  step itself needs. On CPU the ratio of ``above_start`` is the comparable figure: the whole-process peak also counts
  the interpreter, torch and the 1.2 GB of weights, which both methods share.

The batch size comes from params (``adaptation.memory_benchmark.batch_size`` on a GPU, ``cpu_batch_size`` without one)
unless ``--batch-size`` is given. Only the token cross-entropy is in the step: the CLIP terms add the same images
for both methods, and the comparison is about sequence length.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from _common import ROOT, save_results


def worker(method: str, depth: int, tau: int, batch: int, steps: int, device: str) -> dict:
    import torch
    import torch.nn.functional as F

    from genvpt.adaptation.memory import PeakMemory
    from genvpt.adaptation.method import MethodInfo
    from genvpt.adaptation.params import AdaptationParams
    from genvpt.adaptation.train import build_method
    from genvpt.backbones import backbone_class
    from genvpt.generators.var import VAR, build_var_config
    from genvpt.tokenizers.msvq import MSVQConfig, MultiScaleVQVAE

    dev = torch.device(device)
    torch.manual_seed(0)
    var = VAR(build_var_config(depth)).to(dev)  # VAR's own random initialisation
    L = var.L
    params = sum(p.numel() for p in var.parameters())
    tok = MultiScaleVQVAE(MSVQConfig(vocab_size=var.cfg.vocab_size, z_channels=var.cfg.Cvae,
                                     patch_nums=tuple(var.patch_nums))).to(dev)
    backbone = backbone_class("var")(var, tok)
    init = {"init_std": 0.02} if method == "mvp" else {"init": "normal"}
    cfg = AdaptationParams(configs={"m": {"backbone": "var", "method": method, "tau": tau, "lambda_sen": 0,
                                          "lambda_cap": 0, **init} if method == "mvp" else
                                    {"backbone": "var", "method": method, "tau": tau, **init}}).config("m")
    model = build_method(cfg, backbone, MethodInfo(num_classes=var.num_classes), 0)
    trainable = [p for _, p in model.trainable_parameters()]
    opt = torch.optim.AdamW(trainable, lr=1e-3)
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, var.num_classes, (batch,), generator=g).to(dev)
    x = torch.randn(batch, L - 1, var.cfg.Cvae, generator=g).to(dev)
    gt = torch.randint(0, var.cfg.vocab_size, (batch, L), generator=g).to(dev)
    times = []
    with PeakMemory(dev) as mem:
        for _ in range(steps):
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
        "prompt_tokens": n_tok,
        "sequence_length": L + (n_tok if method == "prefilled" else 0),
        "backbone_params": params,
        "trainable_params": sum(p.numel() for p in trainable),
        "peak_mb": round(mem.peak_mb, 1),
        "start_mb": round(mem.start_mb, 1),
        "above_start_mb": round(mem.delta_mb, 1),
        "memory_kind": mem.kind,
        "step_time_s": [round(t, 3) for t in times],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--depth", type=int, default=None)
    ap.add_argument("--tau", type=int, default=None)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if args.worker:
        out = worker(args.worker, args.depth, args.tau, args.batch_size, args.steps, device)
        print("RESULT " + json.dumps(out))
        return
    from genvpt.config import load_params

    mb = load_params(ROOT / "params.yaml").adaptation.memory_benchmark
    depth = args.depth or mb.depth
    tau = args.tau or mb.tau
    batch = args.batch_size or (mb.batch_size if device == "cuda" else mb.cpu_batch_size)
    runs = {}
    for method in ("mvp", "prefilled"):
        cmd = [sys.executable, __file__, "--worker", method, "--depth", str(depth), "--tau", str(tau),
               "--batch-size", str(batch), "--steps", str(args.steps), "--device", device]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            raise SystemExit(f"{method} worker failed:\n{proc.stderr[-3000:]}")
        runs[method] = json.loads(line[len("RESULT "):])
        print(method, runs[method])
    m, p = runs["mvp"], runs["prefilled"]
    results = {
        "what": "peak training memory, MVP vs prefilled prompt (same number of learnable tokens), random-weight VAR",
        "device": device,
        "gpu_available": torch.cuda.is_available(),
        "depth": depth,
        "tau": tau,
        "batch_size": batch,
        "batch_size_note": None if device == "cuda" else
        f"no GPU here: CPU at a reduced batch (adaptation.memory_benchmark.cpu_batch_size); the GPU batch in params is {mb.batch_size}",
        "steps": args.steps,
        "method": "fresh process per method; CUDA max_memory_allocated, or on CPU the VmHWM of the step phase",
        "runs": runs,
        "ratio_peak": round(m["peak_mb"] / p["peak_mb"], 3),
        "ratio_above_start": round(m["above_start_mb"] / p["above_start_mb"], 3),
        "paper_ratio": round(14.5 / 23.2, 3),
    }
    save_results("mvp_memory", results)


if __name__ == "__main__":
    main()
