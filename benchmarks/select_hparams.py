"""Hyperparameter selection on the target's VAL split (never on test, which the report scores).

For each adaptation configuration named with ``--config`` (default: the VPT configurations of params.yaml), train it
once with each candidate value of ``--key`` (default ``train.lr``; candidates ``--values``) with the first training
seed of ``adaptation.seeds``, and record the backbone's training loss on the held-out val tokens before and after
(next-token CE for the AR, masked-token CE with a fixed mask seed for MaskGIT, teacher-forced CE for VAR). The value
with the lowest val loss is reported as ``chosen``; params.yaml is not edited (copy the choice by hand, with this file
as the evidence).

Needs the pipeline's outputs up to ``tokenize@*-target`` and ``pretrain_generator@*`` (data/). Everything else comes
from params.yaml (adaptation.train and the configuration's own options).

    python benchmarks/select_hparams.py --config vpt-ar --config vpt-maskgit --values 0.001 0.003 0.01 0.03
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from _common import ROOT, add_search_arguments, save_results, search_config


DEFAULT_VALUES = [0.001, 0.003, 0.01, 0.03]  # --values' default
declared_overrides = {  # settings params.yaml does not give (benchmarks/_common.py; tests/test_benchmarks_params.py)
    "benchmark.search": "what is compared: --key with each of --values (and every --set), over params.yaml's value; "
                        "params.yaml is not edited",
    "benchmark.device": "backbones are loaded on CPU here (load_backbone(device='cpu')), whatever "
                        "adaptation.device says",
    "benchmark.split": "the selection is made on the val split (the report scores test)",
}


def settings(params, args=None) -> dict:
    """Every setting this benchmark runs with (see benchmarks/_common.py)."""
    names = list(getattr(args, "config", None) or []) if args is not None else []
    names = names or [n for n, c in params.adaptation.configs.items() if c.get("method") == "vpt"]
    st = {"adaptation.seeds": list(params.adaptation.seeds),
          "adaptation.train": params.adaptation.train.model_dump(mode="json"),
          "caption.sentence_template": params.caption.sentence_template}
    for n in names:
        st[f"adaptation.configs.{n}"] = dict(params.adaptation.configs[n])
    st["benchmark.search"] = {"key": getattr(args, "key", "train.lr") if args is not None else "train.lr",
                              "values": list(getattr(args, "values", None) or DEFAULT_VALUES),
                              "set": list(getattr(args, "set", None) or [])}
    st["benchmark.device"] = "cpu"
    st["benchmark.split"] = "val"
    return st


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", action="append", default=None)
    add_search_arguments(ap, "select_hparams", DEFAULT_VALUES)
    args = ap.parse_args()
    import torch

    from genvpt.adaptation.data import load_train_data
    from genvpt.adaptation.params import AdaptationParams
    from genvpt.adaptation.train import train_adaptation
    from genvpt.backbones import load_backbone
    from genvpt.config import load_params

    logging.basicConfig(level=logging.WARNING)
    params = load_params(ROOT / "params.yaml")
    ap_ = params.adaptation
    names = args.config or [n for n, c in ap_.configs.items() if c.get("method") == "vpt"]
    seed = ap_.seeds[0]
    results = {}
    for name in names:
        base = ap_.config(name)
        tokens = ROOT / "data" / "tokens" / base.tokenizer / "target"
        gen = ROOT / "data" / "generators" / base.backbone / "model.pt"
        tok = ROOT / "data" / "tokenizers" / base.tokenizer / "model.pt"
        data = load_train_data(tokens, None, params.caption.sentence_template)
        val = load_train_data(tokens, None, params.caption.sentence_template, split="val")
        rows = []
        for v in args.values:
            raw = search_config(ap_.configs[name], args.key, v, args.set)
            cfg = AdaptationParams(train=ap_.train, configs={name: raw}).config(name)
            backbone = load_backbone(base.backbone, gen, tok, device="cpu")
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory() as d:
                rec = train_adaptation(cfg, backbone=backbone, data=data, out_dir=d, seed=seed, progress=False,
                                       val_data=val)
            rows.append({"value": v, "val_loss_before": rec["val_loss_before"], "val_loss_after": rec["val_loss_after"],
                         "final_train_loss": rec["final_loss"], "trainable_params": rec["trainable_params"],
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(name, args.key, v, rows[-1])
        best = min(rows, key=lambda r: r["val_loss_after"])
        results[name] = {"key": args.key, "seed": seed, "train_samples": len(data), "val_samples": len(val),
                         "rows": rows, "chosen": best["value"]}
    save_results(args.name, {"settings": {"key": args.key, "values": args.values, "set": args.set, "configs": names,
                                          "adaptation_train": ap_.train.model_dump(mode="json")},
                             "split": "val", "results": results},
                 settings=settings(params, args), declared=declared_overrides, params=params)


if __name__ == "__main__":
    main()
