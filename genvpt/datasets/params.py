"""params.yaml sections ``dataset``, ``source`` and ``prepare`` (composed and re-exported by genvpt/config.py).

Import-light: pydantic, genvpt.schema and the shapes vocabulary (plain Python) only, so genvpt/config.py can
import it without loading any dataset code, and the dataset code can import it without loading genvpt/config.py.

The field defaults are the ``dataset:`` (target) block of params.yaml; the ``source:`` block differs from it only
in :data:`SOURCE_DEFAULTS`, which fills in whatever a ``source:`` block does not name.
"""
from __future__ import annotations

from typing import Any, Literal, Mapping, Optional

from pydantic import Field, field_validator, model_validator

from ..schema import StrictModel
from .shape_vocab import ALL_SHAPE_CLASSES, COLOURS, NEW_SHAPE_CLASSES, POSITIONS, SHAPE_CLASSES, SIZES, colour_pairs

__all__ = [
    "SHAPE_CLASSES",
    "SPLITS",
    "SPLIT_DIRS",
    "FewShotParams",
    "ShapesParams",
    "DatasetParams",
    "PrepareParams",
    "SOURCE_DEFAULTS",
    "with_source_defaults",
]

# The evaluation protocol's splits: methods train on train, hyperparameters are chosen on val, reports score test.
SPLITS = ("train", "val", "test")
# folder names that ship a split (imagefolder trees, webdataset shard folders)
SPLIT_DIRS = {"train": "train", "val": "val", "validation": "val", "test": "test"}


class FewShotParams(StrictModel):
    """Few-shot subsampling: keep ``num_classes`` classes (all if null) and ``images_per_class`` training
    images of each (all if null). Chosen with ``seed``; only train is subsampled: the val and test splits keep every
    image of the kept classes, so they are the same for every ``images_per_class``."""

    images_per_class: Optional[int] = Field(default=None, ge=1)
    num_classes: Optional[int] = Field(default=None, ge=1)
    seed: int = 0


class ShapesParams(StrictModel):
    """The procedurally generated dataset. ``domain`` is the style shift between source and target:
    ``flat`` (filled shapes on plain backgrounds), ``textured`` (striped/dotted/checkered/gradient backgrounds and
    patterned fills), ``outlined`` (outline-only shapes on plain backgrounds)."""

    domain: Literal["flat", "textured", "outlined"] = "textured"
    images_per_class: int = Field(default=100, ge=1)
    classes: Optional[list[str]] = None
    max_count: int = Field(default=1, ge=1, le=3)
    # radius multiplier of every size (small/medium/large = 0.14/0.19/0.25 of the side at 1.0); a shape's centre is
    # pulled inwards just enough to keep it inside the canvas
    size_scale: float = Field(default=1.6, ge=0.5, le=2.0)
    # shape and background colours drawn from (null: all 12)
    colours: Optional[list[str]] = ["red", "blue", "yellow", "green", "white", "black"]
    rotation_range: float = Field(default=0.0, ge=0.0, le=360.0)  # degrees; < 360: within +-range/2 of upright
    # where a single shape sits / how large it is, drawn from these names (null: all); several shapes use corners
    positions: Optional[list[str]] = ["center"]
    sizes: Optional[list[str]] = None
    position_jitter: float = Field(default=0.04, ge=0.0, le=0.2)  # random shift of a shape's centre (fraction of the side)

    @field_validator("positions", "sizes")
    @classmethod
    def _known_names(cls, v: Optional[list[str]], info) -> Optional[list[str]]:
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
        if not colour_pairs(self.colours, self.domain):
            raise ValueError(f"colours {self.colours} have no (shape, background) pair with enough contrast for the "
                             f"{self.domain!r} domain; add contrasting colours (e.g. white and black)")
        return self

    @field_validator("classes")
    @classmethod
    def _known_classes(cls, v: Optional[list[str]]) -> Optional[list[str]]:
        if v is None:
            return v
        unknown = [c for c in v if c not in ALL_SHAPE_CLASSES]
        if unknown:
            raise ValueError(f"unknown shape classes {unknown}; allowed: {', '.join(ALL_SHAPE_CLASSES)} (the last "
                             f"{len(NEW_SHAPE_CLASSES)} never appear in the source domain)")
        if len(set(v)) != len(v) or len(v) < 2:
            raise ValueError("classes must be at least two distinct names")
        return v


class DatasetParams(StrictModel):
    """One dataset: where images come from and how they are split and subsampled.

    Splits a source ships (file or folder names train / val|validation / test) are kept; the splits it does not
    ship are carved, per class and seeded, from its train split (or from everything when it ships none):
    ``val_fraction`` and ``test_fraction`` of each class's images (at least one each when above 0), at least one
    image of each class staying in train. Few-shot subsampling then applies to train only.
    """

    name: Literal["shapes", "digits", "imagefolder", "parquet", "webdataset"] = "shapes"
    image_size: int = Field(default=32, ge=8, le=1024)
    seed: int = 0
    val_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)
    test_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)
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

    @model_validator(mode="after")
    def _fractions_leave_train(self) -> "DatasetParams":
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(f"val_fraction + test_fraction must be below 1 (got {self.val_fraction} + "
                             f"{self.test_fraction}): the rest of every class is the train split")
        return self


class PrepareParams(StrictModel):
    """The prepare stage: shard size and how much bad input is tolerated before failing."""

    shard_maxcount: int = Field(default=10000, ge=1)
    max_reject_fraction: float = Field(default=0.05, ge=0.0, le=1.0)


# Where the ``source:`` block's defaults differ from the target's (the field defaults above). The source only
# pretrains the embedded default's backbones and nothing reported is scored on it, so it keeps no test split: every
# image is pretraining data except the val split the pretrain stages monitor.
SOURCE_DEFAULTS: dict[str, Any] = {
    "seed": 1,
    "val_fraction": 0.1,
    "test_fraction": 0.0,
    "shapes": {"domain": "flat", "images_per_class": 1000},
}


def with_source_defaults(block: Any) -> Any:
    """A ``source:`` block (a mapping as read from params.yaml) with :data:`SOURCE_DEFAULTS` under what it names.
    Anything else (a DatasetParams, a malformed value) is returned unchanged for validation to judge."""
    if not isinstance(block, Mapping):
        return block
    out = {**SOURCE_DEFAULTS, **block}
    shapes = block.get("shapes", {})
    if isinstance(shapes, Mapping):
        out["shapes"] = {**SOURCE_DEFAULTS["shapes"], **shapes}
    return out


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` merged into ``base``: nested mappings merge key by key, anything else replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def _fields_at(model: Any, path: tuple[str, ...]) -> list[str]:
    """Field names of the sub-model of ``model`` at ``path`` (nested pydantic models)."""
    for part in path:
        ann = getattr(model, "model_fields", {}).get(part)
        model = ann.annotation if ann is not None else None
    return list(getattr(model, "model_fields", {}) or {})


def merged_dataset_block(base: DatasetParams, overrides: Optional[Mapping[str, Any]], key: str,
                         where: str) -> DatasetParams:
    """A dataset block named by its overrides of ``base`` (deep-merged, then validated).

    ``key`` is the overrides' key relative to the section that holds them (``datasets.digits``: error items carry it,
    and genvpt/config.py prefixes the section), ``where`` the full key for the message
    (``classify.datasets.digits``). An unknown key lists the keys allowed where it sits (dataset or shapes block).
    """
    from pydantic import ValidationError

    from ..schema import KeyedErrors, describe_errors, error_items

    merged = deep_merge(base.model_dump(mode="json"), overrides or {})
    try:
        return DatasetParams.model_validate(merged)
    except ValidationError as err:
        items = []
        for e in err.errors():
            loc = tuple(str(p) for p in e["loc"])
            if e["type"] == "extra_forbidden":
                allowed = ", ".join(sorted(_fields_at(DatasetParams, loc[:-1])))
                items.append((".".join((key, *loc)), f"unknown key; allowed: {allowed}"))
        fields = list(DatasetParams.model_fields)
        items += [it for it in error_items(err, fields, key) if "unknown key" not in it[1]]
        out = KeyedErrors(items)
        out.args = (f"{where}: {describe_errors(err, fields)}",)
        raise out from None
