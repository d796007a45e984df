"""Small training utilities shared by every training stage: seeding, resumable checkpoints, LR schedules, curves.

Training loops stay in their own modules (one readable loop per family); this file holds what they share.
"""
from __future__ import annotations

import csv
import logging
import math
import os
import random
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from .checkpoint import CheckpointError, NonFiniteWeights, load_file, refuse_nonfinite
from .faults import fault_point
from .io import atomic_path

log = logging.getLogger(__name__)

__all__ = ["seed_everything", "TrainCheckpoint", "cosine_lambda", "write_curve", "count_parameters", "peak_memory_mb",
           "NonFiniteLoss", "NonFiniteWeights", "check_finite", "adapter_state", "load_adapter_state"]


class NonFiniteLoss(RuntimeError):
    """A training loss became NaN or inf: training stops at that step, before the update. The last training state
    written before it is left as it was and no model file is written."""

    def __init__(self, message: str, *, step: int, where: str, value: float):
        super().__init__(message)
        self.step, self.where, self.value = step, where, value


def check_finite(loss: Any, step: int, where: str, state: "TrainCheckpoint | str | os.PathLike | None" = None) -> None:
    """Raise :class:`NonFiniteLoss` when ``loss`` (a tensor or number) holds NaN or inf.

    Call it on the loss of step ``step`` (1-based, as in curve.csv) before ``backward()``, so no update is made from
    it; ``where`` names the stage and output (``"adaptation mvp seed 0 (data/adapted/mvp/seed0)"``); ``state`` (the
    training checkpoint) is named in the message as the last good state, which stays as it was.
    """
    t = loss.detach() if torch.is_tensor(loss) else torch.as_tensor(float(loss))
    if bool(torch.isfinite(t).all()):
        return
    flat = t.float().reshape(-1)
    value = float(flat[~torch.isfinite(flat)][0])
    path = state.path if isinstance(state, TrainCheckpoint) else (Path(state) if state is not None else None)
    if path is not None and path.exists():
        kept = f"the last good training state {path} is kept as it was"
    elif path is not None:
        kept = f"no training state was written yet ({path})"
    else:
        kept = "no training state is kept"
    raise NonFiniteLoss(
        f"{where}: the training loss is {value} at step {step}; training stopped before updating the weights and no "
        f"model was saved ({kept}). Lower the learning rate or check the data and the model's inputs.",
        step=int(step), where=where, value=value)


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch Generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


class TrainCheckpoint:
    """Resumable training state in one file, written atomically every ``every`` steps.

    Holds model, optimizer and scheduler state, the step, torch RNG state and any extra JSON-able metadata.
    Loading uses ``weights_only=True``.

        ckpt = TrainCheckpoint("data/x/train_state.pt", every=100)
        start = ckpt.resume(model, opt, sched)        # 0 when there is nothing to resume
        for step in range(start, total):
            ...
            ckpt.maybe_save(step + 1, model, opt, sched, history=history)
    """

    def __init__(self, path: str | os.PathLike, every: int = 100):
        self.path = Path(path)
        self.every = max(1, int(every))
        self.extra: dict[str, Any] = {}

    def save(self, step: int, model: torch.nn.Module, optimizer=None, scheduler=None, **extra: Any) -> None:
        """Write the state atomically; a model whose weights hold NaN or inf raises :class:`NonFiniteWeights` and
        the previous state file stays as it was."""
        model_state = model.state_dict()
        refuse_nonfinite(model_state, f"training state {self.path} at step {step}",
                         allow_inf={n for n, _ in model.named_buffers()})
        state = {
            "step": int(step),
            "model": model_state,
            "optimizer": optimizer.state_dict() if optimizer is not None else {},
            "scheduler": scheduler.state_dict() if scheduler is not None else {},
            "torch_rng": torch.get_rng_state(),
            "extra": extra,
        }
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)
        log.debug("saved training checkpoint at step %d to %s", step, self.path)
        fault_point(f"checkpoint:{self.path.name}")

    def maybe_save(self, step: int, model, optimizer=None, scheduler=None, **extra: Any) -> bool:
        if step % self.every == 0:
            self.save(step, model, optimizer, scheduler, **extra)
            return True
        return False

    def resume(self, model: torch.nn.Module, optimizer=None, scheduler=None) -> int:
        """Load the saved state into the given objects; return the step to continue from (0 if none)."""
        if not self.path.exists():
            return 0
        state = load_file(self.path)
        try:
            model.load_state_dict(state["model"])
            if optimizer is not None and state.get("optimizer"):
                optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None and state.get("scheduler"):
                scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"])
        except (KeyError, RuntimeError, ValueError) as err:
            raise CheckpointError(
                f"cannot resume from {self.path}: {err}. Delete the file to start training from scratch."
            ) from err
        self.extra = dict(state.get("extra", {}))
        log.info("resuming from %s at step %d", self.path, state["step"])
        return int(state["step"])

    def remove(self) -> None:
        if self.path.exists():
            self.path.unlink()


def cosine_lambda(total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.0):
    """LR multiplier for ``torch.optim.lr_scheduler.LambdaLR``: linear warm-up then cosine to ``min_ratio``."""

    def fn(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return fn


def write_curve(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write rows (dicts with the same keys, e.g. step/loss) as CSV for ``dvc plots``; atomic."""
    rows = list(rows)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            if rows:
                writer = csv.DictWriter(fh, fieldnames=list(rows[0].keys()))
                writer.writeheader()
                writer.writerows(rows)
    return Path(path)


def count_parameters(module: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def peak_memory_mb(device: torch.device | str | None = None) -> float:
    """Peak memory of this process in MiB: CUDA peak allocated on GPU, max RSS on CPU."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated(dev) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def resolve_device(name: "str | torch.device | None" = "auto", key: str = "device") -> torch.device:
    """``auto`` (or None) -> cuda when available, else cpu; otherwise the named device. Asking for cuda without a
    CUDA device is an error naming the params ``key``."""
    if isinstance(name, torch.device):
        return name
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"{key} is {name!r} but torch sees no CUDA device; use 'auto' or 'cpu'")
    return dev


class FrozenBackboneChanged(RuntimeError):
    """A part that must stay frozen changed during training (its state-dict hash differs), or a frozen parameter
    received a gradient."""


class AdapterState(torch.nn.Module):
    """What a training checkpoint of an adaptation stores: the method's trainable state only (never the frozen
    backbone). ``method`` has ``adapter_state_dict()`` and ``load_adapter_state_dict(sd, source=...)``."""

    def __init__(self, method: Any):
        super().__init__()
        self._method = [method]

    def state_dict(self, *args, **kwargs):  # type: ignore[override]
        return self._method[0].adapter_state_dict()

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # type: ignore[override]
        self._method[0].load_adapter_state_dict(state_dict, source="training checkpoint")


def adapter_state(own: torch.nn.Module, wrapped: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """What an adapter's trained file stores: ``own``'s whole state (parameters and buffers) and the parameters of
    the ``wrapped`` frozen model that train, as ``<prefix>.<name>`` (LoRA's matrices, every weight when
    fine-tuning)."""
    out = {k: v.detach().cpu().clone() for k, v in own.state_dict().items()}
    for n, p in wrapped.named_parameters():
        if p.requires_grad:
            out[f"{prefix}.{n}"] = p.detach().cpu().clone()
    return out


def load_adapter_state(own: torch.nn.Module, wrapped: torch.nn.Module, prefix: str, sd: Mapping[str, torch.Tensor],
                       source: str = "<adapter>") -> None:
    """Copy a file of :func:`adapter_state` back, checked first (keys, shapes and dtypes, naming ``source``)."""
    from .checkpoint import check_state_dict

    sd = check_state_dict(adapter_state(own, wrapped, prefix), sd, source=source)
    mine = own.state_dict()
    theirs = dict(wrapped.named_parameters())
    cut = len(prefix) + 1
    with torch.no_grad():
        for k, v in sd.items():
            t = theirs[k[cut:]] if k.startswith(prefix + ".") else mine[k]
            t.copy_(v.to(t.device, t.dtype))
