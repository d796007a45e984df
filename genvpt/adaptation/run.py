"""The adapt stage's library side: load the target tokens, texts, the frozen backbone and CLIP, and train one
configuration once per training seed (genvpt/adaptation/train.py)."""
from __future__ import annotations

import logging
import shutil
import statistics
from pathlib import Path
from typing import Any, Optional

import torch

from .. import distributed
from ..io import publish_seed_dirs, read_json, write_json
from ..training import resolve_device
from .data import load_train_data
from .method import method_class
from .train import SEED_FILES, file_source, train_adaptation

log = logging.getLogger(__name__)

__all__ = ["run_adapt", "tokenizer_of_tokens", "summarise_records"]


def tokenizer_of_tokens(tokens_dir: str | Path) -> Optional[str]:
    """The tokenizer file a token folder was written with (its meta.json)."""
    meta = Path(tokens_dir) / "meta.json"
    return read_json(meta).get("tokenizer") if meta.is_file() else None


def summarise_records(records: list[dict]) -> dict[str, Any]:
    """Mean and sample std over the seeds' records of the numbers that describe a training run."""
    out: dict[str, Any] = {"n_seeds": len(records), "seeds": [r.get("seed") for r in records]}
    if not records:
        return out
    for key in ("trainable_params", "trainable_pct", "train_time_s", "final_loss", "final_task_loss",
                "val_loss_before", "val_loss_after", "peak_memory_mb"):
        vals = [r[key] for r in records if isinstance(r.get(key), (int, float))]
        if vals:
            out[key] = round(statistics.fmean(vals), 6)
            out[f"{key}_std"] = round(statistics.stdev(vals), 6) if len(vals) > 1 else 0.0
    return out


def run_adapt(params: Any, name: str, *, tokens: str, generator: str, out: str, tokenizer: Optional[str] = None,
              clip: Optional[str] = None, captions: Optional[str] = None, summary: Optional[str] = None,
              seeds: Optional[list[int]] = None) -> dict:
    """Train configuration ``name`` of ``params.adaptation`` for every seed into ``out/seed-<s>/``; write the
    summary over seeds (``summary``: a JSON for ``dvc metrics``) and return it."""
    from ..backbones import load_backbone

    ap = params.adaptation
    cfg = ap.config(name)
    device = distributed.rank_device(resolve_device(ap.device, "adaptation.device"))  # cuda:<LOCAL_RANK> under torchrun
    if ap.num_threads:
        torch.set_num_threads(ap.num_threads)
    tok_path = tokenizer or tokenizer_of_tokens(tokens)
    if not tok_path:
        raise ValueError(f"{tokens} names no tokenizer (meta.json); pass --tokenizer")
    sentence_template = params.caption.sentence_template
    data = load_train_data(tokens, captions, sentence_template)
    val = load_train_data(tokens, captions, sentence_template, split="val") if (Path(tokens) / "val").is_dir() else None
    mcls = method_class(cfg.method)
    clip_model, clip_path = None, None
    if mcls.needs_clip(cfg.options):
        from ..clip import load_clip

        clip_params = params.clip if clip is None else params.clip.model_copy(update={"pretrained": str(clip)})
        clip_path = clip_params.pretrained
        clip_model = load_clip(clip_params, device=device)
    source = file_source(generator, tok_path, clip_path)
    # Seeds train in a work folder beside ``out`` (DVC deletes a stage's outputs before rerunning it, so resumable
    # state inside ``out`` would be lost): a killed run resumes there, keeping finished seeds and the last training
    # checkpoint. ``out`` appears in one rename once every seed is done.
    out_path = Path(out)
    work = out_path.parent / f"{out_path.name}.partial"
    seed_list = list(seeds if seeds is not None else ap.seeds)
    records = []
    for seed in seed_list:
        backbone = load_backbone(cfg.backbone, generator, tok_path, device=device)  # fresh per seed
        records.append(train_adaptation(cfg, backbone=backbone, data=data, out_dir=work / f"seed-{seed}",
                                        seed=seed, clip=clip_model, device=device, source=source, val_data=val))
    result = {"name": name, "backbone": cfg.backbone, "method": cfg.method, **summarise_records(records)}
    if distributed.world_size() > 1:
        result["world_size"] = distributed.world_size()  # absent: one process
    if not distributed.is_main():  # under torchrun rank 0 writes the outputs
        return result
    publish_seed_dirs(work, out_path, seed_list, SEED_FILES)
    shutil.rmtree(work)
    if summary:
        write_json(summary, result)
    return result
