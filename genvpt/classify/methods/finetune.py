"""Full fine-tuning of the vision tower (every weight of ``clip.model.visual``); the text tower, the class prompts
and the logit scale stay frozen (checked). Changes the given CLIP in place: build a fresh one per configuration.
The PGN recipe's SGD lr 0.1 diverges here: give the configuration its own ``train`` (e.g. adamw, lr 1e-5)."""
from __future__ import annotations

from ..method import ClassifyMethod

__all__ = ["Finetune"]


class Finetune(ClassifyMethod):
    name = "finetune"
    trains_backbone = True

    def __init__(self, params, clip, class_emb, *, seed: int = 0):
        super().__init__(params, clip, class_emb, seed=seed)
        for p in self.visual.parameters():
            p.requires_grad_(True)
