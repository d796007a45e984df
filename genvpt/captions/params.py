"""params.yaml section ``caption``: which captioner writes ``captions.parquet`` and with which settings, and the
sentence template of the multi-level tuning texts (genvpt/texts.py). Import-light (loaded by genvpt/config.py)."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from ..schema import StrictModel

__all__ = ["LAVIS_MODELS", "LavisParams", "CaptionParams"]

# the LAVIS models the lavis backend may run (its worker checks the same list): LAVIS 1.0.2's blip2_opt types
LAVIS_MODELS = {
    "blip2_opt": ("pretrain_opt2.7b", "pretrain_opt6.7b", "caption_coco_opt2.7b", "caption_coco_opt6.7b"),
}


class LavisParams(StrictModel):
    """The ``lavis`` backend: LAVIS's BLIP-2 in its own environment (``make lavis-env``), run as a subprocess."""

    python: str = ".venv-lavis/bin/python"  # the interpreter of the LAVIS environment
    name: Literal["blip2_opt"] = "blip2_opt"  # LAVIS model name (LAVIS_MODELS)
    # LAVIS model type, one of LAVIS_MODELS[name]
    model_type: Literal["pretrain_opt2.7b", "pretrain_opt6.7b", "caption_coco_opt2.7b", "caption_coco_opt6.7b"] = (
        "caption_coco_opt2.7b")
    # a local BLIP-2 checkpoint (.pth) replacing the URL in LAVIS's model config; null = LAVIS's own cache/URL
    checkpoint: Optional[str] = None
    use_nucleus_sampling: bool = False
    top_p: float = Field(default=0.9, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _known_model(self) -> "LavisParams":
        if self.model_type not in LAVIS_MODELS.get(self.name, ()):
            raise ValueError(f"model_type {self.model_type!r} is not a type of LAVIS model {self.name!r}; allowed: "
                             f"{', '.join(LAVIS_MODELS.get(self.name, ()))}")
        return self


class CaptionParams(StrictModel):
    """The caption stage. ``backend``: ``dataset`` (captions already in the prepared shards: the offline default),
    ``transformers`` (BLIP-2 via Blip2ForConditionalGeneration) or ``lavis`` (LAVIS ``blip2_opt``)."""

    backend: Literal["dataset", "transformers", "lavis"] = "dataset"
    # transformers backend: a Hugging Face model id (needs the hub or its cache) or a local save_pretrained directory
    model: str = "Salesforce/blip2-opt-2.7b"
    local_files_only: bool = False  # never contact the Hugging Face hub (transformers, and lavis via HF_HUB_OFFLINE)
    prompt: str = ""  # text prompt after the image tokens (e.g. "a photo of"); stripped from the captions
    num_beams: int = Field(default=5, ge=1)
    max_new_tokens: int = Field(default=30, ge=1)
    min_new_tokens: int = Field(default=1, ge=0)
    repetition_penalty: float = Field(default=1.0, gt=0.0, allow_inf_nan=False)
    length_penalty: float = Field(default=1.0, allow_inf_nan=False)
    batch_size: int = Field(default=16, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"  # auto: float16 on cuda, float32 on cpu
    flush_every: int = Field(default=256, ge=1)  # captions per partial write (what a crash can lose at most)
    # which prepared splits get captions (every split by default; the prompt methods read train and val)
    splits: list[Literal["train", "val", "test"]] = Field(default_factory=lambda: ["train", "val", "test"])
    # multi-level texts: the sentence level (genvpt/texts.py); {class_name} is replaced by the class name
    sentence_template: str = "a photo of {class_name}"
    # when no captioner can run (a dataset without captions for the dataset backend; BLIP-2 weights or the LAVIS
    # environment missing): sentence = those samples' caption level is the sentence level, recorded in
    # captions.parquet and the report; error = the caption stage fails
    fallback: Literal["sentence", "error"] = "sentence"
    lavis: LavisParams = LavisParams()

    @field_validator("sentence_template")
    @classmethod
    def _has_placeholder(cls, v: str) -> str:
        if "{class_name}" not in v:
            raise ValueError("sentence_template must contain '{class_name}'")
        try:
            v.format(class_name="x")
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(f"sentence_template is not a valid format string with only {{class_name}}: {err}") from None
        return v

    @field_validator("splits")
    @classmethod
    def _non_empty(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError("splits must be a non-empty list of distinct split names")
        return v
