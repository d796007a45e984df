"""params.yaml section ``sample`` (what the sample stages draw, from which configurations). Import-light on purpose:
genvpt/config.py imports this module. Its own file so that the sample stages depend on it alone: a change to how
samples are scored (``metrics``, genvpt/metrics/params.py) never makes them stale."""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, field_validator, model_validator

from .schema import NAME_PATTERN as _NAME, StrictModel

__all__ = ["SampleConfig", "SampleParams"]


class SampleConfig(StrictModel):
    """One model configuration to sample from (one row of the report)."""

    name: str  # directory name under data/samples and the row label in the report
    # sampler kind (genvpt.sampling.SAMPLERS): backbone = frozen generator + tokenizer; prompt = a trained prompt
    # configuration (genvpt.prompts.sampler), whose file is `generator` and which names its own backbone
    kind: Literal["backbone", "adapted"] = "backbone"
    family: Literal["ar", "maskgit", "var"] = "var"
    generator: Optional[str] = None  # generator model file (save_model / official checkpoint), or the prompt file
    tokenizer: Optional[str] = None  # tokenizer model file (kind backbone)
    sampling: dict[str, Any] = Field(default_factory=dict)  # extra keyword arguments for sample_images (top_k, cfg...)
    # training record (JSON: trainable_params, train_time_s, peak_memory_mb, ...; kind prompt: null = the record.json
    # next to the prompt file) and training-curve CSVs for the report
    train_record: Optional[str] = None
    curves: list[str] = Field(default_factory=list)
    # parameters trained for this configuration; null: from train_record, or 0 for a frozen backbone
    trainable_params: Optional[int] = Field(default=None, ge=0)

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"config name {v!r} must match {_NAME.pattern} (it becomes a directory name)")
        return v

    @model_validator(mode="after")
    def _paths_for_kind(self) -> "SampleConfig":
        if self.kind == "backbone" and (not self.generator or not self.tokenizer):
            raise ValueError(f"config {self.name!r}: kind 'backbone' needs both generator and tokenizer paths")
        if self.kind == "adapted" and not self.generator:
            raise ValueError(f"config {self.name!r}: kind 'adapted' needs generator: data/adapted/<name>/seed-<s>/model.pt")
        return self


def _default_configs() -> list[SampleConfig]:
    return [
        SampleConfig(name="ar", family="ar", generator="data/generators/ar/model.pt",
                     tokenizer="data/tokenizers/vqgan/model.pt"),
        SampleConfig(name="maskgit", family="maskgit", generator="data/generators/maskgit/model.pt",
                     tokenizer="data/tokenizers/vqgan/model.pt"),
        SampleConfig(name="var", family="var", generator="data/generators/var/model.pt",
                     tokenizer="data/tokenizers/msvq/model.pt"),
    ]


class SampleParams(StrictModel):
    """The ``sample`` section: how many images, in which batches, from which configurations."""

    images_per_class: int = Field(default=50, ge=1)
    batch_size: int = Field(default=60, ge=1)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # sample each configuration in its own process on CPU, so its peak memory (max RSS) is its own
    isolate: bool = True
    # frozen rows are sampled once per sampling seed here: their spread is the sampling noise (shown once); adapted
    # rows once per training seed, with sampling seed ``seed``
    sampling_seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    configs: list[SampleConfig] = Field(default_factory=list)  # extra rows (custom sampler kinds); usually empty

    @field_validator("configs")
    @classmethod
    def _unique(cls, v: list[SampleConfig]) -> list[SampleConfig]:
        names = [c.name for c in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate config names: {dup}")
        return v
