"""Zero-shot CLIP: the frozen model and the class prompts; nothing trains (the loop only evaluates)."""
from __future__ import annotations

from ..method import ClassifyMethod

__all__ = ["ZeroShot"]


class ZeroShot(ClassifyMethod):
    name = "zero_shot"
    trains = False
