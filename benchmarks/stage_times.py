"""Where a full `make run` spends its time: the training, sampling and evaluation seconds every stage recorded in its
own outputs under data/, summed per stage family, and the sum over the pipeline.

    python benchmarks/stage_times.py     # reads data/ of this checkout -> benchmarks/results/stage_times.json

It runs nothing: it reads the time fields the stages write (`stage_seconds` / `train_seconds` / `eval_seconds` of the
pretrain stages' metrics.json, `train_time_s` of every adapted or classifier seed's record.json, `load_time_s` +
`sample_time_s` of every sample set), so each figure is the time of the run that produced the outputs now in data/,
under whatever load that run had (the records do not all say). Stages whose outputs record no time (prepare,
tokenize, caption, score, report, process start-up) are listed as not recorded; the sum is therefore a lower bound of
the wall time of a sequential run.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from _common import ROOT, save_results

declared_overrides = {  # settings params.yaml does not give (benchmarks/_common.py; tests/test_benchmarks_params.py)
    "benchmark.data": "the pipeline outputs whose recorded times are summed (--data)",
}


def settings(params, args=None) -> dict:
    """Every setting this benchmark reads (see benchmarks/_common.py): the params lists that set how many stage
    instances and seeds there are, and the data folder."""
    return {
        "adaptation.configs": {k: dict(v) for k, v in params.adaptation.configs.items()},
        "adaptation.seeds": list(params.adaptation.seeds),
        "classify.configs": {k: dict(v) for k, v in params.classify.configs.items()},
        "classify.datasets": dict(params.classify.datasets),
        "sample.sampling_seeds": list(params.sample.sampling_seeds),
        "benchmark.data": str(getattr(args, "data", "data") if args is not None else "data"),
    }


NOT_RECORDED = ["prepare", "tokenize", "caption", "score", "report", "process start-up of every stage"]


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _num(d: dict, *keys: str) -> float:
    return float(sum(d.get(k) or 0.0 for k in keys))


def collect(data: Path) -> dict[str, dict]:
    """stage family -> {seconds, instances, records, what}."""
    fam: dict[str, dict] = defaultdict(lambda: {"seconds": 0.0, "instances": set(), "records": 0, "what": ""})

    def add(family: str, instance: str, seconds: float, what: str) -> None:
        f = fam[family]
        f["seconds"] += seconds
        f["instances"].add(instance)
        f["records"] += 1
        f["what"] = what

    for p in sorted(data.glob("tokenizers/*/metrics.json")):
        add("pretrain_tokenizer", p.parent.name, _num(_read(p), "train_seconds", "eval_seconds"),
            "train_seconds + eval_seconds")
    for p in sorted(data.glob("generators/*/metrics.json")):
        add("pretrain_generator", p.parent.name, _num(_read(p), "stage_seconds"), "stage_seconds")
    for p in sorted(data.glob("classifier/*/metrics.json")):
        add("train_classifier", p.parent.name, _num(_read(p), "train_seconds"), "train_seconds")
    for name in ("clip", "clip-vit"):
        p = data / name / "metrics.json"
        if p.is_file():
            add("pretrain_" + name.replace("-", "_"), name, _num(_read(p), "train_time_s"), "train_time_s")
    for p in sorted(data.glob("adapted/*/seed-*/record.json")):
        add("adapt", p.parent.parent.name, _num(_read(p), "train_time_s"), "train_time_s per seed")
    for p in sorted(data.glob("samples/*/seed-*/record.json")):
        add("sample", p.parent.parent.name, _num(_read(p), "load_time_s", "sample_time_s"),
            "load_time_s + sample_time_s per set")
    for p in sorted(data.glob("classify/*/*/seed-*/record.json")):
        add("classify", f"{p.parent.parent.parent.name}/{p.parent.parent.name}", _num(_read(p), "train_time_s"),
            "train_time_s per seed")
    for p in sorted(data.glob("targets/*/adapted/*/seed-*/record.json")):
        add("extra_target", p.parents[3].name, _num(_read(p), "train_time_s"), "adapt train_time_s + sample times")
    for p in sorted(data.glob("targets/*/samples/*/seed-*/record.json")):
        add("extra_target", p.parents[3].name, _num(_read(p), "load_time_s", "sample_time_s"),
            "adapt train_time_s + sample times")
    return {k: {"seconds": round(v["seconds"], 1), "minutes": round(v["seconds"] / 60, 1),
                "instances": len(v["instances"]), "records": v["records"], "field": v["what"]}
            for k, v in fam.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="data", help="the pipeline's data folder (relative to the repository)")
    args = ap.parse_args(argv)
    from genvpt.config import load_params

    params = load_params(ROOT / "params.yaml")
    rows = collect(ROOT / args.data)
    if not rows:
        print(f"no stage records under {args.data}: run the pipeline first (make run)", file=sys.stderr)
        return 2
    total = sum(r["seconds"] for r in rows.values())
    width = max(map(len, rows))
    for k, r in sorted(rows.items(), key=lambda kv: -kv[1]["seconds"]):
        print(f"{k:<{width}}  {r['minutes']:7.1f} min  {r['instances']:3d} instances  {r['records']:3d} records")
    print(f"{'total recorded':<{width}}  {total / 60:7.1f} min")
    save_results("stage_times", {"stages": rows, "total_seconds": round(total, 1),
                                 "total_minutes": round(total / 60, 1), "not_recorded": NOT_RECORDED,
                                 "note": "times the stages recorded in their own outputs under data/; a lower bound "
                                         "of a sequential run's wall time"},
                 settings=settings(params, args), declared=declared_overrides, params=params)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
