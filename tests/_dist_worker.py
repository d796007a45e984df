"""The training runs tests/test_distributed.py compares: run in one process by the test, and under torchrun
(``python -m torch.distributed.run --standalone --nproc_per_node 2 tests/_dist_worker.py <case> <work> <results>``)
by this file's ``__main__``, where each rank saves what it returned to ``<results>/rank<r>.pt`` (a plain
``torch.save``: no output of training, so no genvpt writer and no fail point)."""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import torch

from genvpt import distributed
from genvpt.generators.train import _FamilyData, train_generator

from _adapt_tiny import tiny_backbone, tiny_data
from test_generator_training import class_tokens, tiny_msvq, tiny_params, tiny_vqgan

FAMILIES = ("ar", "maskgit", "var")
GEN_STEPS = 6
ADAPT_CASES = {  # name -> (backbone, method, options); global batch 8 of 24 samples, 4 steps
    "vpt-maskgit": ("maskgit", "vpt", {"prompt_length": 2}),  # masks, label drop and prompt dropout 0.1
    "mvp-var": ("var", "mvp", {"lambda_sen": 0, "lambda_cap": 0}),
    "lora-ar": ("ar", "lora", {}),  # trainable matrices inside the frozen generator
}


def _gen_params(**train):
    return tiny_params(**{"steps": GEN_STEPS, "batch_size": 8, "log_every": 1, "eval_every": 3,
                          "checkpoint_every": 3, "precision": "fp32", **train})


def generator_runs(work: Path) -> dict:
    """Each family trained for a few steps (label drop 0.1), and AR interrupted at step 5 then resumed."""
    out = {}
    for fam in FAMILIES:
        tok = tiny_msvq() if fam == "var" else tiny_vqgan()
        grid = (1, 2, 4, 8) if fam == "var" else (8,)
        res = train_generator(fam, _gen_params(), tokens=class_tokens(grid, n=32), val_tokens=class_tokens(grid, n=8, seed=1),
                              tokenizer=tok, seed=0, progress=False, state_path=work / fam / "train_state.pt")
        out[fam] = {"state": res.model.state_dict(), "history": res.history, "summary": res.summary}
    # interrupted after the state of step 3 was written, then resumed (every rank loads the state)
    orig, calls = _FamilyData.loss, {"n": 0}

    def crash_at_5(self, idx, **kw):
        if kw.get("train"):
            calls["n"] += 1
            if calls["n"] == 5:
                raise KeyboardInterrupt("simulated crash")
        return orig(self, idx, **kw)

    data, tok = class_tokens((8,), n=32), tiny_vqgan()
    state = work / "ar-resumed" / "train_state.pt"
    _FamilyData.loss = crash_at_5
    try:
        with contextlib.suppress(KeyboardInterrupt):  # the simulated crash
            train_generator("ar", _gen_params(eval_every=100), tokens=data, tokenizer=tok, seed=0, progress=False,
                            state_path=state)
    finally:
        _FamilyData.loss = orig
    res = train_generator("ar", _gen_params(eval_every=100), tokens=data, tokenizer=tok, seed=0, progress=False,
                          state_path=state)
    out["ar-resumed"] = {"state": res.model.state_dict(), "history": res.history, "summary": res.summary}
    return out


def _adapt_cfg(backbone: str, method: str, opts: dict):
    from genvpt.adaptation.params import AdaptationParams
    from genvpt.backbones import BACKBONES

    tok = BACKBONES[backbone].tokenizer_family
    train = {"steps": 4, "batch_size": 8, "checkpoint_every": 2, "warmup_steps": 0, "lr": 0.01}
    p = AdaptationParams(configs={"x": {"backbone": backbone, "tokenizer": tok, "method": method, "train": train,
                                        **opts}})
    return p.config("x")


def adapt_runs(work: Path) -> dict:
    """Each case trained for 4 steps; VPT also stopped after step 2 and resumed."""
    from genvpt.adaptation.semantic import state_hash
    from genvpt.adaptation.train import train_adaptation

    out = {}
    for name, (bb, method, opts) in ADAPT_CASES.items():
        backbone = tiny_backbone(bb)
        before = state_hash(backbone.generator)
        rec = train_adaptation(_adapt_cfg(bb, method, opts), backbone=backbone, data=tiny_data(bb),
                               out_dir=work / name, progress=False)
        out[name] = {"record": rec, "generator_before": before, "generator_after": state_hash(backbone.generator)}
    bb, method, opts = ADAPT_CASES["vpt-maskgit"]
    cfg = _adapt_cfg(bb, method, opts)
    stopped = train_adaptation(cfg, backbone=tiny_backbone(bb), data=tiny_data(bb), out_dir=work / "vpt-resumed",
                               progress=False, stop_after=2)
    rec = train_adaptation(cfg, backbone=tiny_backbone(bb), data=tiny_data(bb), out_dir=work / "vpt-resumed",
                           progress=False)
    out["vpt-resumed"] = {"record": rec, "stopped": stopped}
    return out


# classifier prompts on a tiny CLIP ViT (tests/test_classify_methods.py's): augmentations on, a global batch of 8
CLASSIFY_CASES = {"iip": {"method": "iip", "num_prompts": 4}, "vp": {"method": "vp", "train": {"lr": 1.0}},
                  "linear-probe": {"method": "linear_probe"},
                  "pgn": {"method": "pgn", "num_prompts": 4, "library_size": 16}}


def classify_runs(work: Path) -> dict:
    """Each classification case trained for 4 steps; IIP also stopped after step 2 and resumed."""
    from genvpt.classify.params import ClassifyParams
    from genvpt.classify.train import train_classifier, frozen_hashes
    from test_classify_methods import quadrants, tiny_clip

    params = ClassifyParams(train={"steps": 4, "batch_size": 8, "checkpoint_every": 2, "eval_batch_size": 16,
                                   "augment": {"crop_scale_min": 0.6}}, configs=CLASSIFY_CASES)
    train, val = quadrants(16, 1), quadrants(8, 2)
    out = {}
    for name in CLASSIFY_CASES:
        clip = tiny_clip()
        before = frozen_hashes(clip)
        rec = train_classifier(params.config(name), clip=clip, train_data=train, out_dir=work / name, seed=1,
                               eval_data={"val": val})
        out[name] = {"record": rec, "before": before, "after": frozen_hashes(clip)}
    cfg = params.config("iip")
    stopped = train_classifier(cfg, clip=tiny_clip(), train_data=train, out_dir=work / "iip-resumed", seed=1,
                               stop_after=2)
    rec = train_classifier(cfg, clip=tiny_clip(), train_data=train, out_dir=work / "iip-resumed", seed=1)
    out["iip-resumed"] = {"record": rec, "stopped": stopped}
    return out


CASES = {"generator": generator_runs, "adapt": adapt_runs, "classify": classify_runs}

if __name__ == "__main__":
    torch.set_num_threads(1)
    case, work, results = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    with distributed.session(distributed.DistributedParams(backend="gloo"), "cpu") as env:
        assert env is not None and distributed.world_size() == env.world_size
        result = CASES[case](work)
        result["rank"], result["world_size"], result["pid"] = distributed.rank(), distributed.world_size(), os.getpid()
        results.mkdir(parents=True, exist_ok=True)
        torch.save(result, results / f"rank{distributed.rank()}.pt")
