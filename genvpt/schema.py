"""Base class for every params section (kept import-free so area modules can use it without cycles)."""
from __future__ import annotations

import re
from typing import Iterable, Optional

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["StrictModel", "KeyedErrors", "error_items", "describe_errors", "short_repr", "NAME_PATTERN"]

# a name params turn into a folder or file name (configurations, datasets, targets, sample rows)
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]*$")

MAX_REPR = 80  # characters of a bad value quoted in an error message


def short_repr(value, limit: int = MAX_REPR) -> str:
    """``repr(value)`` for an error message, at most ``limit`` characters: a whole section given where a value
    belongs is named by its keys, never printed."""
    if isinstance(value, dict) and len(repr(value)) > limit:
        keys = ", ".join(map(str, value))
        return f"a mapping with keys {keys[:limit] + '...' if len(keys) > limit else keys}"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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


def error_items(err: ValidationError, fields: Optional[list[str]], prefix: str = "",
                what: str = "") -> list[tuple[str, str]]:
    """(dotted key, message) per error of ``err``, its keys prefixed with ``prefix`` (when given); unknown keys list
    the allowed ``fields`` (``what`` says whose, e.g. "method mvp")."""
    out = []
    for e in err.errors():
        key = ".".join([*([prefix] if prefix else []), *(str(p) for p in e["loc"])]) or "<root>"
        if e["type"] == "extra_forbidden":
            whose = f" for {what}" if what else ""
            out.append((key, f"unknown key{whose}; allowed: {', '.join(sorted(fields or []))}"))
        else:
            msg = e["msg"][len("Value error, "):] if e["msg"].startswith("Value error, ") else e["msg"]
            out.append((key, f"{msg} (got {short_repr(e.get('input'))})" + (f" [{what}]" if what else "")))
    return out


def describe_errors(err: ValidationError, fields: Optional[list[str]] = None) -> str:
    """``key: message; ...`` of :func:`error_items` (keys relative to the validated model)."""
    return "; ".join(f"{k}: {m}" for k, m in error_items(err, fields))
