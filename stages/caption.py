"""DVC stage `caption`: captions for every sample of a prepared dataset -> captions.parquet (key, split, caption,
captioner, settings). Backend from params `caption.backend` (dataset | transformers | lavis); resumable."""
from __future__ import annotations

import argparse

from genvpt.config import load_params
from genvpt.faults import run_stage
from genvpt.logs import setup_logging


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prepared", required=True, help="prepared dataset folder (stages/prepare.py output)")
    ap.add_argument("--out", required=True, help="captions.parquet to write (atomically)")
    ap.add_argument("--params", default=None, help="params file (default: params.yaml)")
    args = ap.parse_args(argv)
    setup_logging()
    params = load_params(args.params)
    from genvpt.captions.run import caption_dataset

    return caption_dataset(args.prepared, args.out, params.caption)


if __name__ == "__main__":
    run_stage(main)
