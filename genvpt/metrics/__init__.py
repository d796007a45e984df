"""genvpt's evaluation metrics: FID/IS/KID/precision-recall (Inception space via torch-fidelity, or CLIP space via a
registered torch-fidelity feature extractor when the Inception weights are absent), CLIP score, intra-cluster
diversity, class accuracy under a CLIP linear probe, and the cost numbers read from training / sampling records.

Entry point: :func:`compute_metrics`. Extensions: :func:`register_metric` (a group ``fn(ctx) -> dict``) and
:func:`register_metric_info` (what a key means, for the report).

Names are resolved lazily, so ``genvpt.metrics.params`` (imported by genvpt/config.py) does not import torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "compute_metrics": "core",
    "EvalContext": "core",
    "load_images": "core",
    "CLIP_EXTRACTOR": "features",
    "ClipFeatureExtractor": "features",
    "TensorImages": "features",
    "encode_images": "features",
    "encode_texts": "features",
    "CLIP_KEYS": "fidelity",
    "INCEPTION_KEYS": "fidelity",
    "feature_metrics": "fidelity",
    "fidelity_metrics": "fidelity",
    "inception_available": "fidelity",
    "SampleConfig": "params",
    "SampleParams": "params",
    "MetricsParams": "params",
    "ReportParams": "params",
    "METRIC_GROUPS": "registry",
    "METRIC_INFO": "registry",
    "MetricInfo": "registry",
    "metric_info": "registry",
    "register_metric": "registry",
    "register_metric_info": "registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'genvpt.metrics' has no attribute {name!r}")
    if mod != "params":
        importlib.import_module(f"{__name__}.core")  # registers the built-in metric groups
    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
