"""Checkpoint loading and saving with strict, explained key checks.

* Files load with ``torch.load(weights_only=True)`` or safetensors, never with pickle code execution.
* ``strict_load`` compares a state dict against a model and raises :class:`CheckpointMismatch` that lists
  what is missing, unexpected and mis-shaped, instead of torch's first-error message.
* Our own trained models are saved as ``{"family", "config", "state_dict"}`` so that loading a checkpoint of
  the wrong family or size fails with a message that names both.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from .io import atomic_path

log = logging.getLogger(__name__)

__all__ = [
    "CheckpointError",
    "CheckpointMismatch",
    "load_file",
    "load_state_dict_file",
    "compare_state_dict",
    "strict_load",
    "save_model",
    "load_model_file",
]


class CheckpointError(RuntimeError):
    """A checkpoint file could not be read or is not what the caller expects."""


class CheckpointMismatch(CheckpointError):
    """A state dict does not fit the model: lists missing, unexpected and mis-shaped keys."""

    def __init__(self, source: str, missing: list[str], unexpected: list[str], mis_shaped: list[tuple[str, tuple, tuple]]):
        self.source, self.missing, self.unexpected, self.mis_shaped = source, missing, unexpected, mis_shaped
        super().__init__(self._format())

    def _format(self, limit: int = 25) -> str:
        def block(title: str, rows: list[str]) -> str:
            if not rows:
                return ""
            shown = rows[:limit]
            more = f"\n    ... and {len(rows) - limit} more" if len(rows) > limit else ""
            return f"\n  {title} ({len(rows)}):\n    " + "\n    ".join(shown) + more

        return (
            f"checkpoint {self.source} does not match the model"
            + block("missing keys", self.missing)
            + block("unexpected keys", self.unexpected)
            + block(
                "mis-shaped keys (checkpoint vs model)",
                [f"{k}: {tuple(a)} vs {tuple(b)}" for k, a, b in self.mis_shaped],
            )
        )


def load_file(path: str | os.PathLike) -> Any:
    """Read a ``.safetensors`` file or a torch file with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint is empty (0 bytes): {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file as st_load

        try:
            return st_load(str(path), device="cpu")
        except Exception as err:  # safetensors raises several types
            raise CheckpointError(f"cannot read safetensors checkpoint {path}: {err}") from err
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"cannot read checkpoint {path} with torch.load(weights_only=True): {err}"
        ) from err


_NESTED = ("state_dict", "model_state_dict", "model", "module", "ema")


def load_state_dict_file(path: str | os.PathLike, key: str | None = None) -> dict[str, torch.Tensor]:
    """Load a state dict from a plain dict, a Lightning ``{"state_dict": ...}`` file, or safetensors.

    ``key`` selects a nested entry with ``/`` separators (e.g. ``"trainer/var_wo_ddp"``); without it, the
    common wrappers (``state_dict``, ``model_state_dict``, ``model``) are unwrapped when present.
    """
    obj = load_file(path)
    if key:
        for part in key.split("/"):
            if not isinstance(obj, Mapping) or part not in obj:
                raise CheckpointError(f"checkpoint {path} has no entry {key!r} (stopped at {part!r})")
            obj = obj[part]
    else:
        while isinstance(obj, Mapping) and not _is_state_dict(obj):
            inner = next((obj[k] for k in _NESTED if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not _is_state_dict(obj):
        raise CheckpointError(f"checkpoint {path} holds no state dict of tensors")
    return dict(obj)


def _is_state_dict(obj: Mapping) -> bool:
    return len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def compare_state_dict(
    expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]
) -> tuple[list[str], list[str], list[tuple[str, tuple, tuple]]]:
    """Return (missing, unexpected, mis_shaped) of ``given`` relative to ``expected``."""
    missing = sorted(k for k in expected if k not in given)
    unexpected = sorted(k for k in given if k not in expected)
    mis_shaped = sorted(
        (k, tuple(given[k].shape), tuple(expected[k].shape))
        for k in expected
        if k in given and tuple(given[k].shape) != tuple(expected[k].shape)
    )
    return missing, unexpected, mis_shaped


def strict_load(
    model: torch.nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str = "<state dict>",
    ignore_prefixes: Iterable[str] = (),
    strip_prefixes: Iterable[str] = (),
    allow_missing: Iterable[str] = (),
) -> None:
    """Load ``state_dict`` into ``model``; any mismatch raises :class:`CheckpointMismatch`.

    ``ignore_prefixes`` drops checkpoint keys (e.g. taming's ``loss.``); ``strip_prefixes`` removes a wrapper
    prefix (e.g. ``module.``); ``allow_missing`` names model keys (usually derived buffers) that may be absent.
    """
    ignore = tuple(ignore_prefixes)
    strip = tuple(strip_prefixes)
    sd: dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        for p in strip:
            if k.startswith(p):
                k = k[len(p):]
        if ignore and k.startswith(ignore):
            continue
        sd[k] = v
    expected = model.state_dict()
    missing, unexpected, mis_shaped = compare_state_dict(expected, sd)
    allowed = set(allow_missing)
    missing = [k for k in missing if k not in allowed]
    if missing or unexpected or mis_shaped:
        raise CheckpointMismatch(source, missing, unexpected, mis_shaped)
    model.load_state_dict(sd, strict=not allowed)


def save_model(path: str | os.PathLike, model: torch.nn.Module, family: str, config: Mapping[str, Any], **meta: Any) -> Path:
    """Save one of our models as ``{"family", "config", "state_dict", "meta"}`` (atomic write)."""
    payload = {
        "family": family,
        "config": dict(config),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "meta": dict(meta),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_model_file(path: str | os.PathLike, family: str) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """Read a file written by :func:`save_model`; returns (config, state_dict, meta).

    Raises :class:`CheckpointError` when the file holds another family's model.
    """
    obj = load_file(path)
    if not isinstance(obj, Mapping) or "family" not in obj or "state_dict" not in obj:
        raise CheckpointError(
            f"{path} is not a genvpt model file (expected keys family/config/state_dict); "
            f"for official checkpoints use the family's load_pretrained()"
        )
    if obj["family"] != family:
        raise CheckpointError(f"{path} holds a {obj['family']!r} model, but a {family!r} model was asked for")
    return dict(obj.get("config", {})), dict(obj["state_dict"]), dict(obj.get("meta", {}))
