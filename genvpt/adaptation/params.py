"""params.yaml section ``adaptation``: the configurations trained by ``stages/adapt.py`` (one DVC stage instance per
configuration, ``foreach: ${adaptation.configs}``), each once per training seed of ``adaptation.seeds``.

A configuration names its ``backbone`` (a registered family: genvpt/backbones), the ``tokenizer`` family that
backbone reads (dvc.yaml derives the instance's input paths from these two; a wrong pairing is an error), its
``method`` (a registered method: genvpt/adaptation/methods), ``train`` overrides of ``adaptation.train``, and the
method's own options, validated by the method's ``Params`` model (whose defaults are the only defaults).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional

from pydantic import Field, ValidationError, field_validator, model_validator

from ..schema import NAME_PATTERN as _NAME, KeyedErrors, StrictModel, error_items

__all__ = ["TrainSettings", "AdaptationConfig", "AdaptationParams", "MemoryBenchmarkParams"]

_RESERVED = ("backbone", "tokenizer", "method", "train")


class TrainSettings(StrictModel):
    """Optimisation of every method: AdamW over the trainable parameters, linear warm-up then cosine decay."""

    steps: int = Field(default=100, ge=1)
    batch_size: int = Field(default=32, ge=2)
    lr: float = Field(default=1e-3, gt=0.0)
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = Field(default=0.0, ge=0.0)
    warmup_steps: int = Field(default=5, ge=0)
    min_lr_ratio: float = Field(default=0.05, ge=0.0, le=1.0)
    grad_clip: float = Field(default=1.0, ge=0.0)  # 0 = off
    label_drop: float = Field(default=0.1, ge=0.0, lt=1.0)  # condition -> null (guidance's branch is tuned too)
    checkpoint_every: int = Field(default=25, ge=1)

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError(f"betas must lie in [0, 1), got {list(v)}")
        return v


@dataclass
class AdaptationConfig:
    """One configuration, merged and validated: ``options`` is an instance of the method's ``Params``."""

    name: str
    backbone: str
    tokenizer: str
    method: str
    train: TrainSettings
    options: StrictModel

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "backbone": self.backbone, "tokenizer": self.tokenizer, "method": self.method,
                "train": self.train.model_dump(mode="json"), "options": self.options.model_dump(mode="json")}


class MemoryBenchmarkParams(StrictModel):
    """benchmarks/mvp_memory.py: peak training memory of MVP vs the prefilled prompt on a randomly initialised VAR of
    ``depth`` (VAR-256 scales), ``tau`` as in Table 4. ``batch_size`` on a GPU; ``cpu_batch_size`` without one."""

    depth: int = Field(default=16, ge=1)
    tau: int = Field(default=20, ge=4)
    batch_size: int = Field(default=16, ge=1)
    cpu_batch_size: int = Field(default=2, ge=1)


class AdaptationParams(StrictModel):
    """The ``adaptation`` section."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: Optional[int] = Field(default=None, ge=1)  # torch CPU threads (null: torch's default)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])  # every configuration trains once per seed
    memory_benchmark: MemoryBenchmarkParams = MemoryBenchmarkParams()
    train: TrainSettings = TrainSettings()
    # name -> {backbone, tokenizer, method, train: {...}, <method options>}; the name is the folder under
    # data/adapted and the report row
    configs: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v or len(set(v)) != len(v) or any(s < 0 for s in v):
            raise ValueError(f"seeds must be distinct non-negative integers, at least one (got {v})")
        return v

    @model_validator(mode="after")
    def _configs_validate(self) -> "AdaptationParams":
        for name in self.configs:
            self.config(name)
        return self

    def config(self, name: str) -> AdaptationConfig:
        """The merged configuration ``name``, validated against the backbone and method registries."""
        from ..backbones import BACKBONES
        from .method import method_class

        if name not in self.configs:
            raise KeyError(f"no adaptation configuration {name!r}; params adaptation.configs has: "
                           f"{', '.join(self.configs) or '(none)'}")
        where = f"configs.{name}"

        def fail(key: str, msg: str) -> KeyedErrors:  # names the full key: configs.<name>.<key>
            return KeyedErrors([(f"{where}.{key}" if key else where, msg)])

        if not _NAME.match(name):
            raise fail("", f"the name must match {_NAME.pattern} (it becomes a folder name)")
        if name in BACKBONES:
            raise fail("", f"{name!r} is a backbone's name (its frozen row); choose another name")
        raw = self.configs[name]
        if not isinstance(raw, dict):
            raise fail("", "must be a mapping with backbone, tokenizer, method and options")
        for key in ("backbone", "method"):
            if key not in raw:
                raise fail(key, "is required")
        bb = raw["backbone"]
        if not isinstance(bb, str) or bb not in BACKBONES:
            raise fail("backbone", f"unknown backbone {bb!r}; registered: {', '.join(sorted(BACKBONES))}")
        want_tok = BACKBONES[bb].tokenizer_family
        tok = raw.get("tokenizer", want_tok)
        if tok != want_tok:
            raise fail("tokenizer", f"the {bb} backbone reads {want_tok!r} tokens, not {tok!r}")
        if not isinstance(raw["method"], str):
            raise fail("method", f"must be a method name, got {raw['method']!r}")
        try:
            mcls = method_class(raw["method"])
        except ValueError as err:
            raise fail("method", str(err)) from None
        train_over = raw.get("train") or {}
        if not isinstance(train_over, dict):
            raise fail("train", "must be a mapping of overrides of adaptation.train")
        try:
            train = TrainSettings.model_validate({**self.train.model_dump(), **train_over})
        except ValidationError as err:
            raise KeyedErrors(error_items(err, list(TrainSettings.model_fields), f"{where}.train")) from None
        opts = {k: v for k, v in raw.items() if k not in _RESERVED}
        try:
            options = mcls.Params.model_validate(opts)
        except ValidationError as err:
            fields = list(mcls.Params.model_fields) + list(_RESERVED)
            raise KeyedErrors(error_items(err, fields, where, f"method {mcls.name}")) from None
        need = mcls.required_features(options) - set(BACKBONES[bb].features)
        if need:
            raise fail("method", f"method {mcls.name} needs {sorted(need)} from its backbone, which the {bb} "
                                 f"backbone does not offer (it has {sorted(BACKBONES[bb].features)})")
        return AdaptationConfig(name=name, backbone=bb, tokenizer=tok, method=mcls.name, train=train, options=options)
