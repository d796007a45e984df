"""An adapted classifier (a ``classify@<config>-<dataset>`` stage's output, e.g. PGN on the target) as a class judge of
generated samples: the score stage reports the samples' class accuracy under it next to the linear probe's
(issue 14 §6; genvpt/metrics/core.py ``class_accuracy``).

Which seed judges: ``best_val`` (default) takes the seed whose ``record.json`` has the highest top-1 on the val split
(the protocol's selection split; ties: the lowest seed), or a seed number. The test split is never used to choose.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from ..io import read_json

log = logging.getLogger(__name__)

__all__ = ["ClassifierJudge", "choose_judge_seed", "load_class_judge"]


def choose_judge_seed(folder: str | Path, seed: int | str = "best_val") -> tuple[int, dict]:
    """``(seed, record)`` of the classifier folder ``folder`` (``seed-<s>/record.json`` + ``model.pt``)."""
    folder = Path(folder)
    records: dict[int, dict] = {}
    for d in sorted(folder.glob("seed-*")):
        try:
            s = int(d.name.split("-", 1)[1])
        except ValueError:
            continue
        if (d / "record.json").is_file() and (d / "model.pt").is_file():
            records[s] = read_json(d / "record.json")
    if not records:
        raise FileNotFoundError(f"{folder}: no seed-<s>/ with record.json and model.pt (run its classify@ stage)")
    if seed != "best_val":
        if int(seed) not in records:
            raise ValueError(f"metrics.class_judge.seed: {seed} not in {folder} (it has seeds {sorted(records)})")
        return int(seed), records[int(seed)]

    def val_top1(r: dict) -> float:
        v = (r.get("eval") or {}).get("val", {}).get("top1")
        if v is None:
            raise ValueError(f"{folder}: a record has no val top-1 (classify.eval_splits must include val to choose "
                             "the judge's seed on it; or set metrics.class_judge.seed)")
        return float(v)

    best = max(sorted(records), key=lambda s: (val_top1(records[s]), -s))
    return best, records[best]


class ClassifierJudge:
    """Predicts classes of uint8 ``[N, 3, H, W]`` images with a trained classification method (eval mode, CLIP's
    evaluation preprocessing, batched, under ``torch.inference_mode``)."""

    def __init__(self, method: Any, class_names: Sequence[str], *, batch_size: int = 256,
                 record: Optional[dict] = None):
        self.method = method.eval()
        self.class_names = list(class_names)
        self.batch_size = int(batch_size)
        self.record = dict(record or {})

    @torch.inference_mode()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        from ..classify.augment import eval_inputs

        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 [N, 3, H, W], got {images.dtype} {tuple(images.shape)}")
        out = []
        for i in range(0, images.shape[0], self.batch_size):
            x = eval_inputs(self.method.clip, images[i:i + self.batch_size])
            out.append(self.method(x).argmax(-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)

    __call__ = predict


def load_class_judge(folder: str | Path, clip_block: Any, *, seed: int | str = "best_val",
                     device: str | torch.device = "cpu", batch_size: int = 256) -> ClassifierJudge:
    """The judge of classifier folder ``folder`` (``data/classify/<dataset>/<config>``), rebuilt on the CLIP that
    ``clip_block`` (ClipParams: the ``classify.clip`` block with its ``pretrained`` file) loads. The CLIP file must be
    the one the classifier was trained on (its sha256 in the record)."""
    from ..classify.train import load_classifier
    from ..clip import load_clip
    from ..io import sha256_file

    folder = Path(folder)
    s, record = choose_judge_seed(folder, seed)
    src = record.get("source") or {}
    want = src.get("clip_sha256")
    clip_path = Path(clip_block.pretrained)
    if want and clip_path.is_file() and sha256_file(clip_path) != want:
        raise ValueError(f"{folder}/seed-{s}: trained on a CLIP file with sha256 {want[:12]}..., but {clip_path} "
                         "differs (rerun the classify stage)")
    classes_file = Path(src["data"]) / "classes.json" if src.get("data") else None
    class_names = read_json(classes_file) if classes_file is not None and classes_file.is_file() else None
    method = load_classifier(folder / f"seed-{s}" / "model.pt", load_clip(clip_block, device=device))
    if class_names is None:
        class_names = [str(i) for i in range(method.num_classes)]
    if len(class_names) != method.num_classes:
        raise ValueError(f"{folder}/seed-{s}: {method.num_classes} classes in model.pt, {len(class_names)} in "
                         f"{classes_file}")
    val = (record.get("eval") or {}).get("val", {}).get("top1")
    test = (record.get("eval") or {}).get("test", {}).get("top1")
    info = {"folder": str(folder), "method": record.get("method"), "config": record.get("name"), "seed": s,
            "seed_rule": str(seed), "val_top1": val, "test_top1": test, "clip": str(clip_path),
            "clip_model": src.get("clip_model"), "trainable_params": record.get("trainable_params")}
    log.info("class judge: %s seed %d (%s; val top-1 %s)", folder, s, info["method"], val)
    return ClassifierJudge(method, class_names, batch_size=batch_size, record=info)
