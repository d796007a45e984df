"""DVC stage `eval_clip`: zero-shot accuracy of the frozen CLIP on the target test split -> a metrics json.

The test split's numbers are the top-level keys (``"split": "test"``); the val split's, when the prepared folder has
one, are under ``"val"`` (the split hyperparameters may be chosen on).

Kept apart from `pretrain_clip` so that swapping the target dataset re-evaluates CLIP without retraining it.
"""
from __future__ import annotations

import argparse

from genvpt.config import load_params
from genvpt.io import write_json
from genvpt.faults import run_stage
from genvpt.logs import setup_logging


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True, help="prepared folder whose test (and val) split is evaluated")
    ap.add_argument("--out", required=True, help="metrics json to write")
    ap.add_argument("--params", default=None, help="params file (default: params.yaml)")
    args = ap.parse_args(argv)
    setup_logging()
    params = load_params(args.params)
    import torch

    from genvpt.clip import load_clip
    from genvpt.clip.pretrain import evaluate_clip
    from genvpt.datasets import load_split
    from genvpt.datasets.shards import present_splits

    clip = load_clip(params.clip)
    template, templates = params.caption.sentence_template, list(params.clip.train.templates)
    with torch.inference_mode():
        metrics = evaluate_clip(clip, load_split(args.data, "test"), template, templates)
        metrics = {"model": params.clip.model, "weights": params.clip.pretrained, "split": "test", **metrics}
        if "val" in present_splits(args.data):
            metrics["val"] = evaluate_clip(clip, load_split(args.data, "val"), template, templates)
    write_json(args.out, metrics)
    return metrics


if __name__ == "__main__":
    run_stage(main)
