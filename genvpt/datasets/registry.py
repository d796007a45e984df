"""Dataset registry and selection (split + few-shot), shared by every source.

A dataset lists :class:`Item` s cheaply (id, label, a loader); :func:`select_items` decides the split and the
few-shot subset from the listing with seeded RNGs, so only the chosen images are ever decoded.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Optional, Union

import numpy as np

from .params import SPLITS, DatasetParams
from .base import Record, Reject

__all__ = ["Item", "DATASETS", "register_dataset", "build_dataset", "select_items", "Selection"]


@dataclass
class Item:
    """A listed input: ``load()`` returns a :class:`Record` (RGB at the dataset size) or a :class:`Reject`."""

    source_id: str
    label: int
    load: Callable[[], Union[Record, Reject]]
    split: Optional[str] = None  # 'train' / 'val' / 'test' when the source ships its own split


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
    test: list[Item]
    class_names: list[str]
    label_map: dict[int, int]  # original label -> new contiguous label (few-shot class subsets)
    rejects: list[Reject]
    listed: int
    # per split: "shipped" (the source's own split) or "carved" (drawn here, stratified and seeded; for train: what
    # is left once val and test are carved)
    origin: dict[str, str] = field(default_factory=dict)

    def split(self, name: str) -> list[Item]:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def _count(n: int, fraction: float) -> int:
    """How many of a class's ``n`` items a split with ``fraction`` gets: rounded, at least one if fraction > 0."""
    return max(1, int(round(n * fraction))) if fraction > 0 else 0


def select_items(listing: Iterable[Union[Item, Reject]], class_names: list[str], p: DatasetParams) -> Selection:
    """Split (stratified, seeded) and few-shot subsample a listing into train / val / test.

    * Splits the source ships (``Item.split``) are kept. The splits it does not ship are carved, per class, from
      the items it did not put in val or test (its train split, or everything when it ships no split):
      ``round(n * val_fraction)`` to val and ``round(n * test_fraction)`` to test of a class's ``n`` such items,
      at least one when the fraction is above 0, and at least one item always staying in train (test is served
      before val when a class is that small). A train-only export thus gets val and test; train + test gets val.
    * ``few_shot.num_classes`` keeps K classes chosen with ``few_shot.seed`` (labels renumbered 0..K-1 in the
      original class order); ``few_shot.images_per_class`` keeps N training images per class. Only train is
      subsampled, after the split: val and test keep every image of the kept classes and do not depend on N.
    """
    items: list[Item] = []
    rejects: list[Reject] = []
    for x in listing:
        (rejects if isinstance(x, Reject) else items).append(x)
    unknown = sorted({str(it.split) for it in items if it.split is not None and it.split not in SPLITS})
    if unknown:
        raise ValueError(f"{p.name}: unknown split names {unknown}; known: {', '.join(SPLITS)}")
    shipped = {it.split for it in items if it.split is not None}
    carve = {s: f for s, f in (("val", p.val_fraction), ("test", p.test_fraction)) if s not in shipped}
    origin = {s: "shipped" if s in shipped else "carved" for s in SPLITS}

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
    out: dict[str, list[Item]] = {s: [] for s in SPLITS}
    for c in kept:
        group = by_class[c]
        val = [it for it in group if it.split == "val"]
        test = [it for it in group if it.split == "test"]
        pool = [it for it in group if it.split in (None, "train")]
        train = pool
        if pool and carve:
            rng = np.random.default_rng([p.seed, 11, c])
            order = rng.permutation(len(pool))
            n_test = min(_count(len(pool), carve.get("test", 0.0)), len(pool) - 1)
            n_val = min(_count(len(pool), carve.get("val", 0.0)), len(pool) - 1 - n_test)
            val = val + [pool[i] for i in order[:n_val]]
            test = test + [pool[i] for i in order[n_val:n_val + n_test]]
            train = [pool[i] for i in order[n_val + n_test:]]
        if fs.images_per_class is not None and len(train) > fs.images_per_class:
            rng = np.random.default_rng([fs.seed, 13, c])
            pick = sorted(rng.choice(len(train), size=fs.images_per_class, replace=False))
            train = [train[i] for i in pick]
        out["train"] += train
        out["val"] += val
        out["test"] += test
    # interleave classes in listing order for a stable, mixed shard order
    order_of = {id(it): i for i, it in enumerate(items)}
    for s in SPLITS:
        out[s].sort(key=lambda it: order_of[id(it)])
    return Selection(out["train"], out["val"], out["test"], [class_names[c] for c in kept], label_map, rejects,
                     len(items) + len(rejects), origin)
