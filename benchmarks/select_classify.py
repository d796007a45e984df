"""Settings of the classification methods chosen on the VAL split (never on test, which the report scores).

For each configuration of ``classify.configs`` named with ``--config`` (default: pgn and iip) and each dataset of
``classify.datasets`` named with ``--dataset`` (default: all), train it once per candidate value of ``--key``
(default ``train.lr``; candidates ``--values``) with the first seed of ``classify.seeds`` (or every seed of ``--seeds``,
for settings that fail on some seeds only) on the dataset's train split, and record top-1 on its val split. Per
configuration the value with the best mean val top-1 over the datasets (and seeds) is reported as ``chosen`` (one value per configuration: the table's rows use one setting on every column); params.yaml is
not edited (copy the choice by hand, with this file as the evidence).

Needs ``data/clip-vit/model.pt`` (stage pretrain_clip_vit) and ``data/prepared/classify/<dataset>`` (stages
prepare_classify@<dataset>). Everything else comes from params.yaml (classify.train and the configuration's options).

    python benchmarks/select_classify.py --config pgn --config iip --values 0.01 0.03 0.1 0.3
    python benchmarks/select_classify.py --summarize benchmarks/results/select_classify_pgn_clip.json
"""
from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time

from _common import ROOT, add_search_arguments, save_results, search_config

DEFAULT_CONFIGS = ["pgn", "iip"]
DEFAULT_VALUES = [0.01, 0.03, 0.1, 0.3]
declared_overrides = {  # settings params.yaml does not give (benchmarks/_common.py; tests/test_benchmarks_params.py)
    "benchmark.search": "what is compared: --key with each of --values (and every --set), over params.yaml's value; "
                        "params.yaml is not edited",
    "benchmark.split": "the selection is made on the val split (the report scores test)",
    "benchmark.seeds": "the training seeds each candidate runs with: the first of classify.seeds unless --seeds",
}


def settings(params, args=None) -> dict:
    """Every setting this benchmark runs with (see benchmarks/_common.py)."""
    names = list(getattr(args, "config", None) or []) if args is not None else []
    names = names or [n for n in DEFAULT_CONFIGS if n in params.classify.configs]
    datasets = list(getattr(args, "dataset", None) or []) if args is not None else []
    st = {"classify.seeds": list(params.classify.seeds), "classify.train": params.classify.train.model_dump(mode="json"),
          "classify.template": params.classify.template, "classify.clip": params.classify.clip.model_dump(mode="json"),
          "classify.num_threads": params.classify.num_threads}
    for n in names:
        st[f"classify.configs.{n}"] = dict(params.classify.configs[n])
    for d in datasets or list(params.classify.datasets):
        st[f"classify.datasets.{d}"] = params.classify.datasets[d]
    st["benchmark.search"] = {"key": getattr(args, "key", "train.lr") if args is not None else "train.lr",
                              "values": list(getattr(args, "values", None) or DEFAULT_VALUES),
                              "set": list(getattr(args, "set", None) or [])}
    st["benchmark.split"] = "val"
    st["benchmark.seeds"] = list(getattr(args, "seeds", None) or params.classify.seeds[:1])
    return st


def seed_spread(row: dict) -> dict:
    """A multi-seed row's mean val top-1 over the datasets per seed, and its sample std over the seeds (the spread a
    comparison of two values needs); {} for a one-seed row."""
    per = row.get("val_top1_per_seed")
    if not per:
        return {}
    seeds = sorted(next(iter(per.values())))
    means = {s: statistics.fmean(per[d][s] for d in per) for s in seeds}
    return {"val_top1_mean_per_seed": means, "val_top1_mean_std": statistics.stdev(means.values())}


def summarize(path: str) -> None:
    """Print each candidate's mean val top-1 ± its spread over seeds from a results file (written by this script)."""
    import json

    for name, res in json.loads(open(path).read())["results"].items():
        for row in res["rows"]:
            sp = seed_spread(row)
            spread = f" ± {100 * sp['val_top1_mean_std']:.1f}" if sp else " (one seed)"
            print(f"{name} {res['key']}={row['value']}: mean val top-1 {100 * row['val_top1_mean']:.1f}{spread}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", action="append", default=None, help="a name in classify.configs (repeatable)")
    ap.add_argument("--dataset", action="append", default=None, help="a name in classify.datasets (repeatable)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="training seeds per candidate (default: the first of classify.seeds)")
    add_search_arguments(ap, "select_classify", DEFAULT_VALUES)
    ap.add_argument("--summarize", default=None, metavar="RESULTS_JSON",
                    help="only print a results file's candidates: mean val top-1 and its spread over seeds")
    args = ap.parse_args()
    if args.summarize:
        return summarize(args.summarize)
    import torch

    from genvpt.classify.data import load_prepared_split
    from genvpt.classify.params import ClassifyParams
    from genvpt.classify.run import classify_clip_block
    from genvpt.classify.train import train_classifier
    from genvpt.clip import load_clip
    from genvpt.config import load_params

    logging.basicConfig(level=logging.WARNING)
    params = load_params(ROOT / "params.yaml")
    cp = params.classify
    if cp.num_threads:
        torch.set_num_threads(cp.num_threads)
    names = args.config or [n for n in DEFAULT_CONFIGS if n in cp.configs]
    datasets = args.dataset or list(cp.datasets)
    seeds = list(args.seeds or cp.seeds[:1])
    block = classify_clip_block(params, str(ROOT / "data" / "clip-vit" / "model.pt"))
    data = {}
    for d in datasets:
        prepared = ROOT / "data" / "prepared" / "classify" / d
        data[d] = (load_prepared_split(prepared, "train"), load_prepared_split(prepared, "val"))
    results = {}
    for name in names:
        rows = []
        for v in args.values:
            raw = search_config(cp.configs[name], args.key, v, args.set)
            cfg = ClassifyParams(train=cp.train, configs={name: raw}).config(name)
            row = {"value": v, "val_top1": {}, "seconds": {}}
            if len(seeds) > 1:
                row["val_top1_per_seed"], row["val_top1_min"] = {}, {}
            for d, (train, val) in data.items():
                t0 = time.perf_counter()
                per_seed = {}
                for seed in seeds:
                    with tempfile.TemporaryDirectory() as out:
                        rec = train_classifier(cfg, clip=load_clip(block, device="cpu"), train_data=train,
                                               out_dir=out, seed=seed, eval_data={"val": val}, template=cp.template,
                                               progress=False)
                    per_seed[f"seed-{seed}"] = rec["eval"]["val"]["top1"]
                    print(name, args.key, v, d, seed, per_seed[f"seed-{seed}"], flush=True)
                row["val_top1"][d] = statistics.fmean(per_seed.values())
                if len(seeds) > 1:
                    row["val_top1_per_seed"][d] = per_seed
                    row["val_top1_min"][d] = min(per_seed.values())
                row["seconds"][d] = round(time.perf_counter() - t0, 1)
            row["val_top1_mean"] = statistics.fmean(row["val_top1"].values())
            row.update(seed_spread(row))
            rows.append(row)
        best = max(rows, key=lambda r: r["val_top1_mean"])
        results[name] = {"key": args.key, "seeds": seeds, "rows": rows, "chosen": best["value"],
                         "chosen_per_dataset": {d: max(rows, key=lambda r, d=d: r["val_top1"][d])["value"]
                                                for d in datasets}}
    save_results(args.name, {"split": "val", "datasets": datasets, "results": results},
                 settings=settings(params, args), declared=declared_overrides, params=params)


if __name__ == "__main__":
    main()
