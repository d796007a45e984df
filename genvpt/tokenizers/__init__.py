"""Image tokenizers: taming's VQGAN (one token map) and VAR's multi-scale residual VQ-VAE (K token maps).

* ``load_tokenizer(path)``: a tokenizer saved by this project (``data/tokenizers/{vqgan,msvq}/model.pt``, written
  by the ``pretrain_tokenizer`` stage, trained or imported from an official checkpoint).
* ``load_pretrained_vqgan(path)`` / ``load_pretrained_msvq(path)``: official checkpoints, strictly.
* ``encode_tokens`` / ``decode_tokens``: one token API for both families (a list with one LongTensor [B, n_k] per
  scale), used by the tokenize stage and by anything that needs to move between images and tokens.
"""
from __future__ import annotations

import os
from typing import Mapping

import torch

from ..checkpoint import CheckpointError, load_file, save_model, strict_load
from .msvq import MSVQConfig, MultiScaleVQVAE, load_pretrained_msvq
from .vqgan import VQGAN, VQGANConfig, load_pretrained_vqgan

__all__ = [
    "FAMILIES",
    "VQGAN",
    "VQGANConfig",
    "MultiScaleVQVAE",
    "MSVQConfig",
    "Tokenizer",
    "build_tokenizer",
    "save_tokenizer",
    "load_tokenizer",
    "load_pretrained_vqgan",
    "load_pretrained_msvq",
    "encode_tokens",
    "decode_tokens",
    "token_grid",
]

FAMILIES = ("vqgan", "msvq")
Tokenizer = VQGAN | MultiScaleVQVAE


def build_tokenizer(family: str, config: Mapping | VQGANConfig | MSVQConfig) -> Tokenizer:
    if family == "vqgan":
        return VQGAN(config if isinstance(config, VQGANConfig) else VQGANConfig(**config))
    if family == "msvq":
        return MultiScaleVQVAE(config if isinstance(config, MSVQConfig) else MSVQConfig(**config))
    raise ValueError(f"unknown tokenizer family {family!r}; allowed: {', '.join(FAMILIES)}")


def save_tokenizer(path: str | os.PathLike, model: Tokenizer, **meta) -> None:
    """Save with :func:`genvpt.checkpoint.save_model` (family + config + weights), atomically."""
    save_model(path, model, model.family, model.config.to_dict(), **meta)


def load_tokenizer(path: str | os.PathLike, family: str | None = None, device: torch.device | str = "cpu") -> Tokenizer:
    """Load a tokenizer file written by :func:`save_tokenizer`, in eval mode with gradients off.

    ``family`` (optional) must match the file's family, else :class:`~genvpt.checkpoint.CheckpointError`.
    """
    obj = load_file(path)
    if not isinstance(obj, Mapping) or "family" not in obj or "state_dict" not in obj:
        raise CheckpointError(
            f"{path} is not a genvpt tokenizer file (expected keys family/config/state_dict); for official "
            f"checkpoints use load_pretrained_vqgan / load_pretrained_msvq, or name them in params "
            f"(tokenizer.<family>.checkpoint)"
        )
    fam = obj["family"]
    if fam not in FAMILIES:
        raise CheckpointError(f"{path} holds a {fam!r} model, not a tokenizer ({', '.join(FAMILIES)})")
    if family is not None and fam != family:
        raise CheckpointError(f"{path} holds a {fam!r} tokenizer, but a {family!r} tokenizer was asked for")
    try:
        model = build_tokenizer(fam, dict(obj.get("config", {})))
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: invalid {fam} config: {err}") from None
    strict_load(model, obj["state_dict"], source=str(path))
    return model.to(device).eval().requires_grad_(False)


def token_grid(model: Tokenizer, image_size: int) -> list[int]:
    """Side of each token map for images of side ``image_size``."""
    if isinstance(model, MultiScaleVQVAE):
        return list(model.patch_nums)
    return [image_size // model.downsample]


def encode_tokens(model: Tokenizer, images: torch.Tensor) -> list[torch.Tensor]:
    """Images in [-1, 1] [B, 3, H, W] -> one LongTensor [B, n_k] per scale (coarse to fine)."""
    if isinstance(model, MultiScaleVQVAE):
        return model.img_to_idxBl(images)
    return [model.encode_to_indices(images).flatten(1)]


def decode_tokens(model: Tokenizer, scales: list[torch.Tensor]) -> torch.Tensor:
    """Inverse of :func:`encode_tokens`: token lists -> images in [-1, 1]."""
    if isinstance(model, MultiScaleVQVAE):
        return model.idxBl_to_img(scales, same_shape=True, last_one=True)
    if len(scales) != 1:
        raise ValueError(f"a VQGAN has one token map, got {len(scales)}")
    n = scales[0].shape[1]
    side = round(n**0.5)
    if side * side != n:
        raise ValueError(f"{n} tokens do not form a square map")
    return model.decode_indices(scales[0].reshape(-1, side, side))
