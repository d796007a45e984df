"""params.yaml, validated on load.

Every section is a pydantic model with ``extra="forbid"``; every field has the embedded default's value, so a
params file may name only what it changes. :func:`load_params` raises :class:`ConfigError`, whose message names
the key (``dataset.name``) and what is allowed there (the literal choices, or the known keys of that section).

Sections owned by later stages live next to their code (``genvpt/<area>/params.py``) and are composed here.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Mapping, Optional

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from .schema import StrictModel
from .metrics.params import MetricsParams, ReportParams, SampleParams
from .clip_params import ClipParams
from .captions.params import CaptionParams
from .prompts.params import PromptsParams
from .generators.params import GeneratorParams
from .tokenizers.params import TokenizerParams

__all__ = [
    "ConfigError",
    "StrictModel",
    "SHAPE_CLASSES",
    "FewShotParams",
    "ShapesParams",
    "DatasetParams",
    "PrepareParams",
    "PrefectParams",
    "Params",
    "load_params",
    "validate_params",
]

DEFAULT_PARAMS = "params.yaml"

# The procedurally generated dataset's classes (genvpt/datasets/shapes.py draws each of them).
SHAPE_CLASSES = (
    "circle",
    "square",
    "triangle",
    "star",
    "pentagon",
    "hexagon",
    "cross",
    "diamond",
    "heart",
    "crescent",
    "arrow",
    "ring",
)


class ConfigError(ValueError):
    """Invalid params: the message names the file, the key and what is allowed."""


class FewShotParams(StrictModel):
    """Few-shot subsampling: keep ``num_classes`` classes (all if null) and ``images_per_class`` training
    images of each (all if null). Chosen with ``seed``; the validation split keeps every image of the kept classes."""

    images_per_class: Optional[int] = Field(default=None, ge=1)
    num_classes: Optional[int] = Field(default=None, ge=1)
    seed: int = 0


class ShapesParams(StrictModel):
    """The procedurally generated dataset. ``domain`` is the style shift between source and target:
    ``flat`` (filled shapes on plain backgrounds), ``textured`` (striped/dotted/checkered/gradient backgrounds and
    patterned fills), ``outlined`` (outline-only shapes on plain backgrounds)."""

    domain: Literal["flat", "textured", "outlined"] = "flat"
    images_per_class: int = Field(default=300, ge=1)
    classes: Optional[list[str]] = None
    max_count: int = Field(default=2, ge=1, le=3)
    # radius multiplier of every size (small/medium/large = 0.14/0.19/0.25 of the side at 1.0); a shape's centre is
    # pulled inwards just enough to keep it inside the canvas
    size_scale: float = Field(default=1.0, ge=0.5, le=2.0)
    colours: Optional[list[str]] = None  # shape and background colours drawn from (null: all 12)
    rotation_range: float = Field(default=360.0, ge=0.0, le=360.0)  # degrees; < 360: within +-range/2 of upright
    # where a single shape sits / how large it is, drawn from these names (null: all); several shapes use corners
    positions: Optional[list[str]] = None
    sizes: Optional[list[str]] = None
    position_jitter: float = Field(default=0.04, ge=0.0, le=0.2)  # random shift of a shape's centre (fraction of the side)

    @field_validator("positions", "sizes")
    @classmethod
    def _known_names(cls, v: Optional[list[str]], info) -> Optional[list[str]]:
        from .datasets.shapes import POSITIONS, SIZES

        if v is None:
            return v
        known = POSITIONS if info.field_name == "positions" else SIZES
        unknown = [c for c in v if c not in known]
        if unknown or len(set(v)) != len(v) or not v:
            raise ValueError(f"{info.field_name} must be distinct names from: {', '.join(known)} (got {v})")
        return v

    @field_validator("colours")
    @classmethod
    def _known_colours(cls, v: Optional[list[str]]) -> Optional[list[str]]:
        from .datasets.shapes import COLOURS

        if v is None:
            return v
        unknown = [c for c in v if c not in COLOURS]
        if unknown or len(set(v)) != len(v) or len(v) < 2:
            raise ValueError(f"colours must be at least two distinct names from: {', '.join(COLOURS)}")
        return v

    @model_validator(mode="after")
    def _readable_colours(self) -> "ShapesParams":
        if not self.colours:
            return self
        from .datasets.shapes import colour_pairs

        if not colour_pairs(self.colours, self.domain):
            raise ValueError(f"colours {self.colours} have no (shape, background) pair with enough contrast for the "
                             f"{self.domain!r} domain; add contrasting colours (e.g. white and black)")
        return self

    @field_validator("classes")
    @classmethod
    def _known_classes(cls, v: Optional[list[str]]) -> Optional[list[str]]:
        if v is None:
            return v
        unknown = [c for c in v if c not in SHAPE_CLASSES]
        if unknown:
            raise ValueError(f"unknown shape classes {unknown}; allowed: {', '.join(SHAPE_CLASSES)}")
        if len(set(v)) != len(v) or len(v) < 2:
            raise ValueError("classes must be at least two distinct names")
        return v


class DatasetParams(StrictModel):
    """One dataset: where images come from and how they are split and subsampled."""

    name: Literal["shapes", "digits", "imagefolder", "parquet", "webdataset"] = "shapes"
    image_size: int = Field(default=32, ge=8, le=1024)
    seed: int = 0
    val_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    # users' data: a class-per-folder root, a parquet file or folder, or a folder/brace pattern of .tar shards
    path: Optional[str] = None
    image_column: str = "image"
    label_column: str = "label"
    caption_column: Optional[str] = None
    class_names: Optional[list[str]] = None
    shapes: ShapesParams = ShapesParams()
    few_shot: FewShotParams = FewShotParams()

    @model_validator(mode="after")
    def _path_needed(self) -> "DatasetParams":
        if self.name in ("imagefolder", "parquet", "webdataset") and not self.path:
            raise ValueError(f"path is required when name is {self.name!r}")
        return self


class PrepareParams(StrictModel):
    """The prepare stage: shard size and how much bad input is tolerated before failing."""

    shard_maxcount: int = Field(default=10000, ge=1)
    max_reject_fraction: float = Field(default=0.05, ge=0.0, le=1.0)


class PrefectParams(StrictModel):
    """Task retries for flows/pipeline.py."""

    retries: int = Field(default=1, ge=0)
    retry_delay_seconds: float = Field(default=5.0, ge=0.0)


def _source_default() -> DatasetParams:
    return DatasetParams(name="shapes", shapes=ShapesParams(domain="flat"))


def _target_default() -> DatasetParams:
    return DatasetParams(name="shapes", shapes=ShapesParams(domain="textured", images_per_class=100))


class Params(StrictModel):
    """The whole params.yaml."""

    seed: int = 0
    # the target domain that prompts adapt to: the block users swap
    dataset: DatasetParams = Field(default_factory=_target_default)
    # the domain the embedded default's backbones are pretrained on (unused when checkpoints are named)
    source: DatasetParams = Field(default_factory=_source_default)
    prepare: PrepareParams = PrepareParams()
    prefect: PrefectParams = PrefectParams()
    # evaluation: sample sets, their metrics, the report (genvpt/metrics/params.py)
    sample: SampleParams = SampleParams()
    metrics: MetricsParams = MetricsParams()
    report: ReportParams = ReportParams()
    # captions and multi-level texts (genvpt/captions/params.py); the CLIP (genvpt/clip_params.py)
    caption: CaptionParams = CaptionParams()
    clip: ClipParams = ClipParams()
    # prompt-tuning configurations on the frozen VAR (genvpt/prompts/params.py)
    prompts: PromptsParams = PromptsParams()
    # the frozen backbones AR / MaskGIT / VAR, their pretraining and sampling (genvpt/generators/params.py)
    generator: GeneratorParams = GeneratorParams()
    # the VQ tokenizers: taming VQGAN and VAR's multi-scale VQ-VAE (genvpt/tokenizers/params.py)
    tokenizer: TokenizerParams = TokenizerParams()


def _allowed_here(model: type[BaseModel], loc: tuple) -> Optional[list[str]]:
    """Field names of the (sub)model at ``loc``'s parent, for 'unknown key' messages."""
    cur: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = getattr(cur, "model_fields", None)
        if not fields or part not in fields:
            return None
        ann = fields[part].annotation
        # unwrap Optional[X]
        args = getattr(ann, "__args__", None)
        if args:
            ann = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), ann)
        cur = ann
    fields = getattr(cur, "model_fields", None)
    return sorted(fields) if fields else None


def _format_errors(err: ValidationError, source: str, model: type[BaseModel]) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(p) for p in loc) or "<root>"
        if e["type"] == "extra_forbidden":
            allowed = _allowed_here(model, loc)
            hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
            lines.append(f"  {key}: unknown key{hint}")
        else:
            msg = e["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
            lines.append(f"  {key}: {msg} (got {e.get('input')!r})")
    return f"invalid params in {source}:\n" + "\n".join(lines)


def validate_params(data: Mapping[str, Any] | None, source: str = "<params>") -> Params:
    try:
        return Params.model_validate(dict(data or {}))
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source, Params)) from None


def load_params(path: str | os.PathLike | None = None) -> Params:
    """Read and validate params.yaml (``$GENVPT_PARAMS`` or ./params.yaml by default)."""
    path = Path(path or os.environ.get("GENVPT_PARAMS", DEFAULT_PARAMS))
    if not path.is_file():
        raise ConfigError(f"params file not found: {path.resolve()}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    return validate_params(data, str(path))
