"""The ``classify@<config>-<dataset>`` stage's library side: load the prepared target splits and the frozen CLIP ViT, train one
configuration of ``params.classify`` once per seed (:func:`genvpt.classify.train.train_classifier`), invert its
token prompts to RGB when ``classify.inversion.configs`` names it, and summarise the seeds.

Protocol (the evaluation protocol of docs/architecture.md): every seed trains on the target's ``train`` split and is
scored on every split of ``classify.eval_splits`` (``val``: what settings are chosen on; ``test``: what the report
shows). Nothing is selected automatically: the accuracy after the last step is reported for every split.

Resumable like ``adapt@<config>``: seeds train in ``<out>.partial/seed-<s>/`` beside the output folder (DVC deletes
a stage's outputs before it reruns it, so state inside them would be lost). A finished seed leaves ``done.json``
(the fingerprint of its configuration, seed, CLIP file and data) and is kept by a rerun; an interrupted one resumes
from its last ``train_state.pt``. The output folder appears in one rename once every seed is done, then the summary
is written, then the work folder is removed.
"""
from __future__ import annotations

import json
import logging
import shutil
import statistics
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from .. import distributed
from ..io import publish_seed_dirs, read_json, sha256_file, write_json
from ..training import resolve_device

log = logging.getLogger(__name__)

__all__ = ["SEED_FILES", "INVERSION_FILE", "DONE_FILE", "INVERSION_KEYS", "run_classify", "summarise_seeds",
           "dataset_label", "dataset_info", "classify_clip_block"]

SEED_FILES = ("model.pt", "record.json", "curve.csv")  # what one training seed leaves (train_classifier)
INVERSION_FILE = "inversion.json"  # inversion_report of the seed's trained prompts (inverted configurations only)
DONE_FILE = "done.json"  # {"fingerprint", "stage": "trained" | "done"}, written after each phase
# the inversion numbers summarised over seeds (genvpt.classify.inversion.inversion_report)
INVERSION_KEYS = ("top1_tokens", "top1_rgb_float", "top1_rgb_clamp", "top1_rgb_uint8", "agree_float", "agree_clamp",
                  "agree_uint8", "max_logit_diff_float", "token_rel_err_mean", "post_ln_rel_err_mean",
                  "pixels_out_of_range", "top1_tokens_dropped")


def classify_clip_block(params: Any, clip_path: Optional[str] = None) -> Any:
    """The ClipParams the classification methods load: ``classify.clip`` (null: the top-level block), reading
    ``clip_path`` (the pretrain_clip_vit stage's model.pt) when given."""
    block = params.classify.clip if params.classify.clip is not None else params.clip
    return block.model_copy(update={"pretrained": str(clip_path)}) if clip_path else block


def dataset_label(dataset: Any) -> str:
    """A short name for the target dataset params ``dataset`` (the column of the report's classification table):
    ``shapes-textured``, ``digits``, ``imagefolder:<folder name>``; ``, <k>-shot`` when train is subsampled."""
    label = f"shapes-{dataset.shapes.domain}" if dataset.name == "shapes" else str(dataset.name)
    if dataset.path:
        label += f":{Path(dataset.path).stem or Path(dataset.path).name}"
    if dataset.few_shot.images_per_class:
        label += f", {dataset.few_shot.images_per_class}-shot"
    return label


def dataset_info(prepared: str | Path, dataset: Any = None) -> dict[str, Any]:
    """Which dataset the prepared folder holds: its name and size (stats.json, written by the prepare stage) and the
    label of the report's column (:func:`dataset_label` of the params that prepared it, when given)."""
    p = Path(prepared) / "stats.json"
    stats = read_json(p) if p.is_file() else {}
    name = stats.get("dataset") or (dataset.name if dataset is not None else Path(prepared).name)
    return {"name": name, "label": dataset_label(dataset) if dataset is not None else name,
            "classes": stats.get("classes"),
            "images": {s: v.get("images") for s, v in (stats.get("splits") or {}).items()}}


def _mean_std(vals: Sequence[float]) -> tuple[Optional[float], Optional[float]]:
    if not vals:
        return None, None
    mean = statistics.fmean(vals)
    return round(mean, 6), (round(statistics.stdev(vals), 6) if len(vals) > 1 else None)


def _per_seed_stats(values: dict[str, float]) -> dict[str, Any]:
    """``{"mean", "std" (sample std, ddof=1; null with one seed), "per_seed": {"seed-<s>": v}}``."""
    mean, std = _mean_std(list(values.values()))
    return {"mean": mean, "std": std, "per_seed": dict(values)}


def summarise_seeds(name: str, method: str, records: dict[int, dict], inversions: dict[int, dict],
                    splits: Sequence[str], dataset: dict[str, Any]) -> dict[str, Any]:
    """The stage's metrics JSON: top-1 per split (mean, std over seeds, per seed), trainable parameters, train time
    (per seed: mean and std), peak memory (the largest over seeds), the inversion numbers."""
    seeds = sorted(records)
    tag = {s: f"seed-{s}" for s in seeds}
    out: dict[str, Any] = {"name": name, "method": method, "dataset": dataset, "seeds": seeds, "n_seeds": len(seeds),
                           "train_split": "train", "selection": "val (choices)", "reported": "test"}
    out["top1"] = {sp: _per_seed_stats({tag[s]: records[s]["eval"][sp]["top1"] for s in seeds
                                        if sp in records[s].get("eval", {})}) for sp in splits}
    before = {sp: {tag[s]: records[s]["eval"][sp]["top1_before"] for s in seeds
                   if "top1_before" in records[s].get("eval", {}).get(sp, {})} for sp in splits}
    out["top1_before"] = {sp: _per_seed_stats(v) for sp, v in before.items() if v}
    first = records[seeds[0]]
    for key in ("trainable_params", "trainable_pct", "vision_params", "text_params", "steps", "batch_size",
                "train_samples", "device"):
        out[key] = first.get(key)
    out["method_info"] = first.get("method_info", {})
    times = [float(records[s].get("train_time_s") or 0.0) for s in seeds]
    out["train_time_s"], out["train_time_s_std"] = _mean_std(times)
    out["train_time_total_s"] = round(sum(times), 2)
    mem = [float(records[s]["peak_memory_mb"]) for s in seeds if isinstance(records[s].get("peak_memory_mb"),
                                                                             (int, float))]
    out["peak_memory_mb"] = round(max(mem), 1) if mem else None
    out["final_loss"] = _per_seed_stats({tag[s]: records[s]["final_loss"] for s in seeds
                                         if isinstance(records[s].get("final_loss"), (int, float))})
    out["frozen_verified"] = first.get("frozen_verified", [])
    if inversions:
        inv0 = inversions[sorted(inversions)[0]]
        inv: dict[str, Any] = {k: inv0.get(k) for k in ("placement", "ln_invariant", "split", "n", "num_prompts",
                                                        "width", "patch_dim", "conv1_rank", "tokens_in_range")}
        for k in INVERSION_KEYS:
            vals = {tag[s]: r[k] for s, r in sorted(inversions.items()) if isinstance(r.get(k), (int, float))}
            if vals:
                inv[k] = _per_seed_stats(vals)
        out["inversion"] = inv
    return out


def _fingerprint(cfg: Any, seed: int, template: str, source: dict, splits: Sequence[str],
                 inversion: Optional[dict]) -> str:
    return json.dumps({"config": cfg.to_dict(), "seed": seed, "template": template, "source": source,
                       "eval_splits": list(splits), "inversion": inversion}, sort_keys=True)


def _check_inversion(cfg: Any, inv: Any, clip: Any) -> None:
    """The append placement needs K prompts filling whole rows of the patch grid: fail before training, not after."""
    k = getattr(cfg.options, "num_prompts", None)
    gw = int(clip.model.visual.grid_size[1]) if hasattr(clip.model.visual, "grid_size") else None
    if inv.placement == "append" and k is not None and gw and k % gw:
        raise ValueError(f"classify.inversion.placement 'append' needs classify.configs.{cfg.name}.num_prompts a "
                         f"multiple of the patch grid's width {gw} (got {k}); use placement 'replace' or K in "
                         f"{[gw * i for i in range(1, 5)]}")


def run_classify(params: Any, name: str, *, prepared: str, out: str, dataset: str = "target",
                 clip: Optional[str] = None, summary: Optional[str] = None, seeds: Optional[list[int]] = None,
                 progress: bool = False) -> dict[str, Any]:
    """Train configuration ``name`` of ``params.classify`` for every seed into ``out/seed-<s>/`` on the prepared
    dataset ``prepared`` (column ``dataset`` of ``classify.datasets``: its label names the report's column) with the
    CLIP file ``clip`` (default: the one ``classify.clip`` names); write the summary (``summary``: the JSON
    ``dvc metrics`` reads) and return it."""
    from ..clip import load_clip
    from ..datasets.shards import present_splits
    from .data import load_prepared_split
    from .inversion import inversion_report
    from .train import load_classifier, train_classifier

    cp = params.classify
    cfg = cp.config(name)
    device = distributed.rank_device(resolve_device(cp.device, "classify.device"))  # cuda:<LOCAL_RANK> (torchrun)
    main = distributed.is_main()  # under torchrun rank 0 writes every file
    if cp.num_threads:
        torch.set_num_threads(cp.num_threads)
    block = classify_clip_block(params, clip)
    clip_path = Path(block.pretrained)
    have = present_splits(prepared)
    if "train" not in have:
        raise FileNotFoundError(f"{prepared} has no train split (it has {have}); run the prepare stage")
    missing = [s for s in cp.eval_splits if s not in have]
    if missing:
        raise ValueError(f"classify.eval_splits: {missing} not in {prepared} (it has {have})")
    inverted = name in cp.inversion.configs
    if inverted and cp.inversion.split not in have:
        raise ValueError(f"classify.inversion.split: {cp.inversion.split!r} not in {prepared} (it has {have})")
    train = load_prepared_split(prepared, "train")
    evals = {s: (train if s == "train" else load_prepared_split(prepared, s)) for s in cp.eval_splits}
    inv_data = None
    if inverted:
        inv_data = evals[cp.inversion.split] if cp.inversion.split in evals else \
            load_prepared_split(prepared, cp.inversion.split)
    manifest = Path(prepared) / "manifest.parquet"
    source = {"clip": str(clip_path), "clip_model": block.model, "clip_sha256": sha256_file(clip_path),
              "data": str(prepared), "data_sha256": sha256_file(manifest) if manifest.is_file() else None}
    inv_params = cp.inversion.model_dump(mode="json") if inverted else None
    info = dataset_info(prepared, cp.dataset_block(dataset, params.dataset))  # the block prepare_classify used
    info["column"] = dataset
    log.info("classify %s (%s) on %s: %d train images, %d classes, seeds %s", name, cfg.method, info["label"],
             len(train), len(train.class_names), list(seeds if seeds is not None else cp.seeds))

    out_path = Path(out)
    work = out_path.parent / f"{out_path.name}.partial"
    seed_list = list(seeds if seeds is not None else cp.seeds)
    records: dict[int, dict] = {}
    inversions: dict[int, dict] = {}
    for seed in seed_list:
        sdir = work / f"seed-{seed}"
        done = sdir / DONE_FILE
        fp = _fingerprint(cfg, seed, cp.template, source, cp.eval_splits, inv_params)
        distributed.barrier()  # rank 0 wrote the previous seed's files
        state = read_json(done) if done.is_file() else {}
        if state.get("fingerprint") != fp or not all((sdir / f).is_file() for f in SEED_FILES):
            if state:
                log.warning("%s was written for another configuration, CLIP or dataset; training again", sdir)
            state = {}
        if state.get("stage") == "done" and (not inverted or (sdir / INVERSION_FILE).is_file()):
            log.info("%s seed %d: already done in %s (same configuration, CLIP and data); kept", name, seed, sdir)
            records[seed] = read_json(sdir / "record.json")
            if inverted:
                inversions[seed] = read_json(sdir / INVERSION_FILE)
            continue
        if state.get("stage") in ("trained", "done"):
            records[seed] = read_json(sdir / "record.json")
        else:
            distributed.barrier()  # every rank has read done.json
            if main:
                done.unlink(missing_ok=True)
            model = load_clip(block, device=device)  # a fresh CLIP per seed: finetune / lora change it in place
            if inverted:
                _check_inversion(cfg, cp.inversion, model)
            records[seed] = train_classifier(cfg, clip=model, train_data=train, out_dir=sdir, seed=seed,
                                             eval_data=evals, template=cp.template, progress=progress,
                                             source=source)
            if main:
                write_json(done, {"fingerprint": fp, "stage": "trained"})
        if not main:  # the other ranks only train; rank 0 inverts, publishes and summarises
            continue
        if inverted:
            method = load_classifier(sdir / "model.pt", load_clip(block, device=device))
            inversions[seed] = inversion_report(method, inv_data, placement=cp.inversion.placement,
                                                ln_invariant=cp.inversion.ln_invariant,
                                                batch_size=cfg.train.eval_batch_size)
            inversions[seed]["split"] = cp.inversion.split
            write_json(sdir / INVERSION_FILE, inversions[seed])
            log.info("%s seed %d inversion (%s): top-1 tokens %.4f, RGB float %.4f / clamp %.4f / uint8 %.4f", name,
                     seed, cp.inversion.placement, inversions[seed]["top1_tokens"],
                     inversions[seed]["top1_rgb_float"], inversions[seed]["top1_rgb_clamp"],
                     inversions[seed]["top1_rgb_uint8"])
        write_json(done, {"fingerprint": fp, "stage": "done"})

    distributed.barrier()
    if not main:
        return {}
    publish_seed_dirs(work, out_path, seed_list, SEED_FILES + ((INVERSION_FILE,) if inverted else ()))
    result = summarise_seeds(name, cfg.method, records, inversions, list(cp.eval_splits), info)
    result["config"] = cfg.to_dict()
    result["template"] = cp.template
    result["clip"] = {"model": block.model, "file": str(clip_path), "sha256": source["clip_sha256"]}
    if summary:
        write_json(summary, result)
    shutil.rmtree(work)  # last: a run stopped while writing the summary keeps its finished seeds
    log.info("classify %s: %s", name, ", ".join(
        f"top-1 {sp} {v['mean']:.4f}" + (f" ± {v['std']:.4f}" if v["std"] is not None else "")
        for sp, v in result["top1"].items() if v["mean"] is not None))
    return result
