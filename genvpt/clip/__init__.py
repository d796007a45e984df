"""CLIP for genvpt: the open_clip wrapper used by MVP's loss and by scoring, its params and the tiny default's pretraining.

* :mod:`genvpt.clip.model`: :func:`load_clip`, :func:`build_clip`, :class:`ClipModel`, ... (torch + open_clip);
* :mod:`genvpt.clip.params`: params.yaml section ``clip`` (import-light: genvpt/config.py imports it on every load);
* :mod:`genvpt.clip.pretrain`: the ``pretrain_clip`` stage's training loop and evaluation;
* :mod:`genvpt.clip.towers`: the small convolutional vision towers registered with timm;
* ``genvpt/clip/configs/*.json``: open_clip model configs of the embedded default (``genvpt-tiny-cnn``, ``genvpt-tiny-vit``).

The names below are re-exported lazily (PEP 562), so ``from genvpt.clip import load_clip`` works while importing
:mod:`genvpt.clip.params` (genvpt/config.py) does not pull in torch's CLIP stack. ``python -m genvpt.clip
convert-torchscript IN OUT`` runs :func:`genvpt.clip.model.main`.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .model import (
        CLIP_FAMILY,
        CONFIG_DIR,
        ClipModel,
        ClipWeightsError,
        QuickGeluWarning,
        build_clip,
        convert_torchscript,
        is_own_config,
        is_torchscript_file,
        load_clip,
        main,
        register_configs,
        resolve_device,
        save_clip,
    )
    from .params import DEFAULT_CLIP_PATH, ClipParams, ClipTrainParams

_LAZY = {
    # genvpt.clip.model
    "CLIP_FAMILY": "model",
    "CONFIG_DIR": "model",
    "ClipModel": "model",
    "ClipWeightsError": "model",
    "QuickGeluWarning": "model",
    "register_configs": "model",
    "is_own_config": "model",
    "resolve_device": "model",
    "build_clip": "model",
    "load_clip": "model",
    "save_clip": "model",
    "is_torchscript_file": "model",
    "convert_torchscript": "model",
    "main": "model",
    # genvpt.clip.params
    "ClipParams": "params",
    "ClipTrainParams": "params",
    "DEFAULT_CLIP_PATH": "params",
}

__all__ = [name for name in _LAZY if name != "main"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
