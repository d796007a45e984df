"""Training-step time of a prompt method on the frozen backbone against full fine-tuning of the same backbone at the
same batch (issue #16, section 3): a prompt step should cost clearly less, since no weight gradients are computed
and the optimizer touches only the prompts. Three (prompt configuration, fine-tuning configuration) pairs of
params' ``adaptation.configs``: ``mvp`` / ``finetune`` on the VAR, ``vpt-ar`` / ``finetune-ar`` on the AR and
``vpt-maskgit`` / ``finetune-maskgit`` on the MaskGIT.

    python benchmarks/train_step.py [--sizes embedded,d16] [--steps 10] [--warmup 2] [--batch-size B]
                                    [--embedded-batch-size B] [--threads 2] [--smoke]

Writes benchmarks/results/train_step.json (``--smoke``: embedded size, 1 warm-up + 2 timed steps, one thread, a
temporary folder) and prints a table.

Sizes:

* ``embedded``: the embedded default's generators exactly as params.yaml builds them (``generator.<family>`` over
  ``tokenizer.vqgan`` / ``tokenizer.msvq`` at ``source.image_size``, as many classes as the source, through the
  pretrain stages' own builder), at the adapt stage's batch ``adaptation.train.batch_size``;
* ``d16``: VAR-d16 (16 blocks, width 1024, 16 heads, 4096 codes, the 10 scales of 256 px) and an AR / a MaskGIT of
  the same depth and width over 16x16 tokens with 1024 codes and 1000 classes (benchmarks/sample.py's d16 rows), at a
  small batch (``d16.batch_size``, 2: this runs on a CPU).

Method: each (size, pair) runs in its own fresh process. The generator (random weights, fp32) is built once and
deep-copied, so the prompt method and fine-tuning start from the same weights on two backbones: one frozen by
``genvpt.adaptation.train.build_method`` with the prompt method's parameters as the only trainable ones, one whose
every generator weight ``finetune`` unfreezes. Both get the same random token data (one batch: speed does not depend
on values) and the optimizer and schedule the adapt loop builds from their merged configuration (AdamW with the
configuration's lr / betas / weight decay, warm-up + cosine). One step is the body of the loop in
``genvpt.adaptation.train.train_adaptation``: batch order and condition drop from (seed, step), the method's
injections, the backbone's own training loss (``Backbone.loss``) plus the method's extra terms, zero_grad,
backward, the loop's check that only trainable parameters got a gradient, gradient clipping, the optimizer and
scheduler steps, and the loss read back (.item()). Steps alternate between the two methods (and which one goes
first), so a change of machine load hits both; the warm-up steps are not timed, and the median of the timed steps is
reported with the ratio finetune / prompt. MVP runs with its CLIP terms off (``lambda_sen = lambda_cap = 0``: no CLIP
model here; the fine-tuning configuration has none either), so both steps hold the same token cross-entropy.

After the steps the frozen generator's sha256 (``genvpt.adaptation.semantic.state_hash``, the adapt loop's check)
must equal its hash before, and the fine-tuned one's must differ: both are recorded.

Attention: ``genvpt.generators.common.attend`` picks the kernel itself (``_use_math``, not changed here): on CPU,
while a gradient is recorded (``torch.is_grad_enabled()``: every training step), the explicit softmax(q k^T) v up to
``MATH_ATTENTION_MAX_ENTRIES`` entries of B*H*Tq*Tk, SDPA above; GPUs always SDPA. Each method's record counts the
calls that took each kernel and the longest key sequence seen (the VPT prompt lengthens the sequence by
prompt_length - 1 tokens: it takes the class token's slot; MVP's frame prompts add none).
"""
from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from typing import Optional, Sequence  # noqa: E402

from benchmarks._common import (  # noqa: E402
    NUM_CLASSES_WHY,
    ROOT,
    block,
    embedded_generator,
    embedded_settings,
    from_params,
    load_repo_params,
    save_results,
    unflatten,
)

NAME = "train_step"
SIZES = ("embedded", "d16")
# (prompt configuration, fine-tuning configuration) of params' adaptation.configs, and the backbone both run on
PAIRS = (("mvp", "finetune", "var"), ("vpt-ar", "finetune-ar", "ar"), ("vpt-maskgit", "finetune-maskgit", "maskgit"))
DEFAULT_STEPS = 10
DEFAULT_WARMUP = 2
SMOKE_STEPS, SMOKE_WARMUP = 2, 1
THREADS, SMOKE_THREADS = 2, 1
D16_BATCH = 2
# the published sizes of benchmarks/sample.py's d16 rows (not params: params size the embedded default)
D16_SIZES = {
    "var": {"depth": 16, "vocab_size": 4096, "Cvae": 32, "num_classes": 1000,
            "patch_nums": [1, 2, 3, 4, 5, 6, 8, 10, 13, 16]},
    "ar": {"vocab_size": 1024, "grid": 16, "num_classes": 1000, "n_layer": 16, "n_head": 16, "n_embd": 1024,
           "block_size": 256},
    "maskgit": {"vocab_size": 1024, "grid": 16, "num_classes": 1000, "hidden_dim": 1024, "depth": 16, "heads": 16,
                "mlp_dim": 4096, "dropout": 0.0},
}
# MVP without its CLIP terms: no CLIP model here, and the fine-tuning step has none
METHOD_OVERRIDES = {"mvp": {"lambda_sen": 0.0, "lambda_cap": 0.0}}

declared_overrides = {
    "adaptation.num_threads": f"torch CPU threads of every measurement: {THREADS} (issue #16; {SMOKE_THREADS} with "
                              "--smoke, a check rather than a measurement; --threads), not torch's default",
    "benchmark.pairs": "the (prompt, fine-tuning) configurations of params' adaptation.configs compared, one pair "
                       "per backbone: MVP on the VAR, VPT on the AR and on the MaskGIT",
    "benchmark.method_overrides": "MVP's CLIP terms off (lambda_sen = lambda_cap = 0): no CLIP model in a speed "
                                  "benchmark, and the fine-tuning step has no CLIP terms either",
    "benchmark.steps": f"timed steps per method (median reported): {DEFAULT_STEPS}, {SMOKE_STEPS} with --smoke",
    "benchmark.warmup": f"untimed warm-up steps per method: {DEFAULT_WARMUP}, {SMOKE_WARMUP} with --smoke",
    "benchmark.sizes": "which sizes run (--sizes; --smoke: embedded only)",
    "benchmark.num_classes": NUM_CLASSES_WHY,
    "benchmark.weights": "random weights and random tokens: step time does not depend on their values",
    "d16.sizes": "the published sizes (VAR-d16, and AR / MaskGIT of its depth and width: benchmarks/sample.py's d16 "
                 "rows), not the embedded default's; their tokenizers are small ones with the right codebook and "
                 "scales (the training step reads only VAR's quantizer, and the AR / MaskGIT steps no tokenizer)",
    "d16.batch_size": f"{D16_BATCH} images per d16 step (CPU; --batch-size), not adaptation.train.batch_size",
}


def settings(params, args=None) -> dict:
    """Every setting this benchmark runs with (see benchmarks/_common.py)."""
    a = args
    smoke = bool(a and getattr(a, "smoke", False))
    st = embedded_settings(params, ("ar", "maskgit", "var"))
    st.update(from_params(params, "adaptation.device", "adaptation.seeds"))
    st.update(block(params, "adaptation.train"))
    if a is not None and getattr(a, "embedded_batch_size", None):
        st["adaptation.train.batch_size"] = a.embedded_batch_size
    for prompt, finetune, backbone in PAIRS:
        for name in (prompt, finetune):
            st[f"adaptation.configs.{name}"] = dict(params.adaptation.configs.get(
                name, {"backbone": backbone, "method": name.split("-")[0]}))
    st["benchmark.pairs"] = [[p, f] for p, f, _ in PAIRS]
    st["benchmark.method_overrides"] = {m: dict(o) for m, o in METHOD_OVERRIDES.items()}
    threads = getattr(a, "threads", None) if a is not None else None
    st["adaptation.num_threads"] = threads or (SMOKE_THREADS if smoke else THREADS)
    st["benchmark.steps"] = SMOKE_STEPS if smoke else ((getattr(a, "steps", None) if a else None) or DEFAULT_STEPS)
    st["benchmark.warmup"] = SMOKE_WARMUP if smoke else (
        DEFAULT_WARMUP if a is None or getattr(a, "warmup", None) is None else a.warmup)
    sizes = ["embedded"] if smoke else [s for s in ((getattr(a, "sizes", None) if a else None)
                                                    or ",".join(SIZES)).split(",") if s]
    st["benchmark.sizes"] = sizes
    st["benchmark.weights"] = "random"
    st["d16.sizes"] = copy.deepcopy(D16_SIZES)
    st["d16.batch_size"] = (getattr(a, "batch_size", None) if a else None) or D16_BATCH
    return st


def _device(name: str) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def batch_for(st: dict, size: str) -> int:
    return int(st["adaptation.train.batch_size"] if size == "embedded" else st["d16.batch_size"])


def build_generator(st: dict, size: str, family: str):
    """(generator, tokenizer) of ``family`` at ``size``, random weights."""
    import torch

    torch.manual_seed(0)
    if size == "embedded":
        gen, tok, _ = embedded_generator(st, family)
        return gen, tok
    d = dict(st["d16.sizes"][family])
    if family == "var":
        from genvpt.generators import VAR, build_var_config
        from genvpt.tokenizers.msvq import MSVQConfig, MultiScaleVQVAE

        gen = VAR(build_var_config(d.pop("depth"), patch_nums=d.pop("patch_nums"), **d))
        tok = MultiScaleVQVAE(MSVQConfig(vocab_size=gen.cfg.vocab_size, z_channels=gen.cfg.Cvae,
                                         patch_nums=tuple(gen.patch_nums)))
        return gen, tok
    from genvpt.tokenizers.vqgan import VQGAN, VQGANConfig

    tok = VQGAN(VQGANConfig(n_embed=int(d["vocab_size"])))
    if family == "ar":
        from genvpt.generators import GPT, ARConfig

        return GPT(ARConfig(**d)), tok
    if family == "maskgit":
        from genvpt.generators import MaskGIT, MaskGITConfig

        return MaskGIT(MaskGITConfig(**d)), tok
    raise ValueError(f"unknown family {family!r}")


def random_tokens(backbone, n: int, seed: int):
    """Token data of ``n`` random images as the backbone reads it (one tensor per scale) and random labels."""
    import torch

    g = torch.Generator().manual_seed(seed)
    vocab = int(backbone.generator.cfg.vocab_size)
    if backbone.name == "var":
        sides = list(backbone.patch_nums)
    else:
        sides = [int(backbone.generator.cfg.grid)]
    scales = [torch.randint(0, vocab, (n, s * s), generator=g) for s in sides]
    labels = torch.randint(0, backbone.num_classes, (n,), generator=g)
    return scales, labels


class _AttentionLog:
    """Counts which kernel ``attend`` took, per method, by wrapping ``common._use_math`` (its choice is kept)."""

    def __init__(self):
        from genvpt.generators import common

        self.current = "build"
        self.calls: dict[str, dict[str, int]] = {}
        self.max_keys: dict[str, int] = {}
        self.threshold = getattr(common, "MATH_ATTENTION_MAX_ENTRIES", None)
        original = getattr(common, "_use_math", None)
        self.hooked = callable(original)
        if not self.hooked:
            return

        def use_math(q, k, dropout_p, *rest, **kw):
            explicit = bool(original(q, k, dropout_p, *rest, **kw))
            c = self.calls.setdefault(self.current, {"explicit": 0, "sdpa": 0})
            c["explicit" if explicit else "sdpa"] += 1
            self.max_keys[self.current] = max(self.max_keys.get(self.current, 0), int(k.shape[-2]))
            return explicit

        common._use_math = use_math

    def record(self, who: str) -> dict:
        c = self.calls.get(who, {"explicit": 0, "sdpa": 0})
        if not self.hooked:
            kernel = "unknown (genvpt.generators.common._use_math not found)"
        elif c["explicit"] and c["sdpa"]:
            kernel = "mixed"
        elif c["explicit"]:
            kernel = "explicit"
        elif c["sdpa"]:
            kernel = "sdpa"
        else:
            kernel = "none"
        return {"attention_kernel": kernel, "attention_calls": dict(c),
                "attention_max_keys": self.max_keys.get(who)}


class _Run:
    """One method on its own backbone, set up as ``train_adaptation`` sets it up, and its training step."""

    def __init__(self, config_name: str, st: dict, backbone, data, device, seed: int):
        import torch

        from genvpt.adaptation.method import MethodInfo, method_class
        from genvpt.adaptation.params import AdaptationParams
        from genvpt.adaptation.semantic import state_hash
        from genvpt.adaptation.train import TrainContext, build_method
        from genvpt.training import cosine_lambda

        raw = dict(st[f"adaptation.configs.{config_name}"])
        raw.update(st["benchmark.method_overrides"].get(raw.get("method"), {}))
        cfg = AdaptationParams.model_validate({"train": unflatten(st, "adaptation.train"),
                                               "configs": {config_name: raw}}).config(config_name)
        if cfg.backbone != backbone.name:
            raise ValueError(f"configuration {config_name!r} is for the {cfg.backbone} backbone, not {backbone.name}")
        mcls = method_class(cfg.method)
        if mcls.needs_clip(cfg.options):
            raise ValueError(f"configuration {config_name!r} needs CLIP; this benchmark runs without one")
        self.name, self.cfg, self.backbone, self.data, self.device, self.seed = (config_name, cfg, backbone, data,
                                                                                 device, seed)
        self.trains_backbone = mcls.trains_backbone
        backbone.to(device)
        for p in backbone.tokenizer.parameters():
            p.requires_grad_(False)
        backbone.check_tokens(data.scales)
        self.hash_before = state_hash(backbone.generator)
        info = MethodInfo(num_classes=len(data.class_names), class_names=list(data.class_names),
                          sentences=list(data.sentences), instance_labels=data.labels.tolist())
        self.ctx = TrainContext(backbone, data, None, device, seed, False)
        self.method = build_method(cfg, backbone, info, seed)
        self.method.setup(self.ctx)
        self.trainable = self.method.trainable_parameters()
        self.trainable_ids = {id(p) for _, p in self.trainable}
        for mod in (self.method, backbone.generator, backbone.tokenizer):
            for p in mod.parameters():
                p.grad = None
        ts = cfg.train
        self.opt = torch.optim.AdamW([p for _, p in self.trainable], lr=ts.lr, betas=tuple(ts.betas),
                                     weight_decay=ts.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, cosine_lambda(ts.steps, ts.warmup_steps,
                                                                               ts.min_lr_ratio))
        self.scales = [s.to(device) for s in data.scales]
        self.labels_all = data.labels.to(device)
        # the loop's batch is min(train.batch_size, N); here the data is one batch of the benchmark's size, so both
        # methods step on the same batch whatever their configurations' train.batch_size
        self.bs = len(data)
        self.losses: list[float] = []
        self.times: list[float] = []
        self.method.train()

    def step(self, step: int) -> float:
        """One step of the adapt loop's body; returns its wall time in seconds."""
        import torch

        from genvpt.adaptation.train import _grad_check, _step_generator
        from genvpt.training import check_finite

        dev, ts, backbone, method = self.device, self.cfg.train, self.backbone, self.method
        t0 = time.perf_counter()
        g = _step_generator(self.seed, step, 1, torch.device("cpu"))
        idx = torch.randperm(len(self.data), generator=g)[: self.bs].to(dev)
        labels = self.labels_all[idx]
        drop = (torch.rand(self.bs, generator=g) < ts.label_drop).to(dev)
        null = backbone.null_label
        fed = labels.masked_fill(drop, null) if null >= 0 else labels
        torch.manual_seed(self.seed * 1_000_003 + step)
        gd = _step_generator(self.seed, step, 2, dev)
        inj = method.injections(fed, idx=idx, drop=drop)
        loss, logits = backbone.loss(backbone.batch(self.scales, idx), None if method.replaces_condition else fed,
                                     inj, generator=gd)
        terms = method.extra_losses(self.ctx, logits=logits, labels=labels, idx=idx, drop=drop, generator=gd)
        total = loss + sum(terms.values()) if terms else loss
        check_finite(total, step + 1, f"benchmark {NAME} {self.name}")
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        _grad_check(method, self.trainable_ids, backbone, None)
        if ts.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for _, p in self.trainable], ts.grad_clip)
        self.opt.step()
        self.sched.step()
        value = total.item()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        dt = time.perf_counter() - t0
        self.losses.append(round(value, 5))
        return dt

    def record(self) -> dict:
        from genvpt.adaptation.semantic import state_hash

        after = state_hash(self.backbone.generator)
        return {
            "config": self.name,
            "method": self.cfg.method,
            "trains_backbone": self.trains_backbone,
            "trainable_params": int(sum(p.numel() for _, p in self.trainable)),
            "backbone_params": int(sum(p.numel() for p in self.backbone.generator.parameters())),
            "optimizer": {"lr": self.cfg.train.lr, "betas": list(self.cfg.train.betas),
                          "weight_decay": self.cfg.train.weight_decay, "grad_clip": self.cfg.train.grad_clip},
            "step_seconds": self.times,
            "median_seconds": statistics.median(self.times) if self.times else None,
            "losses": self.losses,
            "generator_sha256_before": self.hash_before,
            "generator_sha256_after": after,
            "generator_changed": after != self.hash_before,
        }


def worker(size: str, pair: Sequence[str], st: dict) -> dict:
    """One (size, pair) measurement in this process: both methods' steps, interleaved."""
    import torch

    from genvpt.adaptation.data import TrainData
    from genvpt.backbones import backbone_class

    torch.set_num_threads(int(st["adaptation.num_threads"]))
    dev = torch.device(_device(st["adaptation.device"]))
    prompt_name, finetune_name = pair
    family = st[f"adaptation.configs.{prompt_name}"]["backbone"]
    attn = _AttentionLog()
    gen, tok = build_generator(st, size, family)
    gen_ft = copy.deepcopy(gen)  # the same weights for both
    cls = backbone_class(family)
    bb_prompt, bb_finetune = cls(gen, tok), cls(gen_ft, tok)
    seed = int(st["adaptation.seeds"][0])
    batch = batch_for(st, size)
    scales, labels = random_tokens(bb_prompt, batch, seed)
    data = TrainData(scales, labels, [f"class{i}" for i in range(bb_prompt.num_classes)])
    runs = {"prompt": _Run(prompt_name, st, bb_prompt, data, dev, seed),
            "finetune": _Run(finetune_name, st, bb_finetune, data, dev, seed)}
    warmup, steps = int(st["benchmark.warmup"]), int(st["benchmark.steps"])
    for i in range(warmup + steps):
        order = ("prompt", "finetune") if i % 2 == 0 else ("finetune", "prompt")
        for who in order:
            attn.current = who if i >= warmup else f"{who}_warmup"
            dt = runs[who].step(i)
            if i >= warmup:
                runs[who].times.append(dt)
    out = {}
    for who, run in runs.items():
        out[who] = {**run.record(), **attn.record(who)}
    p, f = out["prompt"]["median_seconds"], out["finetune"]["median_seconds"]
    return {
        "size": size,
        "backbone": family,
        "batch_size": batch,
        "prompt": out["prompt"],
        "finetune": out["finetune"],
        "ratio_finetune_over_prompt": (f / p) if p else None,
        "same_initial_weights": out["prompt"]["generator_sha256_before"] == out["finetune"]["generator_sha256_before"],
        "frozen_unchanged": not out["prompt"]["generator_changed"],
        "device": str(dev),
        "torch_threads": torch.get_num_threads(),
        "math_attention_max_entries": attn.threshold,
    }


def run_isolated(size: str, pair: Sequence[str], st: dict) -> dict:
    payload = json.dumps({"size": size, "pair": list(pair), "settings": st})
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", payload], capture_output=True,
                          text=True, cwd=ROOT)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"{size} {pair[0]} / {pair[1]} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def table(by_size: dict) -> str:
    head = ("size", "pair", "batch", "prompt trainable", "finetune trainable", "prompt s/step", "finetune s/step",
            "ratio", "attention (prompt/finetune)")
    rows = [head]
    for size, pairs in by_size.items():
        for name, r in pairs.items():
            p, f = r["prompt"], r["finetune"]
            rows.append((size, name, str(r["batch_size"]), f"{p['trainable_params']:,}", f"{f['trainable_params']:,}",
                         f"{p['median_seconds']:.4f}", f"{f['median_seconds']:.4f}",
                         f"{r['ratio_finetune_over_prompt']:.2f}",
                         f"{p['attention_kernel']}/{f['attention_kernel']}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=None, help="comma-separated: embedded,d16 (default: both)")
    ap.add_argument("--steps", type=int, default=None, help=f"timed steps per method (default {DEFAULT_STEPS})")
    ap.add_argument("--warmup", type=int, default=None, help=f"untimed warm-up steps (default {DEFAULT_WARMUP})")
    ap.add_argument("--batch-size", type=int, default=None, help=f"d16 batch (default {D16_BATCH})")
    ap.add_argument("--embedded-batch-size", type=int, default=None,
                    help="embedded batch (default: params adaptation.train.batch_size)")
    ap.add_argument("--threads", type=int, default=None, help=f"torch threads (default {THREADS})")
    ap.add_argument("--smoke", action="store_true",
                    help=f"embedded size, {SMOKE_WARMUP} warm-up + {SMOKE_STEPS} steps, results to a temporary folder")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        payload = json.loads(args.worker)
        print("RESULT " + json.dumps(worker(payload["size"], payload["pair"], payload["settings"])), flush=True)
        return {}
    import torch

    params = load_repo_params()
    st = settings(params, args)
    bad = [s for s in st["benchmark.sizes"] if s not in SIZES]
    if bad:
        raise SystemExit(f"unknown sizes {bad}; allowed: {', '.join(SIZES)}")
    by_size: dict[str, dict] = {}
    for size in st["benchmark.sizes"]:
        by_size[size] = {}
        for pair in st["benchmark.pairs"]:
            r = run_isolated(size, pair, st)
            if not r["frozen_unchanged"]:
                raise SystemExit(f"{size} {pair[0]}: the frozen generator changed during the prompt steps")
            by_size[size][f"{pair[0]}/{pair[1]}"] = r
            print(f"{size} {pair[0]} vs {pair[1]}: {r['prompt']['median_seconds']:.4f} s vs "
                  f"{r['finetune']['median_seconds']:.4f} s, ratio {r['ratio_finetune_over_prompt']:.2f}", flush=True)
    print(table(by_size))
    results = {
        "what": "median seconds of one adaptation training step (forward with the method's injections, the "
                "backbone's training loss, backward, AdamW step) of a prompt method on the frozen backbone vs full "
                "fine-tuning of the same backbone at the same batch; ratio = finetune / prompt",
        "device": _device(st["adaptation.device"]),
        "gpu_available": torch.cuda.is_available(),
        "threads": st["adaptation.num_threads"],
        "steps": st["benchmark.steps"],
        "warmup": st["benchmark.warmup"],
        "method": "fresh process per (size, pair); prompt and fine-tuning steps interleaved (alternating which goes "
                  "first); the adapt loop's step through the library's method builders, Backbone.loss, AdamW and "
                  "the cosine schedule; random weights and tokens",
        "attention_note": "on CPU with a gradient recorded (torch.is_grad_enabled(): every training step) attend() "
                          "takes the explicit softmax(q k^T) v up to MATH_ATTENTION_MAX_ENTRIES entries of "
                          "B*H*Tq*Tk and SDPA above; GPUs always SDPA (genvpt.generators.common._use_math, unchanged)",
        "sizes": by_size,
        "table": table(by_size).splitlines(),
    }
    path = save_results(NAME, results, settings=st, declared=declared_overrides, params=params, smoke=args.smoke)
    results["path"] = str(path)
    return results


if __name__ == "__main__":
    main()
