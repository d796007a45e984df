"""DVC stage `prepare` / `prepare_source` / `prepare_classify@<name>` / `prepare_tokenizer`: a dataset block of
params.yaml (`dataset`, `source`, or column <name> of `classify.datasets` merged over `dataset`) -> WebDataset shards +
manifest; `--block tokenizer`: every entry of `tokenizer.data` (merged over `source`) -> <out>/<name>/, one folder."""
from __future__ import annotations

import argparse

from genvpt.config import load_params
from genvpt.datasets.prepare import prepare_dataset
from genvpt.faults import run_stage
from genvpt.io import atomic_dir, write_json
from genvpt.logs import setup_logging


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--block", choices=["dataset", "source", "classify", "tokenizer"], required=True,
                    help="which params block to prepare (classify: the column --name of classify.datasets)")
    ap.add_argument("--name", default=None, help="with --block classify: the name in classify.datasets")
    ap.add_argument("--out", required=True, help="output folder (replaced atomically)")
    ap.add_argument("--params", default=None, help="params file (default: params.yaml)")
    args = ap.parse_args(argv)
    setup_logging()
    params = load_params(args.params)
    if args.block == "classify":
        if not args.name:
            ap.error("--block classify needs --name (a key of params classify.datasets)")
        block = params.classify.dataset_block(args.name, params.dataset)
        return prepare_dataset(block, params.prepare, args.out, block=f"classify.datasets.{args.name}")
    if args.name:
        ap.error("--name is only for --block classify")
    if args.block == "tokenizer":  # the tokenizers' broad data: one folder per entry, the whole folder atomically
        stats = {}
        with atomic_dir(args.out) as tmp:
            for name in params.tokenizer.data:
                block = params.tokenizer.data_block(name, params.source)
                stats[name] = prepare_dataset(block, params.prepare, tmp / name, block=f"tokenizer.data.{name}")
            write_json(tmp / "datasets.json", {"datasets": list(params.tokenizer.data)})
        return stats
    return prepare_dataset(getattr(params, args.block), params.prepare, args.out, block=args.block)


if __name__ == "__main__":
    run_stage(main)
