"""One training loop for PGN and every classification baseline on a frozen CLIP.

Per step: a seeded batch of training images, the official PGN augmentations (genvpt/classify/augment.py, a
function of (seed, step)), the method's logits (cosine against the frozen text tower's class prompts times the
frozen logit scale, or the linear probe's head), cross-entropy. SGD with momentum 0.9 (or AdamW), linear warm-up then
cosine to ``lr * min_lr_ratio`` (genvpt.training.cosine_lambda). The CLIP runs in eval mode throughout (its
patch dropout is off); the method's own modules (PGN's BatchNorm) train.

Checked here, not assumed:

* the text tower (every CLIP weight outside ``visual``, the logit scale included) and, unless the method trains the
  vision tower's own weights (``finetune``), the vision tower hash bit-for-bit the same after training as before
  (sha256 of their state dicts; LoRA's base weights under their original names) -> :class:`FrozenBackboneChanged`;
* after every backward pass only trainable parameters hold gradients;
* batches and augmentations are functions of (seed, step), so a resumed run equals an uninterrupted one.

Outputs in ``out_dir``: ``model.pt`` (family ``classify``: configuration, the method's trained state),
``record.json`` (trainable parameters and their share of the vision tower, times, peak memory, losses, top-1 on
every given split before and after training, the frozen-check hashes), ``curve.csv``. A resumable
``train_state.pt`` lives next to them while training runs.

Under torchrun (params ``distributed.nproc_per_node`` > 1, genvpt/distributed.py) every rank draws and augments the
whole global batch from (seed, step), keeps its equal slice, and the trainable parameters' gradients are averaged
over the ranks (``all_reduce_grads``): the global batch's gradient, as in one process. Logged losses are the global
batch's; rank 0 writes every file. Methods without batch statistics (IIP, VP, linear probe, LoRA without dropout,
fine-tuning) agree with one process to float tolerance; PGN's BatchNorm in its prompt generator normalises over each
rank's slice (DDP without SyncBatchNorm), so PGN agrees with one process in distribution only.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .. import distributed
from ..adaptation.memory import PeakMemory
from ..adaptation.semantic import base_state_dict, state_hash
from ..checkpoint import load_file, save_state_file
from ..io import write_json
from ..training import (AdapterState, FrozenBackboneChanged, TrainCheckpoint, check_finite, cosine_lambda,
                        seed_everything, write_curve)
from .augment import augment_batch, build_transform, eval_inputs, normalize, step_seed
from .data import ClassifyData, class_texts
from .method import ClassifyMethod, method_class
from .params import DEFAULT_TEMPLATE, ClassifyConfig

log = logging.getLogger(__name__)

__all__ = ["CLASSIFY_FAMILY", "FrozenBackboneChanged", "text_class_embeddings", "build_method", "frozen_hashes",
           "evaluate", "train_classifier", "save_classifier", "load_classifier"]

CLASSIFY_FAMILY = "classify"


@torch.no_grad()
def text_class_embeddings(clip: Any, class_names: Sequence[str], template: str = DEFAULT_TEMPLATE,
                          batch: int = 256) -> torch.Tensor:
    """Normalised text features ``[C, E]`` (float32) of the class prompts, as ordinary (not inference-mode)
    tensors so they can enter the autograd graph."""
    texts = class_texts(class_names, template)
    out = [clip.encode_texts(texts[i:i + batch]).float() for i in range(0, len(texts), batch)]
    return F.normalize(torch.cat(out), dim=-1)


def _freeze(clip: Any) -> None:
    clip.eval()
    for p in clip.parameters():
        p.requires_grad_(False)


def build_method(cfg: ClassifyConfig, clip: Any, class_names: Sequence[str], *, template: str = DEFAULT_TEMPLATE,
                 seed: int = 0) -> ClassifyMethod:
    """Freeze the CLIP, embed the class prompts, then let the method add (or unfreeze) what trains."""
    _freeze(clip)
    class_emb = text_class_embeddings(clip, class_names, template)
    return method_class(cfg.method)(cfg.options, clip, class_emb, seed=seed)


def frozen_hashes(clip: Any, *, include_visual: bool = True) -> dict[str, str]:
    """sha256 of the text tower (every ``model`` entry outside ``visual.``) and of the vision tower's base weights
    (LoRA entries dropped, peft's ``.base_layer`` names folded back)."""
    sd = clip.model.state_dict()
    out = {"text": state_hash({k: v for k, v in sd.items() if not k.startswith("visual.")})}
    if include_visual:
        out["visual"] = state_hash(base_state_dict(clip.model.visual))
    return out


def _grad_check(clip: Any, method: ClassifyMethod, trainable: set[int]) -> None:
    for where, mod in (("clip", clip.model), ("method", method)):
        for n, p in mod.named_parameters():
            if p.grad is not None and id(p) not in trainable:
                raise FrozenBackboneChanged(f"frozen parameter {where}.{n} received a gradient")


@torch.no_grad()
def evaluate(method: ClassifyMethod, data: ClassifyData, *, batch_size: int = 256) -> dict[str, Any]:
    """Top-1 accuracy and mean cross-entropy on ``data`` (CLIP's evaluation preprocessing, eval mode)."""
    was = method.training
    method.eval()
    correct, loss, n = 0, 0.0, len(data)
    for i in range(0, n, batch_size):
        x = eval_inputs(method.clip, data.images[i:i + batch_size])
        y = data.labels[i:i + batch_size].to(x.device)
        logits = method(x).float()
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(-1) == y).sum())
    method.train(was)
    return {"top1": round(correct / max(1, n), 6), "loss": round(loss / max(1, n), 6), "n": n}


def save_classifier(path: str | os.PathLike, method: ClassifyMethod, config: dict[str, Any], **meta: Any) -> Path:
    return save_state_file(path, CLASSIFY_FAMILY, config, method.adapter_state_dict(), what=f"classifier {path}",
                           **meta)


def load_classifier(path: str | os.PathLike, clip: Any) -> ClassifyMethod:
    """Rebuild a trained method on ``clip`` (a fresh load of the same CLIP) from ``model.pt``."""
    from ..checkpoint import CheckpointError

    obj = load_file(path)
    if not isinstance(obj, Mapping) or obj.get("family") != CLASSIFY_FAMILY:
        raise CheckpointError(f"{path} is not a {CLASSIFY_FAMILY!r} file")
    cfg = obj["config"]
    mcls = method_class(cfg["method"])
    _freeze(clip)
    sd = obj["state_dict"]
    method = mcls(mcls.Params.model_validate(cfg["options"]), clip, sd["class_emb"], seed=int(cfg.get("seed", 0)))
    method.load_adapter_state_dict(sd, source=str(path))
    return method.eval()


def _optimizer(params: list[nn.Parameter], ts) -> torch.optim.Optimizer:
    if ts.optimizer == "sgd":
        return torch.optim.SGD(params, lr=ts.lr, momentum=ts.momentum, weight_decay=ts.weight_decay)
    return torch.optim.AdamW(params, lr=ts.lr, betas=tuple(ts.betas), weight_decay=ts.weight_decay)


def train_classifier(
    cfg: ClassifyConfig,
    *,
    clip: Any,
    train_data: ClassifyData,
    out_dir: str | os.PathLike,
    seed: int = 0,
    eval_data: Optional[Mapping[str, ClassifyData]] = None,
    template: str = DEFAULT_TEMPLATE,
    stop_after: Optional[int] = None,
    progress: bool = False,
    source: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """Train configuration ``cfg`` with seed ``seed`` on ``train_data`` (the CLIP's device); score every split of
    ``eval_data`` before and after; write model.pt, record.json and curve.csv into ``out_dir`` and return the record.
    ``stop_after`` ends the run early with the resumable state kept (what a crash leaves behind). ``finetune`` and
    ``lora`` change ``clip``'s vision tower in place: give each configuration a fresh CLIP."""
    out = Path(out_dir)
    world, main = distributed.world_size(), distributed.is_main()  # under torchrun: rank 0 writes every file
    if main:
        out.mkdir(parents=True, exist_ok=True)
    ts = cfg.train
    mcls = method_class(cfg.method)
    eval_data = dict(eval_data or {})
    seed_everything(seed)
    device = clip.device
    _freeze(clip)
    visual_params = sum(p.numel() for p in clip.model.visual.parameters())
    text_params = sum(p.numel() for n, p in clip.model.named_parameters() if not n.startswith("visual."))
    built_from = frozen_hashes(clip)
    method = build_method(cfg, clip, train_data.class_names, template=template, seed=seed)
    if not mcls.trains_backbone and frozen_hashes(clip) != built_from:
        raise FrozenBackboneChanged(f"configuration {cfg.name!r}: building the method changed the CLIP's weights")
    trainable = method.trainable_parameters()
    trainable_ids = {id(p) for _, p in trainable}
    n_trainable = sum(p.numel() for _, p in trainable)
    if mcls.trains and n_trainable == 0:
        raise RuntimeError(f"configuration {cfg.name!r}: nothing to train")
    before = frozen_hashes(clip, include_visual=not mcls.trains_backbone)

    evals: dict[str, dict[str, Any]] = {}
    if ts.eval_before and mcls.trains:
        for split, d in eval_data.items():
            evals[split] = {f"{k}_before": v for k, v in evaluate(method, d, batch_size=ts.eval_batch_size).items()
                            if k != "n"}

    N = len(train_data)
    bs = min(ts.batch_size, N)
    steps = ts.steps if mcls.trains else 0
    history: list[dict[str, Any]] = []
    train_time = 0.0
    mem_info: dict[str, Any] = {}
    ckpt = TrainCheckpoint(out / "train_state.pt", every=ts.checkpoint_every)
    if steps:
        opt = _optimizer([p for _, p in trainable], ts)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_lambda(steps, ts.warmup_steps, ts.min_lr_ratio))
        fingerprint = json.dumps({"config": cfg.to_dict(), "seed": seed, "n": N, "clip": built_from,
                                  "template": template, "source": source or {}}, sort_keys=True)
        stale = ckpt.path.exists() and load_file(ckpt.path).get("extra", {}).get("fingerprint") != fingerprint
        distributed.barrier()  # every rank has read the state file before rank 0 changes it
        if stale and main:
            log.warning("%s was written for another configuration or CLIP; starting from scratch", ckpt.path)
            ckpt.remove()
        distributed.barrier()
        state = AdapterState(method)
        start = ckpt.resume(state, opt, sched)  # every rank loads the same state
        # the global batch (every rank draws and augments it) and this rank's equal slice; one process: all of it
        shard = distributed.batch_shard(bs, f"classify.configs.{cfg.name}.train.batch_size")
        history = list(ckpt.extra.get("history", []))
        elapsed = float(ckpt.extra.get("elapsed_s", 0.0))
        last = steps if stop_after is None else min(steps, stop_after)
        size = tuple(int(s) for s in clip.image_size)
        transform = build_transform(ts.augment, size) if ts.augment.enabled else None
        log.info("%s (%s, seed %d): %d trainable parameters (%.4f%% of the vision tower), %d steps of batch %d on %s%s",
                 cfg.name, cfg.method, seed, n_trainable, 100.0 * n_trainable / visual_params, steps, bs, device,
                 f" ({world} processes of {shard.size} samples each)" if world > 1 else "")
        method.train()
        clip.eval()
        t0 = time.perf_counter()
        with PeakMemory(device) as mem:
            bar = tqdm(range(start, last), desc=f"classify {cfg.name} seed {seed}", unit="step", initial=start,
                       total=steps, disable=not progress, mininterval=5.0)
            for step in bar:
                g = torch.Generator().manual_seed(step_seed(seed, step, 1))
                idx = torch.randperm(N, generator=g)[:bs]
                images = train_data.images[idx]
                if transform is not None:
                    x = normalize(clip, augment_batch(images, ts.augment, size, seed, step, transform))
                else:
                    x = eval_inputs(clip, images)
                y = train_data.labels[idx].to(device)
                if shard.split:  # this rank's rows of the global batch (augmented whole: the same per-sample draws)
                    x, y = x[shard.rows], y[shard.rows]
                torch.manual_seed(step_seed(seed, step, 3))  # any module randomness (LoRA dropout)
                logits = method(x).float()
                loss = F.cross_entropy(logits, y)
                check_finite(loss, step + 1, f"classifier {cfg.name} seed {seed} ({out})", ckpt)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                _grad_check(clip, method, trainable_ids)
                distributed.all_reduce_grads([p for _, p in trainable])  # the global batch's gradient (no-op: 1 proc)
                if ts.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_([p for _, p in trainable], ts.grad_clip)
                opt.step()
                sched.step()
                acc = (logits.argmax(-1) == y).float().mean()
                g_loss, g_acc = distributed.mean_across([loss.detach(), acc])  # the global batch's (equal slices)
                row = {"step": step + 1, "loss": round(g_loss, 6), "acc": round(g_acc, 4),
                       "lr": opt.param_groups[0]["lr"]}
                history.append(row)
                if (step + 1) % 10 == 0:
                    bar.set_postfix(loss=f"{row['loss']:.3f}")
                if (step + 1) % ts.checkpoint_every == 0 and step + 1 < steps and main:
                    ckpt.save(step + 1, state, opt, sched, history=history, fingerprint=fingerprint,
                              elapsed_s=elapsed + time.perf_counter() - t0)
            bar.close()
        method.eval()
        train_time = elapsed + time.perf_counter() - t0
        mem_info = mem.as_dict()
        if last < steps:
            if main:
                ckpt.save(last, state, opt, sched, history=history, fingerprint=fingerprint, elapsed_s=train_time)
            distributed.barrier()  # the state is on disk before any rank returns (and may resume from it)
            return {"stopped_at": last}

    after = frozen_hashes(clip, include_visual=not mcls.trains_backbone)
    changed = sorted(k for k in before if before[k] != after[k])
    if changed:
        raise FrozenBackboneChanged(f"configuration {cfg.name!r}: the frozen {', '.join(changed)} tower changed during "
                                    f"training (sha256 before {[before[k][:12] for k in changed]}, after "
                                    f"{[after[k][:12] for k in changed]})")
    method.eval()
    for split, d in eval_data.items():
        evals.setdefault(split, {}).update(evaluate(method, d, batch_size=ts.eval_batch_size))
    tail = history[-10:]
    record: dict[str, Any] = {
        "name": cfg.name,
        "method": cfg.method,
        "seed": seed,
        "config": cfg.to_dict(),
        "template": template,
        "trainable_params": int(n_trainable),
        "vision_params": int(visual_params),
        "text_params": int(text_params),
        "trainable_pct": round(100.0 * n_trainable / visual_params, 5),
        "method_info": method.describe(),
        "steps": steps,
        "batch_size": bs,
        "train_samples": N,
        "device": str(device),
        "train_time_s": round(train_time, 2),
        "step_time_s": round(train_time / max(1, steps), 4) if steps else 0.0,
        **mem_info,
        "first_loss": history[0]["loss"] if history else None,
        "final_loss": round(sum(h["loss"] for h in tail) / len(tail), 6) if tail else None,
        "eval": evals,
        **{f"top1_{s}": e["top1"] for s, e in evals.items()},
        "frozen_verified": sorted(before),
        "frozen_sha256": before,
        "backbone_trained": mcls.trains_backbone,
        "source": source or {},
    }
    if world > 1:
        record["world_size"] = world  # absent: one process
    if main:
        save_classifier(out / "model.pt", method, {**cfg.to_dict(), "seed": seed, "template": template,
                                                   "class_names": list(train_data.class_names),
                                                   "source": source or {}},
                        trainable_params=int(n_trainable), steps=steps)
        write_curve(out / "curve.csv", history)
        write_json(out / "record.json", record)
        ckpt.remove()
    distributed.barrier()  # the files are written before any rank reads them
    log.info("%s seed %d: loss %s -> %s in %.1f s; %s", cfg.name, seed, record["first_loss"], record["final_loss"],
             train_time, ", ".join(f"top-1 {s} {e['top1']:.3f}" for s, e in evals.items()))
    return record
