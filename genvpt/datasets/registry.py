"""Dataset registry and selection (split + few-shot), shared by every source.

A dataset lists :class:`Item` s cheaply (id, label, a loader); :func:`select_items` decides the split and the
few-shot subset from the listing with seeded RNGs, so only the chosen images are ever decoded.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional, Union

import numpy as np

from ..config import DatasetParams
from .base import Record, Reject

__all__ = ["Item", "DATASETS", "register_dataset", "build_dataset", "select_items", "Selection"]


@dataclass
class Item:
    """A listed input: ``load()`` returns a :class:`Record` (RGB at the dataset size) or a :class:`Reject`."""

    source_id: str
    label: int
    load: Callable[[], Union[Record, Reject]]
    split: Optional[str] = None  # set when the source defines its own train/val split


DATASETS: dict[str, Callable[[DatasetParams], object]] = {}


def register_dataset(name: str):
    def deco(fn):
        DATASETS[name] = fn
        return fn

    return deco


def build_dataset(p: DatasetParams):
    """The dataset named by ``p.name``; it has ``class_names`` and ``items()`` yielding Item or Reject."""
    from . import digits, imagefolder, parquet, shapes, wds_source  # noqa: F401  (register)

    if p.name not in DATASETS:
        raise KeyError(f"dataset.name={p.name!r} is not registered; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[p.name](p)


@register_dataset("shapes")
def _shapes(p: DatasetParams):
    from .shapes import ShapesDataset

    s = p.shapes
    return ShapesDataset(p.image_size, s.domain, s.images_per_class, s.classes, s.max_count, p.seed, s.size_scale,
                         s.colours, s.rotation_range, s.positions, s.sizes, s.position_jitter)


@dataclass
class Selection:
    train: list[Item]
    val: list[Item]
    class_names: list[str]
    label_map: dict[int, int]  # original label -> new contiguous label (few-shot class subsets)
    rejects: list[Reject]
    listed: int


def select_items(listing: Iterable[Union[Item, Reject]], class_names: list[str], p: DatasetParams) -> Selection:
    """Split (stratified, seeded) and few-shot subsample a listing.

    * Items whose source already says train/val keep it; others are split per class with ``p.val_fraction``
      (at least one train image per class).
    * ``few_shot.num_classes`` keeps K classes chosen with ``few_shot.seed`` (labels renumbered 0..K-1 in the
      original class order); ``few_shot.images_per_class`` keeps N training images per class. Validation keeps every
      image of the kept classes.
    """
    items: list[Item] = []
    rejects: list[Reject] = []
    for x in listing:
        (rejects if isinstance(x, Reject) else items).append(x)
    fs = p.few_shot
    n_classes = len(class_names)
    kept = list(range(n_classes))
    if fs.num_classes is not None:
        if fs.num_classes > n_classes:
            raise ValueError(f"few_shot.num_classes={fs.num_classes} but the dataset has {n_classes} classes")
        rng = np.random.default_rng([fs.seed, 7])
        kept = sorted(int(c) for c in rng.choice(n_classes, size=fs.num_classes, replace=False))
    label_map = {old: new for new, old in enumerate(kept)}

    by_class: dict[int, list[Item]] = {c: [] for c in kept}
    for it in items:
        if it.label in by_class:
            by_class[it.label].append(it)
    train, val = [], []
    for c in kept:
        group = by_class[c]
        fixed_train = [it for it in group if it.split == "train"]
        fixed_val = [it for it in group if it.split == "val"]
        free = [it for it in group if it.split not in ("train", "val")]
        if free:
            rng = np.random.default_rng([p.seed, 11, c])
            order = rng.permutation(len(free))
            n_val = int(round(len(free) * p.val_fraction))
            n_val = min(n_val, len(free) - 1)
            fixed_val += [free[i] for i in order[:n_val]]
            fixed_train += [free[i] for i in order[n_val:]]
        if fs.images_per_class is not None and len(fixed_train) > fs.images_per_class:
            rng = np.random.default_rng([fs.seed, 13, c])
            pick = sorted(rng.choice(len(fixed_train), size=fs.images_per_class, replace=False))
            fixed_train = [fixed_train[i] for i in pick]
        train += fixed_train
        val += fixed_val
    # interleave classes in listing order for a stable, mixed shard order
    order_of = {id(it): i for i, it in enumerate(items)}
    train.sort(key=lambda it: order_of[id(it)])
    val.sort(key=lambda it: order_of[id(it)])
    return Selection(train, val, [class_names[c] for c in kept], label_map, rejects, len(items) + len(rejects))
