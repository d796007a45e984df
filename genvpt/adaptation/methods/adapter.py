"""Bottleneck adapters (Houlsby et al. 2019): after the attention and after the MLP of every block (the modules the
backbone names in ``Backbone.adapter_sites``), ``h <- h + up(GELU(down(h)))`` with ``up`` starting at zero, so
training starts at the frozen backbone. Added with forward hooks: the backbone's code and weights are untouched."""
from __future__ import annotations

import re

import torch
from pydantic import Field
from torch import nn

from ...schema import StrictModel
from ..method import Method


class AdapterParams(StrictModel):
    bottleneck: int = Field(default=8, ge=1)  # hidden width of each adapter


class Bottleneck(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.down = nn.Linear(dim, hidden)
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(torch.nn.functional.gelu(self.down(h)))


class Adapter(Method):
    name = "adapter"
    Params = AdapterParams

    def __init__(self, params: AdapterParams, backbone, info, *, seed: int = 0):
        super().__init__(params, backbone, info, seed=seed)
        rx = re.compile(backbone.adapter_sites)
        sites = [n for n, _ in backbone.generator.named_modules() if n and rx.fullmatch(n)]
        if not sites:
            raise ValueError(f"no adapter site matches {backbone.adapter_sites!r} in the {backbone.name} backbone")
        torch.manual_seed(self.seed * 1_000_003 + 37)
        self.adapters = nn.ModuleDict({n.replace(".", "_"): Bottleneck(backbone.width, params.bottleneck)
                                       for n in sites})
        self.to(backbone.device)
        modules = dict(backbone.generator.named_modules())
        self._hooks = [modules[n].register_forward_hook(self._hook(n.replace(".", "_"))) for n in sites]

    def _hook(self, key: str):
        def hook(module, inputs, output):
            return self.adapters[key](output)

        return hook
