"""Frozen generator families behind one interface (:class:`Backbone`), and their registry.

One registry line per family; :func:`load_backbone` pairs a generator file with its tokenizer file.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import torch

from .ar import ARBackbone
from .base import BACKBONES, Backbone, Injections, backbone_class, register_backbone, to_uint8
from .maskgit import MaskGITBackbone
from .var import VARBackbone, soft_fhat

__all__ = ["Backbone", "Injections", "BACKBONES", "register_backbone", "backbone_class", "load_backbone",
           "to_uint8", "soft_fhat"]

register_backbone("ar", ARBackbone)
register_backbone("maskgit", MaskGITBackbone)
register_backbone("var", VARBackbone)


def load_backbone(family: str, generator_path: str | os.PathLike, tokenizer_path: str | os.PathLike, *,
                  device: str | torch.device = "cpu", sample_defaults: Optional[dict] = None, **hints: Any) -> Backbone:
    """Pair a generator file (ours or official) with its tokenizer file. ``sample_defaults``: the keyword arguments
    ``sample_images`` uses unless told otherwise (params ``generator.<family>.sample``; none: the sampler's own)."""
    from ..generators import load_generator
    from ..generators.common import pick_device
    from ..tokenizers import load_tokenizer

    cls = backbone_class(family)
    dev = pick_device(device)
    gen = load_generator(generator_path, family=family, device=dev, **hints).requires_grad_(False)
    tok = load_tokenizer(tokenizer_path, family=cls.tokenizer_family, device=dev)
    return cls(gen, tok, sample_defaults)
