"""Checkpoint loading and saving with strict, explained key checks.

* Files load with ``torch.load(weights_only=True)`` or safetensors, never with pickle code execution.
* ``strict_load`` compares a state dict against a model and raises :class:`CheckpointMismatch` that lists
  what is missing, unexpected, mis-shaped and of the wrong kind of dtype, instead of torch's first-error message.
  Floating-point tensors of another precision (float16, bfloat16, float64) are cast to the model's dtype with a
  logged note; integer or bool tensors where the model holds floating-point ones (or the reverse) are refused.
* A file that is not plain tensors and containers (a pickle of a custom class, of code, of ``os.system``) or that
  is corrupt is refused with :class:`CheckpointError`; nothing in it runs. The message never suggests loading it
  with ``weights_only=False``.
* ``save_model`` refuses to write a model whose weights hold NaN or inf (:class:`NonFiniteWeights`).
* Our own trained models are saved as ``{"family", "config", "state_dict"}`` so that loading a checkpoint of
  the wrong family or size fails with a message that names both.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from .io import atomic_path

log = logging.getLogger(__name__)

__all__ = [
    "CheckpointError",
    "CheckpointMismatch",
    "NonFiniteWeights",
    "load_file",
    "load_state_dict_file",
    "compare_state_dict",
    "compare_dtypes",
    "check_state_dict",
    "nonfinite_keys",
    "refuse_nonfinite",
    "strict_load",
    "save_model",
    "save_state_file",
    "load_model_file",
]


class CheckpointError(RuntimeError):
    """A checkpoint file could not be read or is not what the caller expects."""


class CheckpointMismatch(CheckpointError):
    """A state dict does not fit the model: lists missing, unexpected, mis-shaped and mis-typed keys."""

    def __init__(
        self,
        source: str,
        missing: list[str],
        unexpected: list[str],
        mis_shaped: list[tuple[str, tuple, tuple]],
        mis_typed: Iterable[tuple[str, Any, Any]] = (),
        note: str = "",
    ):
        self.source, self.missing, self.unexpected, self.mis_shaped = source, missing, unexpected, mis_shaped
        self.mis_typed, self.note = list(mis_typed), note
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
            + (f": {self.note}" if self.note else "")
            + block("missing keys", self.missing)
            + block("unexpected keys", self.unexpected)
            + block(
                "mis-shaped keys (checkpoint vs model)",
                [f"{k}: {tuple(a)} vs {tuple(b)}" for k, a, b in self.mis_shaped],
            )
            + block(
                "mis-typed keys (checkpoint vs model; floating-point tensors of another precision are cast, "
                "integer/bool tensors are never turned into floating-point weights or back)",
                [f"{k}: {_dtype_name(a)} vs {_dtype_name(b)}" for k, a, b in self.mis_typed],
            )
        )


class NonFiniteWeights(CheckpointError):
    """A model about to be saved holds NaN or inf: the file is not written (the previous one stays)."""


def _dtype_name(dtype: Any) -> str:
    return str(dtype).replace("torch.", "")


# what torch's messages add for weights_only failures: advice to load with weights_only=False or to allow-list
# globals "if you trust" the file; never shown for a file genvpt refuses (the file is untrusted by definition)
_UNSAFE_ADVICE = re.compile(
    r"\bweights_only\b|\btrust|\badd_safe_globals\b|\bsafe_globals\b|Check the documentation|Please file an issue|"
    r"^\s*\(\d\)|\bload failed", re.IGNORECASE)


def _refusal_reason(err: BaseException) -> str:
    """The useful line of a torch.load(weights_only=True) failure (e.g. the unsupported global's name), with
    torch's advice to retry unsafely removed."""
    for line in str(err).splitlines():
        line = line.strip()
        line = re.sub(r"^WeightsUnpickler error:\s*", "", line)
        line = re.split(r"\.?\s+Please use\b", line)[0].strip()
        if not line or _UNSAFE_ADVICE.search(line):
            continue
        return line.rstrip(".")[:300]
    return type(err).__name__


def load_file(path: str | os.PathLike) -> Any:
    """Read a ``.safetensors`` file or a torch file with ``weights_only=True``.

    Anything else (random bytes, a pickle of a custom class, of code, of ``os.system``) raises
    :class:`CheckpointError` naming the file; nothing in the file is executed.
    """
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
            raise CheckpointError(f"cannot read safetensors checkpoint {path} (corrupt or inconsistent header): {err}") from err
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        # `from None`: torch's own message (kept out of the traceback too) advises retrying with weights_only=False,
        # which would run whatever code the file carries
        raise CheckpointError(
            f"refused checkpoint {path}: it is not a file of plain tensors and containers (dict, list, tuple, "
            f"numbers, strings), or it is corrupt ({_refusal_reason(err)}). genvpt reads checkpoints with "
            f"torch.load(weights_only=True) or safetensors only and never runs code from a file; ask its source for "
            f"a plain state dict (torch.save(model.state_dict(), ...)) or a .safetensors file"
        ) from None


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


def _kind(dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "bool"
    if dtype.is_complex:
        return "complex"
    if dtype.is_floating_point:
        return "float"
    return "int"


def compare_dtypes(
    expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]
) -> tuple[list[tuple[str, torch.dtype, torch.dtype]], list[tuple[str, torch.dtype, torch.dtype]]]:
    """Return (castable, mis_typed) of ``given`` relative to ``expected``, as (key, given dtype, expected dtype).

    ``castable``: same kind (floating-point to floating-point, integer to integer), another dtype;
    ``mis_typed``: another kind (an integer or bool tensor where the model holds floating-point weights, ...).
    """
    castable, mis_typed = [], []
    for k in sorted(expected):
        if k not in given or not torch.is_tensor(given[k]):
            continue
        a, b = given[k].dtype, expected[k].dtype
        if a == b:
            continue
        (castable if _kind(a) == _kind(b) else mis_typed).append((k, a, b))
    return castable, mis_typed


def check_state_dict(
    expected: Mapping[str, torch.Tensor],
    given: Mapping[str, torch.Tensor],
    *,
    source: str = "<state dict>",
    allow_missing: Iterable[str] = (),
) -> dict[str, torch.Tensor]:
    """``given`` checked against ``expected`` (a model's state dict): any missing (beyond ``allow_missing``),
    unexpected, mis-shaped or mis-typed key raises :class:`CheckpointMismatch` listing them all; floating-point
    tensors of another precision come back cast to the model's dtype (logged)."""
    missing, unexpected, mis_shaped = compare_state_dict(expected, given)
    allowed = set(allow_missing)
    missing = [k for k in missing if k not in allowed]
    castable, mis_typed = compare_dtypes(expected, given)
    if missing or unexpected or mis_shaped or mis_typed:
        raise CheckpointMismatch(source, missing, unexpected, mis_shaped, mis_typed)
    sd = dict(given)
    if castable:
        pairs = sorted({(_dtype_name(a), _dtype_name(b)) for _, a, b in castable})
        lossy = any(torch.finfo(a).bits > torch.finfo(b).bits for _, a, b in castable if _kind(a) == "float")
        (log.warning if lossy else log.info)(
            "%s: casting %d tensors to the model's dtype (%s), e.g. %s", source, len(castable),
            ", ".join(f"{a} -> {b}" for a, b in pairs), castable[0][0])
        for k, _, b in castable:
            sd[k] = sd[k].to(b)
    return sd


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
    Floating-point tensors of another precision are cast (with a logged note); integer or bool tensors for
    floating-point weights (or the reverse) are refused, listed as mis-typed.
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
    allowed = set(allow_missing)
    sd = check_state_dict(model.state_dict(), sd, source=source, allow_missing=allowed)
    model.load_state_dict(sd, strict=not allowed)


def nonfinite_keys(state: Mapping[str, Any], allow_inf: Iterable[str] = ()) -> list[str]:
    """Keys of floating-point tensors in ``state`` holding NaN, or +-inf (except keys in ``allow_inf``: buffers
    such as attention masks hold -inf by design)."""
    allow = set(allow_inf)
    bad = []
    for k, v in state.items():
        if not torch.is_tensor(v) or not (v.is_floating_point() or v.is_complex()) or v.numel() == 0:
            continue
        if bool(torch.isnan(v).any()) or (k not in allow and not bool(torch.isfinite(v).all())):
            bad.append(str(k))
    return bad


def refuse_nonfinite(state: Mapping[str, Any], what: str, allow_inf: Iterable[str] = ()) -> None:
    """Raise :class:`NonFiniteWeights` naming ``what`` and the keys when ``state`` holds NaN / inf weights."""
    bad = nonfinite_keys(state, allow_inf)
    if bad:
        shown = ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise NonFiniteWeights(f"{what}: not saved, {len(bad)} tensors hold NaN or inf ({shown})")


def _buffer_names(model: torch.nn.Module) -> set[str]:
    return {n for n, _ in model.named_buffers()}


def save_model(path: str | os.PathLike, model: torch.nn.Module, family: str, config: Mapping[str, Any], **meta: Any) -> Path:
    """Save one of our models as ``{"family", "config", "state_dict", "meta"}`` (atomic write).

    A model whose weights hold NaN or inf raises :class:`NonFiniteWeights` and nothing is written (buffers may
    hold inf, e.g. attention masks)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return save_state_file(path, family, config, state, what=f"{family} model {path}",
                           allow_inf=_buffer_names(model), **meta)


def save_state_file(path: str | os.PathLike, family: str, config: Mapping[str, Any], state: Mapping[str, Any], *,
                    what: str, allow_inf: Iterable[str] = (), **meta: Any) -> Path:
    """Write ``{"family", "config", "state_dict", "meta"}`` atomically; :class:`NonFiniteWeights` (naming ``what``)
    and nothing written when ``state`` holds NaN or inf outside ``allow_inf``."""
    refuse_nonfinite(state, what, allow_inf=allow_inf)
    payload = {"family": family, "config": dict(config), "state_dict": dict(state), "meta": dict(meta)}
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
