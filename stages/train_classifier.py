"""Stage ``train_classifier``: a small CNN on a prepared dataset's train split -> model.pt + metrics.json + curve.csv.

It judges the class of generated samples (``pretrain_generator``) and can be reused on any prepared dataset.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from genvpt.classifier import class_accuracy, save_classifier, train_classifier
from genvpt.config import load_params
from genvpt.datasets.shards import load_split
from genvpt.generators.common import pick_device
from genvpt.io import write_json
from genvpt.faults import run_stage
from genvpt.logs import setup_logging
from genvpt.training import write_curve


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/prepared/source", help="prepared dataset")
    ap.add_argument("--out", default="data/classifier/source", help="output folder")
    ap.add_argument("--params", default=None, help="params file (default params.yaml)")
    args = ap.parse_args(argv)
    setup_logging()
    params = load_params(args.params)
    cp = params.generator.classifier
    if params.generator.num_threads:
        torch.set_num_threads(params.generator.num_threads)
    train, val = load_split(args.data, "train"), load_split(args.data, "val")
    model, report = train_classifier(
        train.images, train.labels, val.images, val.labels, num_classes=len(train.class_names), width=cp.width,
        dropout=cp.dropout, epochs=cp.epochs, batch_size=cp.batch_size, lr=cp.lr, weight_decay=cp.weight_decay,
        max_shift=cp.max_shift, noise=cp.noise, blur_prob=cp.blur_prob, blur_max=cp.blur_max, seed=params.seed, device=pick_device(params.generator.device),
    )
    out = Path(args.out)
    model.cpu()
    metrics = {
        "val_accuracy": report["val_accuracy"],
        "train_accuracy": class_accuracy(model, train.images, train.labels),
        "train_seconds": report["train_seconds"],
        "epochs": report["epochs"],
        "train_images": len(train),
        "val_images": len(val),
    }
    save_classifier(out / "model.pt", model, train.class_names, val_accuracy=metrics["val_accuracy"], data=str(args.data))
    write_curve(out / "curve.csv", report["history"])
    write_json(out / "metrics.json", metrics)
    return metrics


if __name__ == "__main__":
    run_stage(main)
