"""Datasets: one interface (``class_names`` + ``items()``) over shapes, digits, imagefolder, parquet, webdataset."""
from .base import Record, Reject
from .registry import DATASETS, Item, build_dataset, register_dataset, select_items
from .shards import ShardError, SplitData, iter_split, load_split, read_classes

__all__ = [
    "Record",
    "Reject",
    "Item",
    "DATASETS",
    "build_dataset",
    "register_dataset",
    "select_items",
    "ShardError",
    "SplitData",
    "iter_split",
    "load_split",
    "read_classes",
]
