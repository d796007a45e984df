"""DVC stages `sample_frozen@<family>` and `sample@<config>`: N seeded images per class from one report row
-> data/samples/<row>/seed-<s>/images.tar (PNG members in index order) + record.json. A frozen backbone is sampled
once per sampling seed (`sample.sampling_seeds`: the sampling noise); an adapted configuration once per training
seed."""
from __future__ import annotations

import argparse

from genvpt.config import load_params
from genvpt.datasets.shards import read_classes
from genvpt.faults import run_stage
from genvpt.logs import setup_logging
from genvpt.sampling import sample_adapted_row, sample_frozen_row


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--target", required=True, help="prepared target dataset (its classes.json names the classes)")
    ap.add_argument("--out", required=True, help="the row's folder (data/samples/<row>), written atomically")
    ap.add_argument("--backbone", default=None, help="frozen row: the generator family")
    ap.add_argument("--generator", default=None, help="frozen row: the generator file")
    ap.add_argument("--tokenizer", default=None, help="frozen row: the tokenizer file")
    ap.add_argument("--adapted", default=None, help="adapted row: the folder with one seed-<s>/model.pt per seed")
    ap.add_argument("--config", default=None, help="adapted row: its name in params adaptation.configs")
    ap.add_argument("--params", default=None, help="params file (default: params.yaml)")
    args = ap.parse_args(argv)
    setup_logging()
    params = load_params(args.params)
    classes = read_classes(args.target)
    if args.adapted:
        if not args.config:
            ap.error("--adapted needs --config")
        params.adaptation.config(args.config)  # validated: a clear error for an unknown name
        return sample_adapted_row(params.sample, classes, args.out, models_dir=args.adapted,
                                  seeds=list(params.adaptation.seeds), full_params=params)
    if not (args.backbone and args.generator and args.tokenizer):
        ap.error("a frozen row needs --backbone, --generator and --tokenizer (or --adapted and --config)")
    return sample_frozen_row(params.sample, classes, args.out, family=args.backbone, generator=args.generator,
                             tokenizer=args.tokenizer, full_params=params)


if __name__ == "__main__":
    run_stage(main)
