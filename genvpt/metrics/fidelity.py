"""FID / IS / KID / precision-recall through ``torch_fidelity.calculate_metrics``.

Two feature spaces, never mixed up in names:

* **Inception** (the weights file from params exists): torch-fidelity's ``inception-v3-compat`` extractor for every
  metric, precision/recall on its 2048-d pool features (the ADM evaluator's choice; VGG-16 would need a download).
  Keys: ``fid``, ``is_mean``, ``is_std``, ``kid_mean``, ``kid_std``, ``precision``, ``recall``.
* **CLIP** (no Inception weights): the registered ``genvpt-clip`` extractor. Keys: ``fd_clip``, ``is_clip_mean``,
  ``is_clip_std``, ``kd_clip_mean``, ``kd_clip_std``, ``precision_clip``, ``recall_clip``.

:func:`feature_metrics` applies torch-fidelity's own feature-level functions to given feature sets (used by the
tests with hand-computed values, and by callers that already hold features).
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch

from torch_fidelity import calculate_metrics
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric

from ..checkpoint import CheckpointError, load_file
from .features import CLIP_EXTRACTOR, TensorImages

log = logging.getLogger(__name__)

__all__ = ["INCEPTION_KEYS", "CLIP_KEYS", "inception_available", "fidelity_metrics", "feature_metrics"]

# torch-fidelity output key -> our key, per feature space
INCEPTION_KEYS = {
    "frechet_inception_distance": "fid",
    "inception_score_mean": "is_mean",
    "inception_score_std": "is_std",
    "kernel_inception_distance_mean": "kid_mean",
    "kernel_inception_distance_std": "kid_std",
    "precision": "precision",
    "recall": "recall",
}
CLIP_KEYS = {
    "frechet_inception_distance": "fd_clip",
    "inception_score_mean": "is_clip_mean",
    "inception_score_std": "is_clip_std",
    "kernel_inception_distance_mean": "kd_clip_mean",
    "kernel_inception_distance_std": "kd_clip_std",
    "precision": "precision_clip",
    "recall": "recall_clip",
}

_WARNED_ABSENT: set[str] = set()


def inception_available(path: Optional[str | os.PathLike]) -> bool:
    """True when the Inception weights file exists; logs once per path when it does not."""
    if path and Path(path).is_file():
        return True
    key = str(path)
    if key not in _WARNED_ABSENT:
        _WARNED_ABSENT.add(key)
        where = f"file {path} is absent" if path else "no file is set in params (metrics.inception_weights)"
        log.warning(
            "Inception weights: %s -> FID/IS/KID/precision/recall are computed in CLIP image-feature space and "
            "reported as FD-CLIP / IS-CLIP / KD-CLIP / precision-CLIP / recall-CLIP (not comparable to Inception FID)",
            where,
        )
    return False


def _check_inception_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The Inception state dict of ``path``, read with ``weights_only=True`` (a file carrying pickled code is
    refused); raises CheckpointError when it is not torch-fidelity's Inception weights."""
    sd = load_file(path)
    if not isinstance(sd, dict) or "fc.weight" not in sd or "Mixed_7c.branch_pool.conv.weight" not in sd:
        raise CheckpointError(
            f"{path} is not torch-fidelity's Inception state dict (weights-inception-2015-12-05-6726825d.pth): "
            f"keys fc.weight / Mixed_7c.* missing"
        )
    if not all(torch.is_tensor(v) for v in sd.values()):
        raise CheckpointError(f"{path} holds more than tensors; expected torch-fidelity's Inception state dict")
    return sd


@contextlib.contextmanager
def _verified_inception_copy(path: str | os.PathLike) -> Iterator[str]:
    """A private copy of the Inception weights, re-saved from the tensors read with ``weights_only=True``.

    torch-fidelity reads its weights file with ``torch.load(weights_only=False)``; handing it this copy (written by
    us from plain tensors) instead of ``path`` means no pickle from the user's file is ever executed, even if the
    file changes between our check and torch-fidelity's read."""
    sd = _check_inception_file(path)
    with tempfile.TemporaryDirectory(prefix="genvpt-inception-") as tmp:
        copy = os.path.join(tmp, "inception.pth")
        torch.save({k: v.contiguous() for k, v in sd.items()}, copy)
        yield copy


def _tf_options(n1: int, n2: int, *, batch_size: int, isc_splits: int, kid_subsets: int, kid_subset_size: int,
                prc_neighborhood: int, seed: int, cuda: bool, verbose: bool) -> dict:
    n_min = min(n1, n2)
    if kid_subset_size > n_min:
        log.info("kid_subset_size %d lowered to %d (the smaller set's size)", kid_subset_size, n_min)
    return dict(
        batch_size=batch_size,
        cuda=cuda,
        isc_splits=max(1, min(isc_splits, n1 // 2)),
        kid_subsets=kid_subsets,
        kid_subset_size=max(2, min(kid_subset_size, n_min)),
        prc_neighborhood=min(prc_neighborhood, n_min - 1),
        rng_seed=seed,
        cache=False,  # never reuse features across models under the same name
        save_cpu_ram=True,  # in-process data loading (no workers) and blockwise k-NN distances
        verbose=verbose,
    )


def fidelity_metrics(
    samples: torch.Tensor,
    reals: torch.Tensor,
    *,
    fid: bool = True,
    isc: bool = True,
    kid: bool = True,
    prc: bool = True,
    inception_weights: Optional[str | os.PathLike] = None,
    clip_model: Any = None,
    class_texts: Optional[Sequence[str]] = None,
    feature_sink: Optional[list] = None,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    isc_splits: int = 10,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    prc_neighborhood: int = 3,
    seed: int = 0,
    verbose: bool = False,
) -> tuple[dict[str, float], str]:
    """Compute the requested metrics of uint8 ``samples`` against uint8 ``reals``; return (metrics, space) with
    space ``"inception"`` or ``"clip"``."""
    if not (fid or isc or kid or prc):
        return {}, "none"
    n1, n2 = samples.shape[0], reals.shape[0]
    if n1 < 2 or n2 < 2:
        raise ValueError(f"need at least 2 samples and 2 real images, got {n1} and {n2}")
    dev = torch.device(device)
    opts = _tf_options(n1, n2, batch_size=batch_size, isc_splits=isc_splits, kid_subsets=kid_subsets,
                       kid_subset_size=kid_subset_size, prc_neighborhood=prc_neighborhood, seed=seed,
                       cuda=dev.type == "cuda", verbose=verbose)
    common = dict(input1=TensorImages(samples), input2=TensorImages(reals), fid=fid, isc=isc, kid=kid, prc=prc, **opts)
    if inception_available(inception_weights):
        with _verified_inception_copy(inception_weights) as weights:
            out = calculate_metrics(
                feature_extractor="inception-v3-compat",
                feature_extractor_weights_path=weights,
                feature_layer_prc="2048",
                **common,
            )
        keys, space = INCEPTION_KEYS, "inception"
    else:
        if clip_model is None:
            raise ValueError("Inception weights are absent and no CLIP model was given: cannot compute FD-CLIP etc.")
        if isc and not class_texts:
            log.warning("IS-CLIP skipped: it needs class prompts (class names) for CLIP zero-shot logits")
            common["isc"] = isc = False
            if not (fid or kid or prc):
                return {}, "clip"
        out = calculate_metrics(
            feature_extractor=CLIP_EXTRACTOR,
            genvpt_clip=clip_model,
            genvpt_class_texts=list(class_texts) if class_texts else None,
            genvpt_feature_sink=feature_sink,
            **common,
        )
        keys, space = CLIP_KEYS, "clip"
    return {keys[k]: float(v) for k, v in out.items() if k in keys}, space


def feature_metrics(
    gen: torch.Tensor,
    real: torch.Tensor,
    *,
    gen_logits: Optional[torch.Tensor] = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    isc_splits: int = 10,
    prc_neighborhood: int = 3,
    seed: int = 0,
    space: str = "clip",
) -> dict[str, float]:
    """torch-fidelity's FD / KD / precision-recall (and IS when ``gen_logits`` is given) on feature tensors."""
    keys = CLIP_KEYS if space == "clip" else INCEPTION_KEYS
    gen, real = gen.double().cpu(), real.double().cpu()
    out: dict[str, Any] = {}
    out.update(fid_statistics_to_metric(fid_features_to_statistics(gen), fid_features_to_statistics(real), False))
    n_min = min(len(gen), len(real))
    out.update(kid_features_to_metric(gen, real, kid_subsets=kid_subsets, kid_subset_size=min(kid_subset_size, n_min),
                                      rng_seed=seed, verbose=False))
    out.update(prc_features_to_metric(gen.float(), real.float(), prc_neighborhood=prc_neighborhood, verbose=False))
    if gen_logits is not None:
        out.update(isc_features_to_metric(gen_logits, splits=isc_splits, shuffle=True, rng_seed=seed))
    return {keys[k]: float(np.asarray(v)) for k, v in out.items() if k in keys}
