"""DVC stage `pretrain_clip`: train the embedded default's tiny open_clip model on the source domain's images and
captions; zero-shot accuracy on the source and target val splits -> metrics.json."""
from __future__ import annotations

import argparse

from genvpt.config import load_params
from genvpt.faults import run_stage
from genvpt.logs import setup_logging


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--source", required=True, help="prepared source-domain folder (training data)")
    ap.add_argument("--target", default=None, help="prepared target folder (its val split is only evaluated)")
    ap.add_argument("--out", required=True, help="output folder: model.pt, metrics.json, loss.csv")
    ap.add_argument("--params", default=None, help="params file (default: params.yaml)")
    ap.add_argument("--steps", type=int, default=None, help="override clip.train.steps (quick checks)")
    args = ap.parse_args(argv)
    setup_logging()
    params = load_params(args.params)
    from genvpt.clip.pretrain import pretrain_clip

    return pretrain_clip(
        args.source, args.out, params.clip, seed=params.seed, target_dir=args.target,
        sentence_template=params.caption.sentence_template, steps=args.steps,
    )


if __name__ == "__main__":
    run_stage(main)
