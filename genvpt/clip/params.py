"""params.yaml section ``clip``: which CLIP scores images and texts, and how the embedded default's tiny CLIP is
pretrained (``stages/pretrain_clip.py``). Kept import-light: genvpt/config.py imports it on every params load."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator

from ..schema import StrictModel

__all__ = ["ClipTrainParams", "ClipParams", "DEFAULT_CLIP_PATH"]

DEFAULT_CLIP_PATH = "data/clip/model.pt"


class ClipTrainParams(StrictModel):
    """Contrastive pretraining of the tiny default CLIP on the source domain (open_clip's ClipLoss on image/caption
    pairs, plus a class-prompt term so that zero-shot prompts like "a photo of {class_name}" work)."""

    steps: int = Field(default=1000, ge=1)
    batch_size: int = Field(default=128, ge=2)
    lr: float = Field(default=2e-3, gt=0.0)
    weight_decay: float = Field(default=0.1, ge=0.0)
    warmup_steps: int = Field(default=50, ge=0)
    # weight of the class-prompt cross-entropy (images vs the class sentences; 0 = captions only)
    class_loss_weight: float = Field(default=1.0, ge=0.0)
    # templates of the class-prompt texts, one drawn per class and step ({class_name} is replaced)
    templates: list[str] = Field(
        default_factory=lambda: ["a photo of {class_name}", "a photo of a {class_name}", "a {class_name}", "{class_name}"]
    )
    # probability that a training image's plain background is replaced by a random synthetic pattern (stripes,
    # checks, dots, gradient; its caption gains the pattern word): broad "web-like" variety, never target images
    texture_prob: float = Field(default=0.5, ge=0.0, le=1.0)
    # curriculum: the texture probability rises linearly from 0 to texture_prob over this fraction of the steps
    texture_ramp: float = Field(default=0.5, ge=0.0, le=1.0)
    # caption-preserving geometry: mirror images (the caption's position words mirrored too) and shifts (pixels)
    flip: bool = True
    max_shift: int = Field(default=2, ge=0, le=8)
    autocast: Literal["none", "bf16"] = "bf16"  # mixed precision of the forward passes (CPU with AVX512-BF16, or GPU)
    checkpoint_every: int = Field(default=100, ge=1)
    eval_batch_size: int = Field(default=512, ge=1)
    # torch CPU threads while training (null: torch's default). 1 is the fastest on a small shared CPU: with several
    # processes on 2 cores, 2 threads each spin against each other (measured 0.3 s/step with 1 thread, 1.4-6.8 s with 2)
    num_threads: Optional[int] = Field(default=1, ge=1)

    @field_validator("templates")
    @classmethod
    def _has_placeholder(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one template is needed")
        bad = [t for t in v if "{class_name}" not in t]
        if bad:
            raise ValueError(f"templates must contain '{{class_name}}': {bad}")
        return v


class ClipParams(StrictModel):
    """The CLIP used by MVP's loss and by scoring.

    * ``model``: an open_clip model name: a built-in one (``ViT-B-32``, ``ViT-B-32-quickgelu``, ``ViT-L-14`` ...) or one
      of genvpt/clip/configs/*.json (``genvpt-tiny-cnn``, the embedded default; ``genvpt-tiny-vit``, a ViT variant).
    * ``pretrained``: the weights file. For the embedded default, the file the ``pretrain_clip`` stage writes; for a
      real CLIP, a local open_clip state dict (.safetensors/.bin/.pt; OpenAI TorchScript files must be converted
      once with ``python -m genvpt.clip convert-torchscript IN OUT``).
    * ``quick_gelu``: OpenAI's CLIP weights were trained with QuickGELU; open_clip only checks this for *tags*, so a
      weights *file* loaded into a GELU model gives silently wrong embeddings. null = auto (from the model name, with a
      warning when unsure); true/false force it.
    """

    model: str = "genvpt-tiny-cnn"
    pretrained: str = DEFAULT_CLIP_PATH
    quick_gelu: Optional[bool] = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    batch_size: int = Field(default=256, ge=1)  # batch of the inference-mode embedding functions (scoring)
    train: ClipTrainParams = ClipTrainParams()
