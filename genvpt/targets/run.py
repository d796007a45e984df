"""The library side of stage ``extra_target@<name>``: the derived params file a target's inner stages read, what
they need (tokenizer families, frozen backbones), and the target's summary from the inner score stage's outputs.

The derived params are params.yaml's own content with two blocks changed: ``dataset`` is the target's merged block
(its overrides deep-merged over the pipeline's ``dataset``), ``adaptation.configs`` keeps only the target's
configurations (and ``extra_targets`` only this target, whose configurations are then all there). Every inner stage
(prepare, tokenize, adapt, sample, score) reads that file through its ``--params``: the same entry points as the main
pipeline, nothing re-implemented."""
from __future__ import annotations

import copy
import hashlib
import os
from pathlib import Path
from typing import Any, Optional, Sequence

from ..io import sha256_file

__all__ = ["derived_params", "target_rows", "inputs_stamp", "target_summary", "CLASS_JUDGE_NOTE",
           "SUMMARY_KEYS"]

# what the summary's class accuracy is (genvpt/metrics/core.py `class_accuracy`, genvpt/metrics/probe.py)
CLASS_JUDGE_NOTE = (
    "the share of a row's samples whose class (the label they were sampled for) a linear probe predicts (class_acc); "
    "the probe is a logistic regression (genvpt/metrics/probe.py) on the scoring CLIP's image embeddings, trained on "
    "this target's real train images (probe_real_acc: its accuracy on the real images of the scored split, the "
    "ceiling)")
# the summary's numbers per row: <key> (mean over the row's seeds) and <key>_std (sample std; null for one seed)
SUMMARY_KEYS = ("class_acc", "trainable_params", "probe_real_acc")


def derived_params(raw: dict[str, Any], params: Any, name: str) -> dict[str, Any]:
    """The params mapping of target ``name``: ``raw`` (params.yaml as read) with ``dataset`` replaced by the merged
    block, ``adaptation.configs`` reduced to the target's configurations (in the target's order),
    ``extra_targets`` to this target and ``metrics.class_judge`` off; everything else unchanged. ``params``: ``raw``
    validated."""
    from .params import extra_target_block

    target = params.extra_targets[name]
    out = copy.deepcopy(dict(raw))
    out["dataset"] = extra_target_block(params.extra_targets, name, params.dataset).model_dump(mode="json")
    adaptation = dict(out.get("adaptation") or {})
    configs = adaptation.get("configs") or {}
    adaptation["configs"] = {c: copy.deepcopy(configs[c]) for c in target.configs}
    out["adaptation"] = adaptation
    out["extra_targets"] = {name: copy.deepcopy((raw.get("extra_targets") or {})[name])}
    # the second class judge (metrics.class_judge) is a classifier of the pipeline's target's classes: not this one's
    out["metrics"] = {**dict(out.get("metrics") or {}), "class_judge": None}
    return out


def target_rows(params: Any, name: str) -> dict[str, Any]:
    """What target ``name`` runs: ``configs`` (its configurations, in order), ``frozen`` (the backbones they adapt,
    in the frozen rows' report order), ``tokenizer_of`` (backbone -> tokenizer family) and ``families`` (the tokenizer
    families whose target tokens the configurations train on)."""
    from ..generators.params import FAMILIES

    configs = list(params.extra_targets[name].configs)
    tok_of: dict[str, str] = {}
    for c in configs:
        cfg = params.adaptation.config(c)
        tok_of[cfg.backbone] = cfg.tokenizer
    frozen = [f for f in FAMILIES if f in tok_of] + sorted(f for f in tok_of if f not in FAMILIES)
    families = list(dict.fromkeys(tok_of[b] for b in frozen))
    return {"configs": configs, "frozen": frozen, "tokenizer_of": tok_of, "families": families}


def inputs_stamp(params_text: str, files: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """What a resumable work folder was computed from: the derived params text and every input file's sha256
    (a missing file is recorded as such); a work folder with another stamp is started afresh."""
    return {"params_sha256": hashlib.sha256(params_text.encode("utf-8")).hexdigest(),
            "files": {str(f): (sha256_file(f) if Path(f).is_file() else None) for f in files}}


def _num(v: Any) -> Any:
    """The score stage's JSON-safe number (genvpt.metrics.scoring.json_number); anything not a number -> None."""
    from ..metrics.scoring import json_number

    v = json_number(v)
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def target_summary(name: str, *, params: Any, rows: dict[str, Any], work: str | os.PathLike,
                   overrides: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The target's summary (results/targets/<name>.json): per row (frozen backbones first, then the configurations)
    the mean and std over seeds of the FD column the score stage reports (``fid`` with Inception weights, else
    ``fd_clip``), class accuracy and trainable parameters, from ``<work>/scores/summary.parquet``; the target's
    dataset block and classes, the tokenizers' reconstruction PSNR on its val / test splits (the tokenize stage's
    metrics), and what judges the class. An expected row without scores is an error."""
    import pandas as pd

    from ..io import read_json
    from ..metrics.scoring import fd_key

    work = Path(work)
    df = pd.read_parquet(work / "scores" / "summary.parquet")
    by_row = {r["row"]: r for r in df.to_dict(orient="records")}
    order = list(rows["frozen"]) + list(rows["configs"])
    missing = [r for r in order if r not in by_row]
    if missing:
        raise FileNotFoundError(f"extra target {name}: no scores for row(s) {missing} in {work / 'scores'}")
    fk = next((fd_key(r) for r in by_row.values() if fd_key(r)), None)
    keys = ([fk] if fk else []) + list(SUMMARY_KEYS)
    out_rows: dict[str, dict] = {}
    for row in order:
        s = by_row[row]
        entry = {k: (s.get(k) if isinstance(s.get(k), str) else None)  # pandas holds a missing text as NaN
                 for k in ("kind", "backbone", "method", "spread_over", "seeds")}
        entry["n_seeds"] = _num(s.get("n_seeds"))
        for k in keys:
            entry[k] = _num(s.get(k))
            entry[f"{k}_std"] = _num(s.get(f"{k}_std"))
        if isinstance(entry.get("trainable_params"), float) and entry["trainable_params"].is_integer():
            entry["trainable_params"] = int(entry["trainable_params"])  # a count (the same for every seed)
        out_rows[row] = entry
    defs_path = work / "scores" / "definitions.json"
    defs = read_json(defs_path) if defs_path.is_file() else {}
    psnr: dict[str, dict] = {}
    for fam in rows["families"]:
        mpath = work / "tokens" / f"{fam}-metrics.json"
        m = read_json(mpath) if mpath.is_file() else {}
        psnr[fam] = {split: _num((m.get(split) or {}).get("psnr")) for split in ("val", "test")
                     if isinstance(m.get(split), dict)}
    from ..datasets.shards import read_classes

    classes = read_classes(work / "prepared")
    return {
        "target": name,
        "dataset": params.dataset.model_dump(mode="json"),
        "dataset_overrides": overrides or {},
        "classes": classes,
        "configs": list(rows["configs"]),
        "frozen": list(rows["frozen"]),
        "row_order": order,
        "fd_key": fk,
        "feature_space": defs.get("feature_space"),
        "real_split": defs.get("real_split"),
        "n_reals": defs.get("n_reals"),
        "class_judge": CLASS_JUDGE_NOTE,
        "spread": defs.get("spread"),
        "tokenizer_psnr": psnr,
        "rows": out_rows,
    }

