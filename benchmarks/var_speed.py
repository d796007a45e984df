"""VAR-d16 sampling speed: genvpt's sampler against the official FoundationVision/VAR sampler on the same weights,
fp32 / bf16 autocast / torch.compile / CUDA graphs, batch 2 and 8 (and 64 on a GPU).

    python benchmarks/var_speed.py [--official PATH] [--device cpu|cuda] [--batches 2 8] [--modes ...]
                                   [--repeats 3] [--no-parity] [--smoke]

Random VAR-d16 weights (16 blocks, width 1024, 4096 codes, the 10 scales of 256 px, 1000 classes) with the
quantizer steps of VAR's VAE (benchmarks/sample.py's stub: the VAE's convolutions are not part of sampling), sampled
with the settings of the official timings quoted in issue #16 (cfg 1.5, top-k 900, top-p 0.96, 2 threads). Those
figures (50-52 s for a batch of 2 and 109-112 s for 8, under a load of about 4, with pixel decoding) are kept in the
settings as context only. ``--official PATH`` (a checkout of github.com/FoundationVision/VAR, not part of genvpt)
times the official ``autoregressive_infer_cfg`` here, interleaved with genvpt's paths, on the same weights loaded
strictly, with the same quantizer stub and no pixel decoding on either side; its parity with genvpt is checked
first (both greedy: the final f_hat of both must agree), and every mode gets ``speedup_vs_official_fp32``.

Modes (``MODES``): ``official`` / ``official-bf16``: the official sampler in fp32 / under bf16 autocast;
``fp32-math``: genvpt with every attention through the explicit softmax(q k^T) v (its CPU sampling path before
issue #16); ``fp32``: genvpt's automatic choice (SDPA whenever no gradient is recorded); ``bf16``: ``fp32`` under
``torch.autocast(<device>, torch.bfloat16)``; ``*-compile``: ``generator.var.sample.compile`` (torch.compile per
block, one graph per scale); ``*-graphs``: ``generator.var.sample.cuda_graphs`` (one CUDA graph per scale).
``first_call_seconds`` is the first call at a batch size (compilation, capture); the median of ``--repeats``
interleaved runs after it is reported. ``token_agreement_with_<eager>``: the share of tokens a compiled / graph
run draws equal to the eager run of the same precision with the same seed (equal logits give equal tokens; on these
random weights the next-token distributions are almost flat, so a last-bit rounding difference of a fused kernel
changes a draw and every later scale: graph replay must agree fully, compiled kernels need not).

Parity of bf16 with fp32 (CPU runs): teacher-forced next-scale argmax agreement of the embedded default's trained
VAR (``data/generators/var/model.pt``) on the target's token shards (``data/tokens/msvq/target``) when they exist,
and of the random d16 model on random tokens; and FD-CLIP (the scoring CLIP) between that VAR's sample sets drawn
in fp32 and in bf16 at two sampling seeds each, next to the FD between the two fp32 seeds (the sampling noise).

Writes benchmarks/results/var_speed.json (``--device cuda``: var_speed_cuda.json; ``--smoke``: a d2 model,
batch 1, a temporary folder).
"""
from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from benchmarks._common import load_repo_params, save_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
D16 = {"depth": 16, "vocab_size": 4096, "Cvae": 32, "num_classes": 1000,
       "patch_nums": [1, 2, 3, 4, 5, 6, 8, 10, 13, 16]}
OFFICIAL_SAMPLE = {"cfg": 1.5, "top_k": 900, "top_p": 0.96, "temperature": 1.0}
OFFICIAL_SECONDS = {2: [50.0, 52.0], 8: [109.0, 112.0]}
# mode -> (autocast bf16, explicit attention product, torch.compile, CUDA graphs)
MODES = {
    "fp32-math": (False, True, False, False),
    "fp32": (False, False, False, False),
    "bf16": (True, False, False, False),
    "fp32-compile": (False, False, True, False),
    "bf16-compile": (True, False, True, False),
    "fp32-graphs": (False, False, False, True),
    "bf16-graphs": (True, False, False, True),
    "bf16-compile-graphs": (True, False, True, True),
    # the official FoundationVision/VAR sampler (autoregressive_infer_cfg) on the same weights, with --official PATH
    "official": (False, False, False, False),
    "official-bf16": (True, False, False, False),
}
DEFAULT_MODES = {"cpu": ["fp32-math", "fp32", "bf16", "fp32-compile", "bf16-compile"],
                 "cuda": ["fp32", "bf16", "fp32-graphs", "bf16-graphs", "bf16-compile", "bf16-compile-graphs"]}
DEFAULT_BATCHES = {"cpu": [2, 8], "cuda": [2, 8, 64]}
THREADS = 2

declared_overrides = {
    "var_speed.sizes": "VAR-d16's published sizes (the model of the official timings), not the embedded default's",
    "var_speed.sample": "the official timings' settings (cfg 1.5, top-k 900, top-p 0.96), not generator.var.sample",
    "var_speed.threads": "2 threads, as the official timings (generator.num_threads is null: torch's default)",
    "var_speed.batches": "batch 2 and 8, as the official timings",
    "var_speed.modes": "attention path, precision, torch.compile and CUDA graphs of the cached step (--modes)",
    "var_speed.device": "cpu (this machine) or cuda (a lent GPU: results in var_speed_cuda.json) (--device)",
    "var_speed.repeats": "timed runs per batch and mode, interleaved; the median is reported (--repeats)",
    "var_speed.official_seconds": "the official code's seconds per batch quoted from issue #16 (load about 4, with "
                                  "VAE decoding): context only, not comparable with the seconds measured here",
    "var_speed.parity_model": "the embedded default's trained VAR (and its tokenizer) and target tokens used for the "
                              "bf16 parity checks",
}


def settings(params, device: str = "cpu") -> dict:
    var = params.generator.family("var")
    return {
        "generator.var.attn_l2_norm": var.attn_l2_norm,
        "generator.var.shared_aln": var.shared_aln,
        "generator.var.mlp_ratio": var.mlp_ratio,
        "var_speed.sizes": D16,
        "var_speed.sample": OFFICIAL_SAMPLE,
        "var_speed.threads": THREADS,
        "var_speed.batches": DEFAULT_BATCHES[device],
        "var_speed.modes": DEFAULT_MODES[device],
        "var_speed.device": device,
        "var_speed.repeats": 3,
        "var_speed.official_seconds": {str(k): v for k, v in OFFICIAL_SECONDS.items()},
        "var_speed.parity_model": {"generator": "data/generators/var/model.pt", "tokens": "data/tokens/msvq/target"},
        "generator.var.sample": var.sample.model_dump(),
        "sample.images_per_class": params.sample.images_per_class,
        "sample.batch_size": params.sample.batch_size,
        "clip.pretrained": params.clip.pretrained,
    }


def _d16(st: dict, smoke: bool, device: str = "cpu"):
    from benchmarks.sample import _QuantizerStub
    from genvpt.generators.var import VAR, build_var_config

    cfg = dict(st["var_speed.sizes"])
    depth = 2 if smoke else cfg.pop("depth")
    cfg.pop("depth", None)
    torch.manual_seed(0)
    m = VAR(build_var_config(depth, patch_nums=cfg.pop("patch_nums"), attn_l2_norm=st["generator.var.attn_l2_norm"],
                             shared_aln=st["generator.var.shared_aln"], mlp_ratio=st["generator.var.mlp_ratio"],
                             **cfg)).eval()
    return m.to(device), _QuantizerStub(m.cfg).to(device)


@contextlib.contextmanager
def _mode(mode: str, device: str):
    from genvpt.generators import common

    bf16, math_path, _, _ = MODES[mode]
    saved = common._use_math
    if math_path:
        common._use_math = lambda q, k, dropout_p: True  # the explicit product for every attention
    try:
        if bf16:
            with torch.autocast(device, dtype=torch.bfloat16):
                yield
        else:
            yield
    finally:
        common._use_math = saved


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def official_var(path: str, model, tok):
    """The official sampler from a checkout of FoundationVision/VAR at ``path`` (its models/var.py,
    models/basic_var.py, models/helpers.py; not part of genvpt, never committed here), built at the benchmark model's
    sizes and loaded strictly with its weights. Its VAE is reduced to what sampling touches: the same quantizer stub
    genvpt's sampler gets, and no pixel decoding (``fhat_to_img`` returns f_hat), so both time the same work."""
    sys.path.insert(0, str(Path(path).resolve()))
    from models.var import VAR as OfficialVAR  # noqa: E402  (the official package is named "models")

    class _VAE:
        Cvae, vocab_size, quantize = model.cfg.Cvae, model.cfg.vocab_size, tok

        @staticmethod
        def fhat_to_img(f_hat):
            return f_hat.clone()

    cfg = model.cfg
    om = OfficialVAR(_VAE(), num_classes=cfg.num_classes, depth=cfg.depth, embed_dim=cfg.C, num_heads=cfg.heads,
                     mlp_ratio=cfg.mlp_ratio, drop_path_rate=cfg.dpr, norm_eps=cfg.norm_eps, shared_aln=cfg.shared_aln,
                     attn_l2_norm=cfg.attn_l2_norm, patch_nums=cfg.patch_nums, flash_if_available=False,
                     fused_if_available=False)
    om.load_state_dict(model.state_dict(), strict=True)
    return om.eval().to(next(model.parameters()).device)


def official_parity(model, tok, official, device: str) -> dict:
    """Both samplers greedy (top-k 1: no random draw decides anything), guidance on, batch 2: the final f_hat (the
    summed multi-scale features the VAE decodes) of genvpt against the official code's."""
    labels = torch.arange(2, device=device) % model.cfg.num_classes
    ours = model.sample(labels, tokenizer=tok, cfg=1.5, top_k=1, top_p=0.0, return_fhat=True)[1]
    theirs = official.autoregressive_infer_cfg(2, labels, g_seed=0, cfg=1.5, top_k=1, top_p=0.0).mul(2).sub(1)
    return {"greedy_fhat_max_abs_diff": float((ours - theirs).abs().max()),
            "greedy_fhat_max_abs": float(theirs.abs().max())}


def time_sampling(model, tok, batch: int, mode: str, sample: dict, device: str = "cpu", official=None) -> dict:
    labels = torch.arange(batch, device=device) % model.cfg.num_classes
    g = torch.Generator(device=device).manual_seed(0)
    _, _, compiled, graphs = MODES[mode]
    with _mode(mode, device):
        _sync(device)
        t0 = time.perf_counter()
        if mode.startswith("official"):  # returns features, not tokens (and draws with its own generator)
            official.autoregressive_infer_cfg(batch, labels, g_seed=0, cfg=sample["cfg"], top_k=sample["top_k"],
                                              top_p=sample["top_p"])
            out = None
        else:
            out = model.sample(labels, tokenizer=tok, generator=g, compile=compiled, cuda_graphs=graphs, **sample)
        _sync(device)
        dt = time.perf_counter() - t0
    return {"mode": mode, "batch": batch, "seconds": round(dt, 4), "images_per_second": round(batch / dt, 4),
            "tokens": None if out is None else [t[:, :8].tolist() for t in out[:2]],
            "all_tokens": None if out is None else [t.cpu() for t in out]}


def argmax_agreement(logits_fn) -> dict:
    """Share of positions where the teacher-forced logits' argmax under bf16 autocast equals fp32's."""
    with torch.inference_mode():
        ref = logits_fn()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = logits_fn()
    agree = (ref.argmax(-1) == low.float().argmax(-1)).float()
    return {"argmax_agreement": round(float(agree.mean()), 5), "positions": int(agree.numel()),
            "max_abs_logit_diff": round(float((ref - low.float()).abs().max()), 4)}


def parity(st: dict, model, smoke: bool) -> dict:
    """bf16 against fp32, teacher forced: the embedded default's trained VAR on the target's val tokens (when the
    pipeline has produced them) and the random d16 model on random tokens."""
    out = {}
    paths = st["var_speed.parity_model"]
    gen, tokens = ROOT / paths["generator"], ROOT / paths["tokens"]
    if gen.is_file() and (tokens / "val").is_dir():
        from genvpt.backbones import load_backbone
        from genvpt.tokenizers.token_shards import load_tokens
        from genvpt.adaptation.run import tokenizer_of_tokens
        from genvpt.backbones.base import Injections

        bb = load_backbone("var", gen, ROOT / tokenizer_of_tokens(tokens), device="cpu")
        data = load_tokens(tokens, "val")
        n = 16 if smoke else len(data.labels)
        scales = [s[:n] for s in data.scales]
        labels = data.labels[:n] % bb.generator.num_classes
        out["embedded_trained_var_target_val"] = {
            **argmax_agreement(lambda: bb.logits(scales, labels, Injections())), "images": n}
    else:
        out["embedded_trained_var_target_val"] = f"not run: {gen} or {tokens}/val missing (run the pipeline first)"
    g = torch.Generator().manual_seed(1)
    B = 1 if smoke else 2
    x = torch.randn(B, model.L - model.first_l, model.cfg.Cvae, generator=g)
    labels = torch.arange(B)
    out["d16_random_weights"] = {**argmax_agreement(lambda: model(labels, x)), "images": B}
    return out


def fd_parity(st: dict, params, smoke: bool) -> dict:
    """FD-CLIP between sample sets of the embedded default's trained VAR drawn in fp32 and under bf16 autocast, two
    sampling seeds each, against FD between the two fp32 seeds (the sampling noise): params' generator.var.sample,
    sample.images_per_class per class, the scoring CLIP (clip.pretrained)."""
    gen = ROOT / st["var_speed.parity_model"]["generator"]
    tokens = ROOT / st["var_speed.parity_model"]["tokens"]
    clip_path = ROOT / st["clip.pretrained"]
    if not (gen.is_file() and clip_path.is_file() and (tokens / "meta.json").is_file()):
        return {"not_run": f"{gen}, {clip_path} or {tokens} missing (run the pipeline first)"}
    from genvpt.adaptation.run import tokenizer_of_tokens
    from genvpt.backbones import load_backbone
    from genvpt.metrics.features import encode_images
    from genvpt.metrics.fidelity import feature_metrics
    from genvpt.metrics.scoring import load_scoring_clip

    bb = load_backbone("var", gen, ROOT / tokenizer_of_tokens(tokens), device="cpu",
                       sample_defaults=dict(st["generator.var.sample"]))
    clip = load_scoring_clip(params, clip_path)
    per_class = 2 if smoke else int(st["sample.images_per_class"])
    labels = torch.arange(bb.generator.num_classes).repeat_interleave(per_class)
    feats, secs = {}, {}
    for prec in ("fp32", "bf16"):
        for seed in (0, 1):
            ctx = torch.autocast("cpu", dtype=torch.bfloat16) if prec == "bf16" else contextlib.nullcontext()
            t0 = time.perf_counter()
            with ctx:
                imgs = bb.sample_images(labels, seed=seed, batch_size=int(st["sample.batch_size"]))
            secs[f"{prec}_seed{seed}"] = round(time.perf_counter() - t0, 2)
            feats[(prec, seed)] = encode_images(clip, imgs)

    def fd(a, b) -> float:
        m = feature_metrics(feats[a], feats[b], kid_subsets=2, kid_subset_size=min(100, len(labels)))
        return round(m["fd_clip"], 5)

    return {
        "images_per_set": int(len(labels)),
        "fd_fp32_seed0_vs_fp32_seed1": fd(("fp32", 0), ("fp32", 1)),
        "fd_bf16_seed0_vs_bf16_seed1": fd(("bf16", 0), ("bf16", 1)),
        "fd_bf16_seed0_vs_fp32_seed1": fd(("bf16", 0), ("fp32", 1)),
        "fd_fp32_seed0_vs_bf16_seed1": fd(("fp32", 0), ("bf16", 1)),
        "fd_bf16_seed0_vs_fp32_seed0": fd(("bf16", 0), ("fp32", 0)),
        "sampling_seconds": secs,
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--batches", type=int, nargs="*", default=None)
    ap.add_argument("--modes", nargs="*", default=None, choices=list(MODES))
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per batch and mode (median reported)")
    ap.add_argument("--official", default=None, metavar="PATH",
                    help="a checkout of FoundationVision/VAR: adds the official sampler on the same weights "
                         "(modes official, official-bf16) and speedups against it")
    ap.add_argument("--no-parity", action="store_true", help="skip the bf16 parity checks (teacher forcing, FD-CLIP)")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args(argv)
    device = args.device
    params = load_repo_params()
    st = settings(params, device)
    if args.modes:
        st["var_speed.modes"] = list(args.modes)
    if args.batches:
        st["var_speed.batches"] = list(args.batches)
    st["var_speed.repeats"] = args.repeats
    if args.official and not args.modes:
        st["var_speed.modes"] = ["official", "official-bf16"] + st["var_speed.modes"]
    modes = st["var_speed.modes"]
    if any(m.startswith("official") for m in modes) and not args.official:
        ap.error("modes official / official-bf16 need --official PATH (a checkout of FoundationVision/VAR)")
    torch.set_num_threads(int(st["var_speed.threads"]))
    batches = [1] if args.smoke else list(st["var_speed.batches"])
    model, tok = _d16(st, args.smoke, device)
    model.sample(torch.zeros(1, dtype=torch.long, device=device), tokenizer=tok, cfg=0.0)  # allocate / load kernels
    official = official_var(args.official, model, tok) if args.official else None
    parity_official = official_parity(model, tok, official, device) if official is not None else None
    if parity_official:
        print("official parity (greedy):", parity_official, flush=True)
    rows, failed = [], []
    for batch in batches:
        runs: dict[str, list[dict]] = {m: [] for m in modes}
        first: dict[str, float] = {}
        for mode in list(modes):  # the first call of a batch size compiles / captures: timed on its own
            try:
                first[mode] = time_sampling(model, tok, batch, mode, st["var_speed.sample"], device, official)["seconds"]
            except Exception as e:  # a path that fails here is recorded, not fatal to the other paths
                failed.append({"mode": mode, "batch": batch, "error": f"{type(e).__name__}: {e}"[:2000]})
                print(f"batch {batch} {mode}: FAILED {failed[-1]['error'][:300]}", flush=True)
                runs.pop(mode)
        for rep in range(args.repeats):  # interleaved, so that a change of machine load hits every mode alike
            for mode in runs:
                runs[mode].append(time_sampling(model, tok, batch, mode, st["var_speed.sample"], device, official))
        base_mode = "fp32-math" if "fp32-math" in runs else ("fp32" if "fp32" in runs else None)
        for mode in runs:
            secs = sorted(r["seconds"] for r in runs[mode])
            r = {"mode": mode, "batch": batch, "seconds_median": secs[len(secs) // 2], "seconds_all": secs,
                 "first_call_seconds": first[mode],
                 "images_per_second": round(batch / secs[len(secs) // 2], 4), "tokens": runs[mode][0]["tokens"]}
            eager = "bf16" if MODES[mode][0] else "fp32"
            if "official" in runs and mode != "official":
                off = sorted(x["seconds"] for x in runs["official"])
                r["speedup_vs_official_fp32"] = round(off[len(off) // 2] / r["seconds_median"], 3)
            if eager in runs and mode != eager and not mode.startswith("official"):  # same draws: do compiled / graph-replayed steps give the same tokens?
                a = torch.cat([t.flatten() for t in runs[mode][0]["all_tokens"]])
                b = torch.cat([t.flatten() for t in runs[eager][0]["all_tokens"]])
                r[f"token_agreement_with_{eager}"] = round(float((a == b).float().mean()), 5)
            if base_mode and mode != base_mode:
                base = sorted(x["seconds"] for x in runs[base_mode])
                r[f"speedup_vs_{base_mode}"] = round(base[len(base) // 2] / r["seconds_median"], 3)
            print(f"batch {batch} {mode:19s} median {r['seconds_median']:8.4f} s {secs} first call "
                  f"{first[mode]:.2f} s  x{r.get(f'speedup_vs_{base_mode}', 1.0)} vs {base_mode}  "
                  f"x{r.get('speedup_vs_official_fp32', '-')} vs official fp32  "
                  f"{ {k: v for k, v in r.items() if k.startswith('token_agreement')} }", flush=True)
            rows.append(r)
    results = {"rows": rows, "official_parity": parity_official, "failed": failed, "torch": torch.__version__, "threads": torch.get_num_threads(),
               "device": device}
    if device == "cuda":
        results["gpu"] = torch.cuda.get_device_name(0)
    if not args.no_parity and device == "cpu":
        par = parity(st, model, args.smoke)
        par["fd_clip_embedded_var"] = fd_parity(st, params, args.smoke)
        print("bf16 parity:", par, flush=True)
        results["bf16_parity"] = par
    name = "var_speed" if device == "cpu" else "var_speed_cuda"
    save_results(name, results, settings=st, declared=declared_overrides, params=params, smoke=args.smoke)
    return results


if __name__ == "__main__":
    main()
