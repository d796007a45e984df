"""Training-time image pipeline: the official PGN transforms on tensors (torchvision.transforms.v2), seeded per step.

uint8 ``[B, 3, H, W]`` -> float in [0, 1] -> per sample: RandomResizedCrop to the CLIP input size (area in
[crop_scale_min, 1], aspect ratio in [3/4, 4/3], bicubic) -> ColorJitter(0.4, 0.4, 0.4, 0.4) with probability 0.8 ->
greyscale (p 0.2) -> solarize at 0.5 (p 0.2; PIL's ImageOps.solarize threshold 128) -> horizontal flip -> clamp to
[0, 1] -> CLIP normalisation. v2 transforms draw one set of random parameters per call, so each sample is its own
call; every draw comes from torch's generator seeded by (seed, step) inside ``torch.random.fork_rng``, so a batch is
a function of (seed, step) and the global RNG is left as it was.
"""
from __future__ import annotations

from typing import Any

import torch

from .params import AugmentParams

__all__ = ["build_transform", "augment_batch", "normalize", "eval_inputs", "step_seed"]


def step_seed(seed: int, step: int, salt: int) -> int:
    return (int(seed) * 1_000_003 + int(step) * 97 + int(salt)) % (2**63 - 1)


def build_transform(params: AugmentParams, size: tuple[int, int]):
    """The per-sample v2 pipeline (float [0, 1] image in, float image at ``size`` out)."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import v2

    steps: list[Any] = [v2.RandomResizedCrop(size, scale=(params.crop_scale_min, 1.0),
                                             interpolation=InterpolationMode.BICUBIC, antialias=True)]
    if params.jitter_prob > 0 and any(params.jitter):
        steps.append(v2.RandomApply([v2.ColorJitter(*params.jitter)], p=params.jitter_prob))
    if params.greyscale_prob > 0:
        steps.append(v2.RandomGrayscale(p=params.greyscale_prob))
    if params.solarize_prob > 0:
        steps.append(v2.RandomSolarize(threshold=0.5, p=params.solarize_prob))
    if params.flip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps)


def augment_batch(images: torch.Tensor, params: AugmentParams, size: tuple[int, int], seed: int, step: int,
                  transform=None) -> torch.Tensor:
    """Augmented float images in [0, 1] at ``size`` (CPU), a function of (seed, step)."""
    x = images.float().div(255.0) if images.dtype == torch.uint8 else images.float()
    t = transform or build_transform(params, size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(step_seed(seed, step, 5))
        out = torch.stack([t(img) for img in x])
    return out.clamp(0.0, 1.0)


def normalize(clip: Any, x01: torch.Tensor) -> torch.Tensor:
    """CLIP normalisation of [0, 1] images already at the input size (the model's dtype and device)."""
    x = x01.to(clip.device)
    return ((x - clip.mean) / clip.std).to(clip.dtype)


def eval_inputs(clip: Any, images: torch.Tensor) -> torch.Tensor:
    """Evaluation preprocessing (CLIP's: short side to size, centre crop, normalise) of uint8 images."""
    return clip.preprocess(images)

