"""A tiny real prepared shapes dataset for the caption and CLIP tests (3 classes x 4 images: 6 train / 3 val /
3 test)."""
from __future__ import annotations

from pathlib import Path

from genvpt.config import DatasetParams, PrepareParams, ShapesParams
from genvpt.datasets.prepare import prepare_dataset

CLASSES = ["circle", "star", "ring"]


def make_prepared(out: Path, domain: str = "textured", images_per_class: int = 4, seed: int = 0) -> Path:
    p = DatasetParams(name="shapes", seed=seed, val_fraction=0.25,
                      shapes=ShapesParams(domain=domain, images_per_class=images_per_class, classes=CLASSES))
    prepare_dataset(p, PrepareParams(), out)
    return out
