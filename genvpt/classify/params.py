"""params.yaml section ``classify`` (composed into genvpt/config.py; stages ``pretrain_clip_vit`` and
``prepare_classify@<dataset>``, ``classify@<config>-<dataset>``): PGN and its classification baselines on the prepared target dataset, each configuration
trained once per seed of ``classify.seeds``.

A configuration is ``name: {method, train: {overrides of classify.train}, <the method's options>}``; the options are
validated by the method's ``Params`` (genvpt/classify/methods/<method>.py), whose defaults are the only defaults.
Errors are :class:`genvpt.schema.KeyedErrors`: genvpt/config.py names the full key (``classify.configs.pgn.bogus``).
Import-light: torch is imported only when a configuration is validated against the method registry.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional

from pydantic import Field, ValidationError, field_validator, model_validator

from ..clip.params import ClipParams
from ..schema import NAME_PATTERN as _NAME, KeyedErrors, StrictModel, describe_errors, error_items

__all__ = ["AugmentParams", "ClassifyTrainParams", "InversionParams", "ClassifyConfig", "ClassifyParams",
           "DEFAULT_TEMPLATE", "DEFAULT_CLASSIFY_CLIP", "DEFAULT_CLASSIFY_CLIP_PATH", "EXAMPLE_BLOCK"]

# The ``classify`` block of params.yaml (tests/test_classify_methods.py validates it; tests/test_config.py checks that
# params.yaml's values are the models' defaults). The embedded default's scoring CLIP is a CNN (genvpt-tiny-cnn):
# token prompts and inversion need a ViT, hence the classify-only CLIP (stage pretrain_clip_vit).
EXAMPLE_BLOCK = """\
classify:
  clip:                         # null = the top-level clip block; pgn / iip / inversion need a ViT vision tower
    model: genvpt-tiny-vit
    pretrained: data/clip-vit/model.pt
  device: auto
  num_threads: 1                # one torch thread on a shared small CPU (contended threads measured ~5x slower)
  template: "This is a photo of a {class_name}"
  seeds: [0, 1, 2]
  eval_splits: [val, test]
  train:                        # official PGN scripts: SGD momentum 0.9, lr 0.1, warm-up half, cosine to lr/100
    steps: 500
    batch_size: 32
    optimizer: sgd
    lr: 0.1
    momentum: 0.9
    weight_decay: 0.0
    warmup_fraction: 0.5
    min_lr_ratio: 0.01
    grad_clip: 0.0
    checkpoint_every: 100
    eval_batch_size: 256
    eval_before: true
    augment: {enabled: true, crop_scale_min: 1.0, jitter_prob: 0.8, jitter: [0.4, 0.4, 0.4, 0.4],
              greyscale_prob: 0.2, solarize_prob: 0.2, flip: true}
  configs:
    zero-shot: {method: zero_shot}
    linear-probe: {method: linear_probe}
    iip: {method: iip, num_prompts: 16, train: {lr: 0.01}}  # K 16 as the official IIP (chosen on val over 4)
    pgn: {method: pgn, num_prompts: 4, library_size: 64, train: {lr: 0.03}}
    vp: {method: vp, train: {lr: 40.0}}          # Bahng et al.'s SGD lr
    lora: {method: lora, rank: 4, train: {optimizer: adamw, lr: 0.001}}
    finetune: {method: finetune, train: {optimizer: adamw, lr: 0.0001}}
  inversion: {configs: [pgn, iip], placement: append, ln_invariant: true, split: test}
"""
DEFAULT_TEMPLATE = "This is a photo of a {class_name}"  # the official PGN scripts' template for most datasets
DEFAULT_CLASSIFY_CLIP_PATH = "data/clip-vit/model.pt"  # what stage pretrain_clip_vit writes (trained or imported)
DEFAULT_CLASSIFY_CLIP = ClipParams(model="genvpt-tiny-vit", pretrained=DEFAULT_CLASSIFY_CLIP_PATH)
_RESERVED = ("method", "train")


class AugmentParams(StrictModel):
    """The official PGN training transforms (CIFAR/DTD/... datamodules), on tensors (torchvision.transforms.v2), drawn
    per sample from a (seed, step) generator: RandomResizedCrop to the CLIP input size with area in
    [crop_scale_min, 1] (bicubic), colour jitter with probability ``jitter_prob``, greyscale, solarize (threshold
    0.5, PIL's 128), horizontal flip. ``enabled: false`` trains on the evaluation preprocessing."""

    enabled: bool = True
    crop_scale_min: float = Field(default=1.0, gt=0.0, le=1.0)
    jitter_prob: float = Field(default=0.8, ge=0.0, le=1.0)
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.4)  # brightness, contrast, saturation, hue
    greyscale_prob: float = Field(default=0.2, ge=0.0, le=1.0)
    solarize_prob: float = Field(default=0.2, ge=0.0, le=1.0)
    flip: bool = True

    @field_validator("jitter")
    @classmethod
    def _jitter(cls, v: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        if any(x < 0 for x in v) or v[3] > 0.5:
            raise ValueError(f"jitter values must be >= 0 and hue <= 0.5, got {list(v)}")
        return v


class ClassifyTrainParams(StrictModel):
    """Optimisation (official PGN scripts): SGD momentum 0.9, lr 0.1, linear warm-up over ``warmup_fraction`` of the
    steps (50 of 100 epochs) then cosine to ``lr * min_lr_ratio`` (lr/100)."""

    steps: int = Field(default=500, ge=1)
    batch_size: int = Field(default=32, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(default=0.1, gt=0.0)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)  # sgd
    betas: tuple[float, float] = (0.9, 0.999)  # adamw
    weight_decay: float = Field(default=0.0, ge=0.0)
    warmup_fraction: float = Field(default=0.5, ge=0.0, lt=1.0)
    min_lr_ratio: float = Field(default=0.01, ge=0.0, le=1.0)
    grad_clip: float = Field(default=0.0, ge=0.0)  # 0 = off (the official code does not clip)
    checkpoint_every: int = Field(default=100, ge=1)
    eval_batch_size: int = Field(default=256, ge=1)
    eval_before: bool = True  # also score the untrained method (loss and top-1 at step 0) on every eval split
    augment: AugmentParams = AugmentParams()

    @property
    def warmup_steps(self) -> int:
        return int(round(self.steps * self.warmup_fraction))


class InversionParams(StrictModel):
    """Prompt inversion of the trained token-prompt configurations (PGN, IIP) to RGB patches
    (genvpt/classify/inversion.py)."""

    configs: list[str] = Field(default_factory=list)  # configuration names (token-prompt methods: pgn, iip)
    placement: Literal["append", "replace"] = "append"
    ln_invariant: bool = True  # least squares up to a per-token constant, which ln_pre removes
    split: str = "test"


@dataclass
class ClassifyConfig:
    """One configuration, merged and validated: ``options`` is an instance of the method's ``Params``."""

    name: str
    method: str
    train: ClassifyTrainParams
    options: StrictModel

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "method": self.method, "train": self.train.model_dump(mode="json"),
                "options": self.options.model_dump(mode="json")}


class ClassifyParams(StrictModel):
    """The ``classify`` section."""

    # the CLIP the methods adapt (stage pretrain_clip_vit trains it when it is one of genvpt's own configs, imports
    # it otherwise, and writes data/clip-vit/model.pt); null: the top-level clip block's model, imported
    clip: Optional[ClipParams] = DEFAULT_CLASSIFY_CLIP
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: Optional[int] = Field(default=1, ge=1)  # torch CPU threads (null: torch's default)
    template: str = DEFAULT_TEMPLATE
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    eval_splits: list[str] = Field(default_factory=lambda: ["val", "test"])
    train: ClassifyTrainParams = ClassifyTrainParams()
    configs: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # the table's columns: name -> overrides of the top-level ``dataset`` block (deep-merged; {} = the pipeline's
    # target itself), each prepared by stage prepare_classify@<name> into data/prepared/classify/<name>/
    datasets: dict[str, Any] = Field(default_factory=lambda: {
        "target": {}, "textured-large": {"shapes": {"images_per_class": 400}},
        "outlined": {"name": "shapes", "path": None, "shapes": {"domain": "outlined"}},
        "held-out-classes": {"shapes": {"domain": "flat", "images_per_class": 400, "classes": [
            "trapezoid", "parallelogram", "semicircle", "hourglass", "ell", "tee"]}},
        "digits": {"name": "digits", "path": None}})
    inversion: InversionParams = InversionParams()

    @field_validator("template")
    @classmethod
    def _template(cls, v: str) -> str:
        if "{class_name}" not in v:
            raise ValueError(f"the template must contain '{{class_name}}', got {v!r}")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v or len(set(v)) != len(v) or any(s < 0 for s in v):
            raise ValueError(f"seeds must be distinct non-negative integers, at least one (got {v})")
        return v

    @field_validator("datasets")
    @classmethod
    def _datasets(cls, v: dict[str, Any]) -> dict[str, Any]:
        if not v:
            raise ValueError("datasets must name at least one dataset (target: {} is the pipeline's target)")
        for name, over in v.items():
            msg = None
            if not _NAME.match(str(name)):
                msg = f"the name must match {_NAME.pattern} (it becomes a folder name)"
            elif over is not None and not isinstance(over, dict):
                msg = f"must be a mapping of overrides of the dataset block (got {over!r})"
            if msg:  # keys relative to the field: genvpt/config.py prefixes "classify.datasets."
                raise _errors([(str(name), msg)], f"classify.datasets.{name}: {msg}")
        return v

    def dataset_block(self, name: str, base: Any) -> Any:
        """The DatasetParams of column ``name`` of ``datasets``: its overrides deep-merged over ``base`` (the
        top-level ``dataset`` block). Errors name the key (``classify.datasets.digits.shapes.domain``)."""
        from ..datasets.params import merged_dataset_block

        if name not in self.datasets:
            raise KeyError(f"no classify dataset {name!r}; params classify.datasets has: {', '.join(self.datasets)}")
        return merged_dataset_block(base, self.datasets[name], f"datasets.{name}", f"classify.datasets.{name}")

    @model_validator(mode="after")
    def _validate(self) -> "ClassifyParams":
        for name in self.configs:
            self.config(name)
        bad = [c for c in self.inversion.configs if c not in self.configs]
        if bad:
            raise _keyed("inversion.configs", f"{bad} are not configurations (configs has {sorted(self.configs)})")
        if not self.inversion.configs:
            return self
        from .method import method_class

        flat = [c for c in self.inversion.configs if not method_class(self.configs[c]["method"]).needs_vit]
        if flat:
            raise _keyed("inversion.configs", f"{flat} make no token prompts to invert (methods pgn, iip do)")
        return self

    def config(self, name: str) -> ClassifyConfig:
        """The merged configuration ``name``, validated against the method registry."""
        from .method import method_class

        if name not in self.configs:
            raise KeyError(f"no classify configuration {name!r}; params classify.configs has: "
                           f"{', '.join(self.configs) or '(none)'}")
        key = f"configs.{name}"  # relative to the section (genvpt/config.py prefixes "classify.")
        where = f"classify.{key}"
        if not _NAME.match(name):
            raise _keyed(key, f"the name must match {_NAME.pattern} (it becomes a folder name)", where)
        raw = self.configs[name]
        if not isinstance(raw, dict) or "method" not in raw:
            raise _keyed(key, "must be a mapping with a method and its options", where, " ")
        try:
            mcls = method_class(raw["method"])
        except ValueError as err:
            raise _keyed(f"{key}.method", str(err), f"{where}.method") from None
        over = raw.get("train") or {}
        if not isinstance(over, dict):
            raise _keyed(f"{key}.train", "must be a mapping of overrides of classify.train", f"{where}.train", " ")
        base = self.train.model_dump()
        if isinstance(over.get("augment"), dict):
            over = {**over, "augment": {**base["augment"], **over["augment"]}}
        try:
            train = ClassifyTrainParams.model_validate({**base, **over})
        except ValidationError as err:
            fields = list(ClassifyTrainParams.model_fields)
            raise _errors(error_items(err, fields, f"{key}.train"),
                          f"{where}.train: {describe_errors(err, fields)}") from None
        opts = {k: v for k, v in raw.items() if k not in _RESERVED}
        try:
            options = mcls.Params.model_validate(opts)
        except ValidationError as err:
            fields = list(mcls.Params.model_fields) + list(_RESERVED)
            raise _errors(error_items(err, fields, key, f"method {mcls.name}"),
                          f"{where} (method {mcls.name}): {describe_errors(err, fields)}") from None
        return ClassifyConfig(name=name, method=mcls.name, train=train, options=options)


def _errors(items: list[tuple[str, str]], message: str) -> KeyedErrors:
    """KeyedErrors whose items (keys relative to the section) genvpt/config.py prefixes with ``classify.``, and whose
    own message (what ``ClassifyParams(...)`` alone raises) names the full key too."""
    err = KeyedErrors(items)
    err.args = (message,)
    return err


def _keyed(key: str, msg: str, full: Optional[str] = None, sep: str = ": ") -> KeyedErrors:
    return _errors([(key, msg)], f"{full or 'classify.' + key}{sep}{msg}")
