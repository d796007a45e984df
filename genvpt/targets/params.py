"""params.yaml section ``extra_targets`` (composed into genvpt/config.py; stage ``extra_target@<name>``): more
target datasets the per-target stages rerun for, each ``name: {dataset: <overrides of the dataset block, deep-merged>,
configs: [<names in adaptation.configs>]}``. Import-light (pydantic only), like every params module.

The name becomes a folder (data/targets/<name>/, results/targets/<name>.json). Errors name the full key
(``extra_targets.new-classes.configs``, ``extra_targets.new-classes.dataset.shapes.domian``)."""
from __future__ import annotations

from typing import Any, Optional

from pydantic import Field, field_validator

from ..schema import NAME_PATTERN as _NAME, KeyedErrors, StrictModel

__all__ = ["ExtraTarget", "extra_target_errors", "extra_target_block"]


class ExtraTarget(StrictModel):
    """One more target: its dataset (overrides of the top-level ``dataset`` block, deep-merged; {} = the pipeline's
    own target) and the adaptation configurations adapted to it (names in ``adaptation.configs``). The frozen rows
    are the backbones those configurations adapt."""

    dataset: Optional[dict[str, Any]] = Field(default_factory=dict)
    configs: list[str] = Field(min_length=1)

    @field_validator("configs")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        dup = sorted({c for c in v if v.count(c) > 1})
        if dup:
            raise ValueError(f"configurations listed twice: {dup}")
        return v


def extra_target_block(targets: dict[str, ExtraTarget], name: str, base: Any) -> Any:
    """The DatasetParams of target ``name``: its overrides deep-merged over ``base`` (the top-level ``dataset``
    block). Errors (KeyedErrors) name the key relative to the params root (``extra_targets.<name>.dataset...``)."""
    from ..datasets.params import merged_dataset_block

    if name not in targets:
        raise KeyError(f"no extra target {name!r}; params extra_targets has: {', '.join(targets) or '(none)'}")
    key = f"extra_targets.{name}.dataset"
    return merged_dataset_block(base, targets[name].dataset, key, key)


def extra_target_errors(targets: dict[str, ExtraTarget], dataset: Any,
                        configs: dict[str, Any]) -> list[tuple[str, str]]:
    """(full key, message) for every problem of ``extra_targets``: a name that cannot be a folder name, a
    configuration not in ``adaptation.configs`` (``configs``), a dataset block invalid once merged over ``dataset``."""
    errors: list[tuple[str, str]] = []
    for name, target in targets.items():
        where = f"extra_targets.{name}"
        if not _NAME.match(str(name)):
            errors.append((where, f"the name must match {_NAME.pattern} (it becomes a folder name)"))
            continue
        unknown = [c for c in target.configs if c not in configs]
        if unknown:
            errors.append((f"{where}.configs", f"{unknown} are not in adaptation.configs (it has: "
                                               f"{', '.join(configs) or '(none)'})"))
        try:
            extra_target_block(targets, name, dataset)
        except KeyedErrors as err:
            errors += err.items
    return errors
