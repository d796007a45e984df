"""The score stage's library: every sample set in params against the target's real images.

Outputs (one directory, written atomically; ``scores/`` in dvc.yaml: small files, git-tracked with ``cache: false``
so that ``dvc metrics diff`` and ``dvc plots diff`` compare with committed versions)::

    <out>/metrics/<config>/metrics.json   numbers only (DVC metrics; `dvc metrics show/diff`)
    <out>/metrics.parquet                 one row per configuration (config, kind, family, every metric)
    <out>/definitions.json                what each key means, the feature space, the CLIP-score definition
    <out>/fd_vs_params.csv                config, trainable_params, <fid | fd_clip>  (DVC plot)
"""
from __future__ import annotations

import csv
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Optional

import torch

from ..io import atomic_dir, atomic_path, read_json, write_json
from .params import MetricsParams, SampleConfig, SampleParams
from .registry import metric_info

log = logging.getLogger(__name__)

__all__ = ["read_train_record", "cost_metrics", "score_sample_sets", "fd_key", "TRAIN_RECORD_KEYS"]

# accepted spellings of the numbers a training record may hold -> our key
TRAIN_RECORD_KEYS = {
    "trainable_params": ("trainable_params", "num_trainable_params", "n_trainable_params", "params_trainable"),
    "train_time_s": ("train_time_s", "train_seconds", "training_time_s", "train_seconds_this_run", "wall_time_s",
                     "time_s", "elapsed_s"),
    "train_peak_memory_mb": ("peak_memory_mb", "train_peak_memory_mb", "peak_mem_mb"),
    "trainable_pct": ("trainable_pct",),
}


def read_train_record(path: Optional[str | os.PathLike]) -> dict[str, float]:
    """Numbers of a training record (JSON) under our key names; {} when there is no record."""
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        log.warning("training record %s not found: training cost columns stay empty", p)
        return {}
    rec = read_json(p)
    if not isinstance(rec, dict):
        raise ValueError(f"{p}: a training record must be a JSON object")
    out: dict[str, float] = {}
    for key, names in TRAIN_RECORD_KEYS.items():
        for n in names:
            if isinstance(rec.get(n), (int, float)) and not isinstance(rec.get(n), bool):
                out[key] = rec[n]
                break
    return out


def cost_metrics(cfg: SampleConfig, sample_record: dict) -> dict[str, float]:
    """Trainable parameters, training time / memory (training record) and sampling time / memory (sample record)."""
    record = cfg.train_record
    if record is None and cfg.kind == "prompt" and cfg.generator:
        record = str(Path(cfg.generator).parent / "record.json")  # written by the train_prompt stage
    out = read_train_record(record)
    if cfg.trainable_params is not None:
        out["trainable_params"] = cfg.trainable_params
    elif "trainable_params" not in out and cfg.kind == "backbone":
        out["trainable_params"] = 0  # a frozen backbone: nothing is trained for the target domain
    if cfg.kind == "backbone" and out.get("trainable_params") == 0:
        out.setdefault("trainable_pct", 0.0)
    out["sample_time_per_image_s"] = float(sample_record["sample_time_per_image_s"])
    out["sample_peak_memory_mb"] = float(sample_record["peak_memory_mb"])
    if sample_record.get("model_params") is not None:
        out["model_params"] = int(sample_record["model_params"])
    return out


def fd_key(metrics: dict) -> Optional[str]:
    return "fid" if "fid" in metrics else "fd_clip" if "fd_clip" in metrics else None


def score_sample_sets(
    sample_params: SampleParams,
    metrics_params: MetricsParams,
    samples_root: str | os.PathLike,
    target_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    clip_model: Any,
    default_text_template: str = "a photo of {class_name}",
) -> list[dict]:
    """Score every configuration's sample set; write the outputs described in the module docstring.
    ``default_text_template`` is used when ``metrics.text_template`` is null (the stage passes the caption section's
    sentence template)."""
    import pandas as pd

    from ..datasets.shards import load_split
    from ..sampling import SampleSet, resolve_device
    from .core import compute_metrics
    from .fidelity import inception_available

    mp = metrics_params
    template = mp.text_template or default_text_template
    reals = load_split(target_dir, mp.real_split)
    train = reals if mp.real_split == "train" else load_split(target_dir, "train")
    device = resolve_device(mp.device, "metrics.device")
    cache: dict = {}
    rows: list[dict] = []
    for cfg in sample_params.configs:
        sset = SampleSet(Path(samples_root) / cfg.name)
        if list(sset.record["class_names"]) != list(reals.class_names):
            raise ValueError(
                f"{sset.dir}: sampled classes {sset.record['class_names']} differ from the target's "
                f"{reals.class_names} ({target_dir}/classes.json)"
            )
        t0 = time.perf_counter()
        m = compute_metrics(
            sset.load_images(), reals.images,
            fid=mp.fid, isc=mp.isc, kid=mp.kid, prc=mp.prc, clip_score=mp.clip_score, diversity=mp.diversity,
            class_accuracy=mp.class_accuracy,
            labels=sset.labels, texts=sset.texts, class_names=reals.class_names, real_labels=reals.labels,
            train_images=train.images, train_labels=train.labels,
            inception_weights=mp.inception_weights, clip_model=clip_model,
            lpips_weights=mp.lpips_weights, lpips_vgg_weights=mp.lpips_vgg_weights, device=device,
            batch_size=mp.batch_size, isc_splits=mp.isc_splits, kid_subsets=mp.kid_subsets,
            kid_subset_size=mp.kid_subset_size, prc_neighborhood=mp.prc_neighborhood,
            clip_score_weight=mp.clip_score_weight, text_template=template,
            diversity_centers_per_class=mp.diversity_centers_per_class,
            diversity_max_per_cluster=mp.diversity_max_per_cluster, lpips_resize=mp.lpips_resize,
            probe_c=mp.probe_c, probe_max_iter=mp.probe_max_iter, seed=mp.seed, feature_cache=cache,
        )
        m.update(cost_metrics(cfg, sset.record))
        log.info("%s scored in %.1f s: %s", cfg.name, time.perf_counter() - t0,
                 ", ".join(f"{metric_info(k).label}={v:.4g}" for k, v in m.items() if isinstance(v, float)))
        rows.append({"config": cfg.name, "kind": cfg.kind, "family": cfg.family, **m})
    space = "inception" if inception_available(mp.inception_weights) else "clip"
    keys = sorted({k for r in rows for k in r if k not in ("config", "kind", "family")})
    definitions = {
        "feature_space": space,
        "feature_space_note": (
            "FID / IS / KID / precision / recall in Inception-v3 space (torch-fidelity)" if space == "inception" else
            "Inception weights absent: FD-CLIP / IS-CLIP / KD-CLIP / precision-CLIP / recall-CLIP are the FID / IS / "
            "KID / precision / recall formulas on the project's CLIP image embeddings; they are not comparable to "
            "published Inception numbers"
        ),
        "clip_score": f"mean over samples of {mp.clip_score_weight:g} * max(cos(image, text), 0)",
        "text_template": template,
        "real_split": mp.real_split,
        "n_reals": len(reals),
        "metrics": {k: {"label": metric_info(k).label, "higher_is_better": metric_info(k).higher_is_better,
                        "definition": metric_info(k).definition} for k in keys},
    }
    with atomic_dir(out_dir) as tmp:
        for r in rows:
            write_json(tmp / "metrics" / r["config"] / "metrics.json",
                       {k: _num(v) for k, v in r.items() if k not in ("config", "kind", "family")})
        df = pd.DataFrame(rows)
        df.to_parquet(tmp / "metrics.parquet", index=False)
        write_json(tmp / "definitions.json", definitions)
        fk = fd_key(rows[0]) if rows else None
        with open(tmp / "fd_vs_params.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["config", "trainable_params", fk or "fd"])
            for r in rows:
                w.writerow([r["config"], r.get("trainable_params", ""), r.get(fk, "") if fk else ""])
    return rows


def _num(v: Any) -> Any:
    """JSON-safe number for DVC (NaN / inf become null)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def load_scoring_clip(params: Any, path: Optional[str | os.PathLike] = None) -> Any:
    """The CLIP model the metrics use: ``genvpt.clip.load_clip(params.clip)`` (the embedded default's tiny CLIP, or the
    open_clip checkpoint params name), frozen; ``path`` overrides ``clip.pretrained``."""
    from ..clip import load_clip

    section = params.clip
    if path is not None:
        section = section.model_copy(update={"pretrained": str(path)})
    return load_clip(section)
