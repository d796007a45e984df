"""The score stage's library: every sample set of every report row against the target's real images.

A report row (a frozen generator family, or an adaptation configuration) has several sample sets, one per seed::

    <samples>/<row>/seed-<s>/images.tar                 PNG members 000000.png ...; index order = label order
    <samples>/<row>/seed-<s>/record.json             n, labels, class names, sampling time / memory, and
                                                     row, kind (frozen | adapted), backbone, method, seed,
                                                     spread_over (sampling_seed | training_seed), train_record,
                                                     trainable_params

Frozen rows are sampled at several sampling seeds of one model (their spread is sampling noise); adapted rows once
per training seed with one fixed sampling seed (their spread is the training-seed spread).

Outputs (one directory, written atomically; ``scores/`` in dvc.yaml: small files, git-tracked with ``cache: false``
so that ``dvc metrics diff`` and ``dvc plots diff`` compare with committed versions)::

    <out>/metrics.parquet                 one row per sample set: row, seed, kind, backbone, method, spread_over,
                                          n_seeds (sets of its row), n_samples, images_per_class, n_reals,
                                          real_split, every metric and cost
    <out>/summary.parquet                 one row per report row: row, kind, backbone, method, spread_over, n_seeds,
                                          seeds, images_per_set, n_reals, real_split, and for every metric <key> (mean
                                          over the row's seeds) and <key>_std (sample std, ddof=1; NaN for one seed)
    <out>/metrics/<row>/metrics.json      the summary's numbers (<key>, <key>_std, n_seeds, ...) for DVC
    <out>/definitions.json                what each key means, the feature space, the spread, the sample counts,
                                          and (texture_share on) the texture judge's fit and held-out accuracy
    <out>/fd_vs_params.csv                row, counts, trainable_params, <fid|fd_clip>_std, <fid|fd_clip> (DVC plot;
                                          its last column is the mean FD)
"""
from __future__ import annotations

import csv
import logging
import math
import os
import re
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from ..io import atomic_dir, read_json, write_json
from .params import MetricsParams
from .registry import metric_info

log = logging.getLogger(__name__)

__all__ = [
    "read_train_record",
    "cost_metrics",
    "report_rows",
    "discover_sample_sets",
    "SetRef",
    "score_sample_sets",
    "summarize",
    "summary_keys",
    "fd_key",
    "TRAIN_RECORD_KEYS",
    "ID_COLUMNS",
    "SPREAD_DEFINITION",
    "json_number",
]

# accepted spellings of the numbers a training record may hold -> our key
TRAIN_RECORD_KEYS = {
    "trainable_params": ("trainable_params", "num_trainable_params", "n_trainable_params", "params_trainable"),
    "train_time_s": ("train_time_s", "train_seconds", "training_time_s", "train_seconds_this_run", "wall_time_s",
                     "time_s", "elapsed_s"),
    "train_peak_memory_mb": ("peak_memory_mb", "train_peak_memory_mb", "peak_mem_mb"),
    "trainable_pct": ("trainable_pct",),
}

# descriptive (non-metric) columns of metrics.parquet / summary.parquet
ID_COLUMNS = ("row", "seed", "kind", "backbone", "method", "spread_over", "real_split", "seeds")
# numbers that describe the sets rather than measure them: carried into the summary as they are, without a spread
COUNT_KEYS = ("n_samples", "n_reals", "images_per_class", "n_seeds", "images_per_set", "sampling_seed")

SPREAD_DEFINITION = (
    "<key> is the mean over a report row's sample sets, <key>_std their sample standard deviation (ddof=1; null for "
    "a single set) and n_seeds the number of sets: one per training seed for adapted rows (each model sampled once "
    "with one fixed sampling seed, so the spread is the training-seed spread), one per sampling seed of the one "
    "model for frozen rows (the spread is sampling noise)"
)

_SEED_DIR = re.compile(r"^seed-(-?\d+)$")


# --------------------------------------------------------------------------------------------------------------
# the rows of the report


def _config_names(configs: Any) -> list[str]:
    if configs is None:
        return []
    if isinstance(configs, dict):
        return [str(k) for k in configs]
    out = []
    for c in configs:
        name = c.get("name") if isinstance(c, dict) else getattr(c, "name", c)
        out.append(str(name))
    return out


def report_rows(params: Any) -> list[str]:
    """The report's rows in order: the frozen generator families (``generator.families`` when params have it, else
    ``genvpt.generators.params.FAMILIES``), then the adaptation configurations (``params.adaptation.configs``, or
    ``params.prompts.configs`` before the rename), in params order."""
    from ..generators.params import FAMILIES

    gen = getattr(params, "generator", None)
    frozen = list(getattr(gen, "families", None) or FAMILIES)
    section = getattr(params, "adaptation", None) or getattr(params, "prompts", None)
    adapted = _config_names(getattr(section, "configs", None)) if section is not None else []
    clash = sorted(set(frozen) & set(adapted))
    if clash:
        raise ValueError(f"adaptation configuration name(s) {clash} equal a frozen family's name: each report row "
                         f"needs its own name (data/samples/<row>/)")
    dup = sorted({a for a in adapted if adapted.count(a) > 1})
    if dup:
        raise ValueError(f"duplicate adaptation configuration names {dup}")
    return frozen + adapted


# --------------------------------------------------------------------------------------------------------------
# training cost


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


def cost_metrics(sample_record: dict) -> dict[str, float]:
    """Trainable parameters, training time / memory (the training record the sample record names in
    ``train_record``) and sampling time / memory (the sample record). ``trainable_params`` in the sample record wins
    over the training record's; a frozen row without either trained nothing (0, 0 %)."""
    out = read_train_record(sample_record.get("train_record"))
    if sample_record.get("trainable_params") is not None:
        out["trainable_params"] = int(sample_record["trainable_params"])
    frozen = sample_record.get("kind") == "frozen"
    if frozen and "trainable_params" not in out:
        out["trainable_params"] = 0  # a frozen backbone: nothing is trained for the target domain
    if frozen and out.get("trainable_params") == 0:
        out.setdefault("trainable_pct", 0.0)
    out["sample_time_per_image_s"] = float(sample_record["sample_time_per_image_s"])
    out["sample_peak_memory_mb"] = float(sample_record["peak_memory_mb"])
    if sample_record.get("model_params") is not None:
        out["model_params"] = int(sample_record["model_params"])
    return out


# --------------------------------------------------------------------------------------------------------------
# finding the sample sets


class SetRef:
    """One sample set on disk: ``row``, ``seed`` (from its folder name) and its folder."""

    __slots__ = ("row", "seed", "dir")

    def __init__(self, row: str, seed: int, directory: Path):
        self.row, self.seed, self.dir = row, int(seed), Path(directory)

    def __repr__(self) -> str:
        return f"SetRef({self.row!r}, seed={self.seed}, {str(self.dir)!r})"


def discover_sample_sets(samples_root: str | os.PathLike, rows: Sequence[str], *,
                         allow_missing: bool = False) -> list[SetRef]:
    """The sample sets ``<samples_root>/<row>/seed-<s>/`` of ``rows``, in row order then seed order. Row folders
    not in ``rows`` are skipped (logged); a row without any set is an error unless ``allow_missing``; folders of the
    old one-set-per-row layout (``<row>/record.json``) are an error naming the new layout."""
    root = Path(samples_root)
    if not root.is_dir():
        raise FileNotFoundError(f"samples folder {root} not found: run the sample stage first")
    rows = list(rows)
    dup = sorted({r for r in rows if rows.count(r) > 1})
    if dup:
        raise ValueError(f"duplicate report rows {dup}")
    on_disk = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [n for n in on_disk if n not in rows]
    if unknown:
        log.warning("skipping sample folder(s) %s in %s: not report rows (rows: %s)", unknown, root, rows)
    refs: list[SetRef] = []
    missing = []
    for row in rows:
        d = root / row
        if (d / "record.json").is_file():
            raise ValueError(f"{d} holds one sample set (old layout); expected one per seed: {d}/seed-<s>/record.json")
        seeds = []
        if d.is_dir():
            for p in d.iterdir():
                m = _SEED_DIR.match(p.name)
                if m and p.is_dir():
                    if not (p / "record.json").is_file():
                        raise FileNotFoundError(f"{p / 'record.json'} not found: sample set {p} is incomplete")
                    seeds.append((int(m.group(1)), p))
        if not seeds:
            missing.append(row)
            continue
        refs += [SetRef(row, s, p) for s, p in sorted(seeds)]
    if missing:
        msg = f"no sample sets for row(s) {missing} in {root} (expected <row>/seed-<s>/)"
        if not allow_missing:
            raise FileNotFoundError(msg + "; run the sample stage")
        log.warning("%s: they are left out", msg)
    return refs


def _set_identity(ref: SetRef, record: dict) -> dict:
    """row / seed / kind / backbone / method / spread_over of a set, checked against its folder."""
    if record.get("row") not in (None, ref.row):
        raise ValueError(f"{ref.dir}/record.json names row {record.get('row')!r}, but lies in {ref.row!r}'s folder")
    if record.get("seed") is not None and int(record["seed"]) != ref.seed:
        raise ValueError(f"{ref.dir}/record.json names seed {record['seed']}, but its folder says {ref.seed}")
    kind = record.get("kind")
    if kind not in ("frozen", "adapted"):
        raise ValueError(f"{ref.dir}/record.json: kind must be 'frozen' or 'adapted', got {kind!r}")
    spread = record.get("spread_over") or ("sampling_seed" if kind == "frozen" else "training_seed")
    if spread not in ("sampling_seed", "training_seed"):
        raise ValueError(f"{ref.dir}/record.json: spread_over must be 'sampling_seed' or 'training_seed', got {spread!r}")
    return {"row": ref.row, "seed": ref.seed, "kind": kind, "backbone": record.get("backbone"),
            "method": record.get("method"), "spread_over": spread}


# --------------------------------------------------------------------------------------------------------------
# aggregation over seeds


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _within_set_spread(key: str, keys: set[str]) -> bool:
    """``is_std`` (of ``is_mean``), ``diversity_clip_std`` (of ``diversity_clip``), ...: a spread inside one set."""
    if not key.endswith("_std"):
        return False
    base = key[:-4]
    return base in keys or f"{base}_mean" in keys


def summary_keys(set_rows: Sequence[dict]) -> list[str]:
    """The metric keys averaged over seeds: every numeric key of the per-set rows except the identity / count
    columns and the within-set spreads (``is_clip_std``, ``diversity_clip_std``, ... stay in metrics.parquet)."""
    keys = {k for r in set_rows for k, v in r.items() if _is_num(v)}
    keys -= set(ID_COLUMNS) | set(COUNT_KEYS)
    out = sorted(k for k in keys if not _within_set_spread(k, keys))
    clash = sorted(f"{k}_std" for k in out if f"{k}_std" in out)
    if clash:  # cannot happen with the within-set rule above; kept as a guard for registered metric groups
        raise ValueError(f"metric keys {clash} would be overwritten by the spreads of other keys")
    return out


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    vals = [float(v) for v in values if _is_num(v) and math.isfinite(float(v))]
    if not vals:
        return math.nan, math.nan
    mean = math.fsum(vals) / len(vals)
    if len(vals) < 2:
        return mean, math.nan
    var = math.fsum((v - mean) ** 2 for v in vals) / (len(vals) - 1)
    return mean, math.sqrt(var)


def summarize(set_rows: Sequence[dict], rows: Optional[Sequence[str]] = None) -> list[dict]:
    """One dict per report row (``rows`` order, else first appearance): identity columns, ``n_seeds``, ``seeds``
    ("0,1,2"), ``images_per_set``, ``n_reals``, ``real_split`` and, for every key of :func:`summary_keys`, ``<key>``
    (mean over the row's sets) and ``<key>_std`` (sample std, ddof=1; NaN with one set)."""
    keys = summary_keys(set_rows)
    order = list(rows) if rows is not None else list(dict.fromkeys(r["row"] for r in set_rows))
    out = []
    for name in order:
        group = [r for r in set_rows if r["row"] == name]
        if not group:
            continue
        first = group[0]
        for col in ("kind", "spread_over", "backbone", "method"):
            vals = {r.get(col) for r in group}
            if len(vals) > 1:
                raise ValueError(f"row {name!r}: its sample sets disagree on {col} ({sorted(map(str, vals))})")
        sizes = sorted({int(r["n_samples"]) for r in group if _is_num(r.get("n_samples"))})
        if len(sizes) > 1:
            log.warning("row %s: sample sets of different sizes %s; images_per_set is the smallest", name, sizes)
        s = {"row": name, "kind": first.get("kind"), "backbone": first.get("backbone"), "method": first.get("method"),
             "spread_over": first.get("spread_over"), "n_seeds": len(group),
             "seeds": ",".join(str(r["seed"]) for r in group),
             "images_per_set": sizes[0] if sizes else None,
             "images_per_class": first.get("images_per_class"),
             "sampling_seed": first.get("sampling_seed"),
             "n_reals": first.get("n_reals"), "real_split": first.get("real_split")}
        for k in keys:
            s[k], s[f"{k}_std"] = _mean_std([r.get(k) for r in group])
        out.append(s)
    return out


def fd_key(metrics: dict) -> Optional[str]:
    return "fid" if "fid" in metrics else "fd_clip" if "fd_clip" in metrics else None


# --------------------------------------------------------------------------------------------------------------
# the stage


def score_sample_sets(
    rows: Sequence[str],
    metrics_params: MetricsParams,
    samples_root: str | os.PathLike,
    target_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    clip_model: Any,
    default_text_template: str = "a photo of {class_name}",
    allow_missing: bool = False,
    dataset_params: Any = None,
    class_judge: Any = None,
) -> list[dict]:
    """Score every sample set ``<samples_root>/<row>/seed-<s>/`` of ``rows`` (the report's row order, e.g.
    :func:`report_rows`) against the real images of split ``metrics.real_split`` of the prepared target; write the
    outputs described in the module docstring; return the per-set rows (as in metrics.parquet).
    ``default_text_template`` is used when ``metrics.text_template`` is null (the stage passes the caption section's
    sentence template). ``dataset_params`` (the target's ``dataset`` section) resolves ``metrics.texture_share``:
    with it on (:func:`genvpt.metrics.texture.texture_share_enabled`), every set also gets ``texture_share`` and the
    real images' ``texture_share_real``, and definitions.json the judge's fit and held-out accuracy.
    ``class_judge`` (:class:`genvpt.metrics.judge.ClassifierJudge`, metrics.class_judge): a second class judge of
    the samples beside the probe (``class_acc_judge`` and the agreement keys; definitions.json ``class_judge``: which
    classifier, and how the two judges agree on the real images)."""
    import pandas as pd

    from ..datasets.shards import load_split
    from ..sampling import SampleSet
    from ..training import resolve_device
    from .core import compute_metrics
    from .fidelity import inception_available

    mp = metrics_params
    refs = discover_sample_sets(samples_root, rows, allow_missing=allow_missing)
    template = mp.text_template or default_text_template
    reals = load_split(target_dir, mp.real_split)
    train = reals if mp.real_split == "train" else load_split(target_dir, "train")
    device = resolve_device(mp.device, "metrics.device")
    n_sets = {r: sum(1 for x in refs if x.row == r) for r in rows}
    judge, texture_def = _texture_judge(mp, dataset_params, reals)
    if class_judge is not None and list(class_judge.class_names) != list(reals.class_names):
        raise ValueError(f"metrics.class_judge: the classifier {class_judge.record.get('folder')} knows classes "
                         f"{class_judge.class_names}, the target {target_dir} has {reals.class_names}")
    cache: dict = {}
    set_rows: list[dict] = []
    for ref in refs:
        sset = SampleSet(ref.dir)
        ident = _set_identity(ref, sset.record)
        if list(sset.record["class_names"]) != list(reals.class_names):
            raise ValueError(
                f"{sset.dir}: sampled classes {sset.record['class_names']} differ from the target's "
                f"{reals.class_names} ({target_dir}/classes.json)"
            )
        t0 = time.perf_counter()
        images = sset.load_images()
        m = compute_metrics(
            images, reals.images,
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
            class_judge=class_judge,
        )
        if judge is not None:
            m["texture_share"] = judge.share(images)
            m["texture_share_real"] = texture_def["real_share"]
        m.update(cost_metrics(sset.record))
        log.info("%s seed %d scored in %.1f s: %s", ref.row, ref.seed, time.perf_counter() - t0,
                 ", ".join(f"{metric_info(k).label}={v:.4g}" for k, v in m.items() if isinstance(v, float)))
        counts = {"n_seeds": n_sets[ref.row], "real_split": mp.real_split}
        if _is_num(sset.record.get("images_per_class")):
            counts["images_per_class"] = int(sset.record["images_per_class"])
        if _is_num(sset.record.get("sampling_seed")):
            counts["sampling_seed"] = int(sset.record["sampling_seed"])
        set_rows.append({**ident, **counts, **m})
    if not set_rows:
        raise FileNotFoundError(f"no sample sets to score in {samples_root} for rows {list(rows)}")
    summary = summarize(set_rows, rows)
    keys = summary_keys(set_rows)
    space = "inception" if inception_available(mp.inception_weights) else "clip"
    metric_keys = sorted({k for r in set_rows for k in r if k not in ID_COLUMNS})
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
        "spread": SPREAD_DEFINITION,
        "spread_over": {"frozen": "sampling_seed", "adapted": "training_seed"},
        "within_set_keys": sorted(k for k in metric_keys if _within_set_spread(k, set(metric_keys))),
        "within_set_note": "spreads inside one sample set (over IS splits, KID subsets, diversity clusters): in "
                           "metrics.parquet only, not averaged over seeds",
        "counts": {
            "real_images": len(reals), "real_split": mp.real_split,
            "rows": {s["row"]: {"kind": s["kind"], "spread_over": s["spread_over"], "n_seeds": s["n_seeds"],
                                "seeds": [int(x) for x in s["seeds"].split(",")],
                                "images_per_set": s["images_per_set"], "images_per_class": s["images_per_class"]}
                     for s in summary},
        },
        "summary_keys": keys,
        "metrics": {k: {"label": metric_info(k).label, "higher_is_better": metric_info(k).higher_is_better,
                        "definition": metric_info(k).definition} for k in metric_keys},
    }
    if texture_def is not None:
        definitions["texture_share"] = texture_def
        held = texture_def["heldout"]
        for k in ("texture_share", "texture_share_real"):
            if k in definitions["metrics"]:
                definitions["metrics"][k]["definition"] += (
                    f" Judge accuracy on held-out renderings ({held['n_flat']} flat + {held['n_textured']} textured): "
                    f"{held['accuracy_clean']:.4f} clean, {held['accuracy_blurred_mean']:.4f} mean over blurred "
                    f"conditions (min {held['accuracy_blurred_min']:.4f}).")
    if class_judge is not None:
        first = next((r for r in set_rows if _is_num(r.get("judge_real_acc"))), {})
        definitions["class_judge"] = {
            **class_judge.record, "real_split": mp.real_split, "n_reals": len(reals),
            "real_acc": first.get("judge_real_acc"), "probe_real_acc": first.get("probe_real_acc"),
            "agreement_with_probe_real": first.get("judge_probe_real_agreement"),
            "rank_correlation_rows": _rank_correlation(summary, "class_acc", "class_acc_judge"),
            "seed_rule_note": "best_val: the classifier's training seed with the highest top-1 on the target's val "
                              "split (the test split chooses nothing)"}
    fk = fd_key(summary[0]) if summary else None
    with atomic_dir(out_dir) as tmp:
        for s in summary:
            write_json(tmp / "metrics" / s["row"] / "metrics.json", dvc_metrics(s, keys))
        pd.DataFrame(set_rows).to_parquet(tmp / "metrics.parquet", index=False)
        pd.DataFrame(summary).to_parquet(tmp / "summary.parquet", index=False)
        write_json(tmp / "definitions.json", definitions)
        with open(tmp / "fd_vs_params.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            y = fk or "fd"
            w.writerow(["row", "kind", "n_seeds", "images_per_set", "n_reals", "real_split", "trainable_params",
                        f"{y}_std", y])
            for s in summary:
                w.writerow([s["row"], s["kind"], s["n_seeds"], s["images_per_set"], s["n_reals"], s["real_split"],
                            _csv_num(s.get("trainable_params")), _csv_num(s.get(f"{y}_std")), _csv_num(s.get(y))])
    return set_rows


def _rank_correlation(rows: Sequence[dict], a: str, b: str) -> Optional[float]:
    """Spearman's rank correlation of the rows' mean ``a`` and ``b`` (how alike two judges rank the report's rows);
    None with fewer than three rows holding both."""
    import pandas as pd

    pairs = [(r[a], r[b]) for r in rows if _is_num(r.get(a)) and _is_num(r.get(b))]
    if len(pairs) < 3:
        return None
    rho = pd.DataFrame(pairs, columns=["a", "b"]).corr(method="spearman").iloc[0, 1]
    return None if math.isnan(rho) else round(float(rho), 4)


def _texture_judge(mp: MetricsParams, dataset_params: Any, reals: Any) -> tuple[Any, Optional[dict]]:
    """The texture judge and its definitions.json entry when ``metrics.texture_share`` is on for this target, else
    (None, None)."""
    from .texture import fit_shapes_judge, texture_share_enabled

    setting = getattr(mp, "texture_share", "auto")
    if not texture_share_enabled(setting, dataset_params):
        return None, None
    t0 = time.perf_counter()
    judge = fit_shapes_judge(dataset_params, seed=mp.seed)
    real_share = judge.share(reals.images)
    held = judge.record["heldout"]
    log.info("texture judge fitted in %.1f s: held-out accuracy %.4f clean, %.4f blurred (mean); real %s split "
             "judged textured: %.4f", time.perf_counter() - t0, held["accuracy_clean"], held["accuracy_blurred_mean"],
             mp.real_split, real_share)
    return judge, {"setting": setting, **judge.record, "real_split": mp.real_split, "n_reals": len(reals),
                   "real_share": real_share}


def dvc_metrics(summary_row: dict, keys: Sequence[str]) -> dict:
    """The numbers of one summary row for ``dvc metrics show``: counts, then ``<key>`` and ``<key>_std``."""
    out = {k: json_number(summary_row.get(k)) for k in ("n_seeds", "images_per_set", "n_reals") if k in summary_row}
    for k in keys:
        out[k] = json_number(summary_row.get(k))
        out[f"{k}_std"] = json_number(summary_row.get(f"{k}_std"))
    return out


def _csv_num(v: Any) -> Any:
    v = json_number(v)
    if v is None:
        return ""
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return int(v)
    return v


def json_number(v: Any) -> Any:
    """JSON-safe number for DVC (numpy scalars become Python numbers; NaN / inf become null)."""
    if hasattr(v, "item") and not isinstance(v, (list, dict, str)):
        v = v.item()
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
