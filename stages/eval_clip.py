"""DVC stage `eval_clip`: zero-shot accuracy of the frozen CLIP on the target val split -> a metrics json.

Kept apart from `pretrain_clip` so that swapping the target dataset re-evaluates CLIP without retraining it.
"""
from __future__ import annotations

import argparse

from genvpt.config import load_params
from genvpt.io import write_json
from genvpt.logs import setup_logging


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True, help="prepared folder whose val split is evaluated")
    ap.add_argument("--out", required=True, help="metrics json to write")
    ap.add_argument("--params", default=None, help="params file (default: params.yaml)")
    args = ap.parse_args(argv)
    setup_logging()
    params = load_params(args.params)
    import torch

    from genvpt.clip import load_clip
    from genvpt.clip_pretrain import evaluate_clip
    from genvpt.datasets import load_split

    clip = load_clip(params.clip)
    with torch.inference_mode():
        metrics = evaluate_clip(
            clip, load_split(args.data, "val"), params.caption.sentence_template, list(params.clip.train.templates)
        )
    metrics = {"model": params.clip.model, "weights": params.clip.pretrained, "split": "val", **metrics}
    write_json(args.out, metrics)
    return metrics


if __name__ == "__main__":
    main()
