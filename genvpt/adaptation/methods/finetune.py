"""Full fine-tuning: every weight of the backbone's generator trains (the tokenizer stays frozen)."""
from __future__ import annotations

from ..method import Method


class Finetune(Method):
    name = "finetune"
    trains_backbone = True

    def __init__(self, params, backbone, info, *, seed: int = 0):
        super().__init__(params, backbone, info, seed=seed)
        for p in backbone.generator.parameters():
            p.requires_grad_(True)
