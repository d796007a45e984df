"""DVC stage `report`: scores + sample sets -> report/index.html (self-contained) and report/report.md: every number
mean ± std (n seeds), the best per column marked only beyond the spread, the sampling noise stated once, headline
comparisons of row pairs with both spreads, averaged variants (mvp-random0/1/2), a sample grid per row (its first
seed), training curves and FD against trainable parameters (report/plots/*.png, DVC plots); with --classify, the
classification section (PGN and its baselines: methods x datasets, prompt inversion); with --targets, the "Other
targets" section (one table per extra target: FD, class accuracy, trainable parameters of its rows)."""
from __future__ import annotations

import argparse

from genvpt.config import load_params
from genvpt.faults import run_stage
from genvpt.logs import setup_logging
from genvpt.metrics.scoring import report_rows
from genvpt.report import DEFAULT_COMPARISONS, build_report


def _pair(text: str) -> tuple[str, str]:
    a, sep, b = text.partition(":")
    if not sep or not a or not b:
        raise argparse.ArgumentTypeError(f"--compare wants ROW_A:ROW_B, got {text!r}")
    return a, b


def main(argv: list[str] | None = None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scores", required=True, help="output folder of the score stage")
    ap.add_argument("--samples", required=True, help="folder of sample sets")
    ap.add_argument("--target", default=None, help="prepared target dataset (a grid of real images for reference)")
    ap.add_argument("--out", required=True, help="report folder (replaced atomically)")
    ap.add_argument("--compare", action="append", type=_pair, default=None, metavar="ROW_A:ROW_B",
                    help="a headline comparison, repeatable (default: "
                         + ", ".join(f"{a}:{b}" for a, b in DEFAULT_COMPARISONS) + ")")
    ap.add_argument("--memory-benchmark", default=None,
                    help="benchmarks/mvp_memory.py's result file (MVP vs prefilled peak memory at VAR-d16 size)")
    ap.add_argument("--classify", default=None,
                    help="folder of the classify@<config>-<dataset> stages' <dataset>/<config>.json (the "
                         "classification section)")
    ap.add_argument("--captions", default=None,
                    help="the caption stage's captions.parquet (the report says where the caption level came from)")
    ap.add_argument("--targets", default=None,
                    help="folder of the extra_target@<name> stages' <name>.json (the \"Other targets\" section)")
    ap.add_argument("--params", default=None, help="params file (default: params.yaml)")
    args = ap.parse_args(argv)
    setup_logging()
    params = load_params(args.params)
    return build_report(args.scores, args.samples, args.out, report_params=params.report,
                        comparisons=args.compare or [tuple(x.split(':')) for x in params.report.compare], order=report_rows(params),
                        target_dir=args.target, memory_benchmark=args.memory_benchmark,
                        classify_dir=args.classify, classify_order=list(params.classify.configs),
                        classify_datasets=list(params.classify.datasets), captions=args.captions,
                        targets_dir=args.targets, target_names=list(params.extra_targets))


if __name__ == "__main__":
    run_stage(main)
