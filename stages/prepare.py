"""DVC stage `prepare` / `prepare_source`: a dataset block of params.yaml -> WebDataset shards + manifest."""
from __future__ import annotations

import argparse

from genvpt.config import load_params
from genvpt.datasets.prepare import prepare_dataset
from genvpt.faults import run_stage
from genvpt.logs import setup_logging


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--block", choices=["dataset", "source"], required=True, help="which params block to prepare")
    ap.add_argument("--out", required=True, help="output folder (replaced atomically)")
    ap.add_argument("--params", default=None, help="params file (default: params.yaml)")
    args = ap.parse_args(argv)
    setup_logging()
    params = load_params(args.params)
    return prepare_dataset(getattr(params, args.block), params.prepare, args.out, block=args.block)


if __name__ == "__main__":
    run_stage(main)
