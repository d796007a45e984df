"""Training from scratch: a newly initialised generator of the backbone's family and size (seeded) trains on the
target with the same steps as the other methods (the tokenizer is the backbone's)."""
from __future__ import annotations

from ..method import Method


class Scratch(Method):
    name = "scratch"
    trains_backbone = True

    def __init__(self, params, backbone, info, *, seed: int = 0):
        super().__init__(params, backbone, info, seed=seed)
        fresh = backbone.fresh_generator(self.seed * 1_000_003 + 41)
        backbone.generator = fresh.eval()
        for p in fresh.parameters():
            p.requires_grad_(True)
