"""DVC stage `report`: scores + sample sets -> report/index.html (self-contained) and report/report.md, with the
metrics table (best per column marked), a sample grid per configuration, training curves and FD against trainable
parameters (report/plots/*.png, DVC plots)."""
from __future__ import annotations

import argparse

from genvpt.config import load_params
from genvpt.logs import setup_logging
from genvpt.report import build_report


def main(argv: list[str] | None = None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scores", required=True, help="output folder of the score stage")
    ap.add_argument("--samples", required=True, help="folder of sample sets")
    ap.add_argument("--target", default=None, help="prepared target dataset (a grid of real images for reference)")
    ap.add_argument("--out", required=True, help="report folder (replaced atomically)")
    ap.add_argument("--memory-benchmark", default=None,
                    help="benchmarks/mvp_memory.py's result file (MVP vs prefilled peak memory at VAR-d16 size)")
    ap.add_argument("--params", default=None, help="params file (default: params.yaml)")
    args = ap.parse_args(argv)
    setup_logging()
    params = load_params(args.params)
    return build_report(args.scores, args.samples, args.out, sample_params=params.sample,
                        report_params=params.report, target_dir=args.target,
                        memory_benchmark=args.memory_benchmark)


if __name__ == "__main__":
    main()
