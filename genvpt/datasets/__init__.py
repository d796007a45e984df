"""Datasets: one interface (``class_names`` + ``items()``) over shapes, digits, imagefolder, parquet, webdataset.

The names below load on first use, so importing ``genvpt.datasets.params`` (as genvpt/config.py does) loads no
dataset code, numpy, PIL or torch.
"""
from __future__ import annotations

import importlib

_WHERE = {
    "Record": ".base",
    "Reject": ".base",
    "Item": ".registry",
    "DATASETS": ".registry",
    "build_dataset": ".registry",
    "register_dataset": ".registry",
    "select_items": ".registry",
    "SPLITS": ".params",
    "ShardError": ".shards",
    "SplitData": ".shards",
    "iter_split": ".shards",
    "load_split": ".shards",
    "read_classes": ".shards",
}

__all__ = list(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
