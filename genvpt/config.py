"""params.yaml, validated on load.

Every section is a pydantic model with ``extra="forbid"``; every field has the embedded default's value, so a
params file may name only what it changes. :func:`load_params` raises :class:`ConfigError`, whose message names
the key (``dataset.name``) and what is allowed there (the literal choices, or the known keys of that section).

Sections owned by later stages live next to their code (``genvpt/<area>/params.py``) and are composed here.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from .schema import KeyedErrors, StrictModel, short_repr
from .datasets.params import (
    SHAPE_CLASSES,
    DatasetParams,
    FewShotParams,
    PrepareParams,
    ShapesParams,
    with_source_defaults,
)
from .metrics.params import MetricsParams, ReportParams
from .sampling_params import SampleParams
from .clip.params import ClipParams
from .captions.params import CaptionParams
from .adaptation.params import AdaptationParams
from .generators.params import GeneratorParams
from .tokenizers.params import TokenizerParams
from .classify.params import ClassifyParams
from .targets.params import ExtraTarget, extra_target_errors
from .distributed import DistributedParams, batch_size_errors
from .prefect_params import PrefectParams
from .remote_params import RemoteParams

__all__ = [
    "ConfigError",
    "StrictModel",
    "SHAPE_CLASSES",
    "FewShotParams",
    "ShapesParams",
    "DatasetParams",
    "PrepareParams",
    "PrefectParams",
    "RemoteParams",
    "Params",
    "load_params",
    "validate_params",
]

DEFAULT_PARAMS = "params.yaml"


class ConfigError(ValueError):
    """Invalid params: the message names the file, the key and what is allowed."""


def _source_default() -> DatasetParams:
    return DatasetParams.model_validate(with_source_defaults({}))


class Params(StrictModel):
    """The whole params.yaml."""

    seed: int = 0
    # the target domain that prompts adapt to: the block users swap
    dataset: DatasetParams = Field(default_factory=DatasetParams)
    # the domain the embedded default's backbones are pretrained on (unused when checkpoints are named); a partial
    # block is read over genvpt.datasets.params.SOURCE_DEFAULTS, not over the target's defaults
    source: DatasetParams = Field(default_factory=_source_default)
    prepare: PrepareParams = PrepareParams()
    prefect: PrefectParams = PrefectParams()
    # the DVC remote the flow pulls stage outputs from and pushes them to (genvpt/remote_params.py)
    remote: RemoteParams = RemoteParams()
    # evaluation: sample sets (genvpt/sampling_params.py), their metrics and the report (genvpt/metrics/params.py)
    sample: SampleParams = SampleParams()
    metrics: MetricsParams = MetricsParams()
    report: ReportParams = ReportParams()
    # captions and multi-level texts (genvpt/captions/params.py); the CLIP (genvpt/clip/params.py)
    caption: CaptionParams = CaptionParams()
    clip: ClipParams = ClipParams()
    # adaptation configurations: backbone x method, trained once per seed (genvpt/adaptation/params.py)
    adaptation: AdaptationParams = AdaptationParams()
    # the frozen backbones AR / MaskGIT / VAR, their pretraining and sampling (genvpt/generators/params.py)
    generator: GeneratorParams = GeneratorParams()
    # the VQ tokenizers: taming VQGAN and VAR's multi-scale VQ-VAE (genvpt/tokenizers/params.py)
    tokenizer: TokenizerParams = TokenizerParams()
    # PGN and its baselines adapting a frozen CLIP ViT classifier to the target (genvpt/classify/params.py)
    classify: ClassifyParams = ClassifyParams()
    # training processes per machine for generator pretraining and prompt training (torchrun; genvpt/distributed.py)
    distributed: DistributedParams = DistributedParams()
    # more targets the per-target stages rerun for (stage extra_target@<name>; genvpt/targets/params.py)
    extra_targets: dict[str, ExtraTarget] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _batches_divide(self) -> "Params":
        errors = batch_size_errors(self, self.distributed.nproc_per_node)
        if errors:
            raise KeyedErrors(errors)
        return self

    @model_validator(mode="after")
    def _merged_dataset_blocks(self) -> "Params":
        """Every column of classify.datasets (merged over ``dataset``) and every entry of tokenizer.data (merged over
        ``source``) is a valid dataset block."""
        errors: list[tuple[str, str]] = []
        for section, names, block in (("classify", self.classify.datasets, self.classify.dataset_block),
                                      ("tokenizer", self.tokenizer.data, self.tokenizer.data_block)):
            base = self.dataset if section == "classify" else self.source
            for name in names:
                try:
                    block(name, base)
                except KeyedErrors as err:
                    errors += [(f"{section}.{k}", m) for k, m in err.items]
        if errors:
            raise KeyedErrors(errors)
        return self

    @model_validator(mode="after")
    def _class_judge(self) -> "Params":
        """metrics.class_judge names a configuration and a dataset of the classification table."""
        judge = self.metrics.class_judge
        if judge is None:
            return self
        errors = [(f"metrics.class_judge.{key}", f"{name!r} is not in classify.{key}s; allowed: {sorted(allowed)}")
                  for key, name, allowed in (("config", judge.config, self.classify.configs),
                                             ("dataset", judge.dataset, self.classify.datasets))
                  if name not in allowed]
        if errors:
            raise KeyedErrors(errors)
        return self

    @model_validator(mode="after")
    def _extra_targets(self) -> "Params":
        """Every entry of extra_targets: a folder name, configurations of adaptation.configs, and a valid dataset
        block once merged over ``dataset``."""
        errors = extra_target_errors(self.extra_targets, self.dataset, self.adaptation.configs)
        if errors:
            raise KeyedErrors(errors)
        return self

    @model_validator(mode="before")
    @classmethod
    def _source_block_defaults(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "source" in data:
            data = {**data, "source": with_source_defaults(data["source"])}
        return data


def _allowed_here(model: type[BaseModel], loc: tuple) -> Optional[list[str]]:
    """Field names of the (sub)model at ``loc``'s parent, for 'unknown key' messages."""
    cur: Any = model
    in_mapping = False  # the previous part was a dict[str, Model] field: this part is one of its keys
    for part in loc[:-1]:
        if isinstance(part, int) or in_mapping:
            in_mapping = False
            continue
        fields = getattr(cur, "model_fields", None)
        if not fields or part not in fields:
            return None
        ann = fields[part].annotation
        in_mapping = getattr(ann, "__origin__", None) is dict
        # unwrap Optional[X]
        args = getattr(ann, "__args__", None)
        if args:
            ann = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), ann)
        cur = ann
    fields = getattr(cur, "model_fields", None)
    return sorted(fields) if fields else None


_TYPE_TAGS = {"bool", "int", "float", "str", "bytes", "list", "dict", "tuple", "set", "none"}


def _key_path(loc: tuple) -> tuple:
    """``loc`` without pydantic's union-branch tags (``literal['auto']``, ``bool``, ``function-after[...]``), so a
    value that fits no branch of ``Literal['auto'] | bool`` is reported under its own key."""
    return tuple(p for i, p in enumerate(loc) if i == 0 or not (isinstance(p, str) and ("[" in p or p in _TYPE_TAGS)))


def _format_errors(err: ValidationError, source: str, model: type[BaseModel]) -> str:
    lines: list[str] = []
    union: dict[str, int] = {}  # key -> index in lines of its (merged) type error
    for e in err.errors():
        loc = _key_path(tuple(e["loc"]))
        key = ".".join(str(p) for p in loc) or "<root>"
        keyed = (e.get("ctx") or {}).get("error")
        if isinstance(keyed, KeyedErrors):  # a section's own validator, naming keys below the section
            lines += [f"  {key + '.' if loc else ''}{k}: {m}" for k, m in keyed.items]
        elif e["type"] == "extra_forbidden":
            allowed = _allowed_here(model, loc)
            hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
            lines.append(f"  {key}: unknown key{hint}")
        else:
            msg = e["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
            if key in union:  # another branch of the same union: one line, every allowed form
                i = union[key]
                head, got = lines[i].rsplit(" (got ", 1)
                lines[i] = f"{head}; or {msg[0].lower() + msg[1:]} (got {got}"
                continue
            union[key] = len(lines)
            lines.append(f"  {key}: {msg} (got {short_repr(e.get('input'))})")
    return f"invalid params in {source}:\n" + "\n".join(lines)


def validate_params(data: Mapping[str, Any] | None, source: str = "<params>") -> Params:
    try:
        return Params.model_validate(dict(data or {}))
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source, Params)) from None


def load_params(path: str | os.PathLike | None = None) -> Params:
    """Read and validate params.yaml (``$GENVPT_PARAMS`` or ./params.yaml by default)."""
    path = Path(path or os.environ.get("GENVPT_PARAMS", DEFAULT_PARAMS))
    return validate_params(read_params_mapping(path), str(path))


def read_params_mapping(path: str | os.PathLike) -> Optional[dict]:
    """A params file as written (not validated): its top-level mapping, or None for an empty file. A missing file,
    invalid YAML or another top level is a ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file not found: {path.resolve()}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    return data
