"""Base class for every params section (kept import-free so area modules can use it without cycles)."""
from __future__ import annotations

from typing import Iterable

from pydantic import BaseModel, ConfigDict

__all__ = ["StrictModel", "KeyedErrors"]


class KeyedErrors(ValueError):
    """Errors a validator finds below its own location: ``items`` are (dotted key relative to the validated
    model, message). genvpt.config prefixes each key with the model's location, so the error names the full key
    (``adaptation.configs.mvp.train.lr``) instead of the section it was raised in."""

    def __init__(self, items: Iterable[tuple[str, str]]):
        self.items = [(str(k), str(m)) for k, m in items]
        super().__init__("; ".join(f"{k}: {m}" for k, m in self.items))


class StrictModel(BaseModel):
    """A params section: unknown keys are errors, values are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())
