"""Classification data in memory: the prepared shards of one split (``genvpt.datasets.shards.load_split``) as tensors.

Images stay uint8 ``[N, 3, H, W]`` at their prepared size; the training loop resizes, augments and normalises per
batch (genvpt/classify/augment.py), evaluation resizes and normalises as CLIP's preprocessing does
(:meth:`genvpt.clip.ClipModel.preprocess`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

import torch

__all__ = ["ClassifyData", "load_prepared_split", "class_texts"]


@dataclass
class ClassifyData:
    """``images`` uint8 ``[N, 3, H, W]``, ``labels`` long ``[N]``, ``class_names`` (index = label)."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    keys: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be [N, 3, H, W], got {tuple(self.images.shape)}")
        if self.images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8, got {self.images.dtype}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must be [N={self.images.shape[0]}], got {tuple(self.labels.shape)}")
        self.labels = self.labels.long()
        if len(self.labels) and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.class_names)):
            raise ValueError(f"labels must lie in [0, {len(self.class_names)}) (the class names)")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, idx: torch.Tensor | Sequence[int]) -> "ClassifyData":
        idx = torch.as_tensor(idx, dtype=torch.long)
        keys = [self.keys[i] for i in idx.tolist()] if self.keys else []
        return ClassifyData(self.images[idx], self.labels[idx], list(self.class_names), keys)


def load_prepared_split(prepared_dir: str | os.PathLike, split: str) -> ClassifyData:
    """One split of a prepared dataset (``data/prepared/target``: train / val / test) as :class:`ClassifyData`."""
    from ..datasets.shards import load_split

    s = load_split(prepared_dir, split)
    return ClassifyData(s.images, s.labels, list(s.class_names), list(s.keys))


def class_texts(class_names: Sequence[str], template: str) -> list[str]:
    """The class prompts: ``template`` with ``{class_name}`` filled in (underscores become spaces)."""
    if "{class_name}" not in template:
        raise ValueError(f"the template must contain '{{class_name}}', got {template!r}")
    return [template.format(class_name=c.replace("_", " ")) for c in class_names]
