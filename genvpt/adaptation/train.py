"""One training loop for every adaptation method on every backbone.

Per step: a batch of target token data (the backbone cuts it: ``Backbone.batch``), conditions dropped to the null
class with probability ``label_drop`` (guidance's unconditional branch is tuned too), the method's injections, the
backbone's training loss (next-token CE for AR, masked-token CE for MaskGIT, teacher-forced CE for VAR) plus the
method's extra terms (MVP's CLIP terms). AdamW over the trainable parameters only, linear warm-up then cosine decay,
gradient clipping. The backbone runs in eval mode (no dropout / drop-path), so the frozen network computes exactly
what it computes when sampling.

Checked here, not assumed:

* the frozen parts (the generator unless the method trains it, the tokenizer, CLIP) hash bit-for-bit the same after
  training as before (sha256 of their state dicts; for LoRA the base weights under their original names);
* after every backward pass only trainable parameters hold gradients;
* batches, drops and random draws are functions of (seed, step), so a resumed run equals an uninterrupted one.

Outputs: ``model.pt`` (family ``adapted``: configuration, method info, backbone source paths and hashes, the trained
state), ``record.json`` (trainable parameters and their share, times, peak memory, losses, frozen-check hashes),
``curve.csv`` (per-step losses). A resumable state lives next to them while training runs.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn
from tqdm import tqdm

from .. import distributed
from ..backbones.base import Backbone
from ..checkpoint import load_file, save_state_file
from ..io import read_json, sha256_file, write_json
from ..training import (AdapterState, FrozenBackboneChanged, TrainCheckpoint, check_finite, cosine_lambda,
                        seed_everything, write_curve)
from .data import TrainData
from .memory import PeakMemory
from .method import Method, MethodInfo, method_class
from .params import AdaptationConfig
from .semantic import state_hash

log = logging.getLogger(__name__)

SEED_FILES = ("model.pt", "record.json", "curve.csv")  # what one training seed leaves in its folder
DONE_FILE = "done.json"  # written last, with the run's fingerprint: a rerun keeps a finished seed

__all__ = ["ADAPTED_FAMILY", "FrozenBackboneChanged", "TrainContext", "build_method", "train_adaptation",
           "save_adapted", "file_source"]

ADAPTED_FAMILY = "adapted"


def _step_generator(seed: int, step: int, salt: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed((int(seed) * 1_000_003 + int(step) * 97 + salt) % (2**63 - 1))
    return g


class TrainContext:
    """What methods may read while training: the data, CLIP and the texts' CLIP embeddings."""

    def __init__(self, backbone: Backbone, data: TrainData, clip: Any, device: torch.device, seed: int,
                 needs_captions: bool):
        self.backbone, self.data, self.clip, self.device, self.seed = backbone, data, clip, device, seed
        self.sentence_emb = self.caption_emb = self.caption_ids = None
        self.logit_scale = 1.0
        if clip is not None:
            s = clip.logit_scale
            self.logit_scale = float(s.detach().exp() if isinstance(s, nn.Parameter) else s)
            self.sentence_emb = self.encode_texts(data.sentences).to(device)
            if needs_captions:
                missing = sum(1 for c in data.captions if not c)
                if missing:
                    raise ValueError(f"this configuration uses captions but {missing} of {len(data)} training samples "
                                     f"have none (run the caption stage, or set lambda_cap: 0)")
                uniq = sorted(set(data.captions))
                index = {c: i for i, c in enumerate(uniq)}
                self.caption_ids = torch.tensor([index[c] for c in data.captions], dtype=torch.long)
                self.caption_emb = self.encode_texts(uniq).to(device)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], batch: int = 256) -> torch.Tensor:
        """CLIP text features as ordinary (not inference-mode) tensors, so they can enter the autograd graph."""
        out = [self.clip.encode_texts(list(texts[i:i + batch])).float() for i in range(0, len(texts), batch)]
        return torch.cat(out)

    def sample_batch(self, n: int) -> Any:
        """A seeded batch of up to ``n`` training samples, as the backbone reads them."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + 3)
        idx = torch.randperm(len(self.data), generator=g)[: min(n, len(self.data))]
        return self.backbone.batch([s.to(self.device) for s in self.data.scales], idx.to(self.device))


def build_method(cfg: AdaptationConfig, backbone: Backbone, info: MethodInfo, seed: int) -> Method:
    """Freeze the backbone, then let the method add (or unfreeze) what trains."""
    backbone.generator.eval()
    for p in backbone.generator.parameters():
        p.requires_grad_(False)
    return method_class(cfg.method)(cfg.options, backbone, info, seed=seed)


def _frozen_hashes(backbone: Backbone, clip: Optional[nn.Module], trains_backbone: bool) -> dict[str, str]:
    out = {"tokenizer": state_hash(backbone.tokenizer)}
    if not trains_backbone:
        out["generator"] = state_hash(backbone.generator)
    if clip is not None:
        out["clip"] = state_hash(clip)
    return out


def _grad_check(method: Method, trainable: set[int], backbone: Backbone, clip: Optional[nn.Module]) -> None:
    for mod_name, mod in (("method", method), ("generator", backbone.generator), ("tokenizer", backbone.tokenizer),
                          ("clip", clip)):
        if mod is None:
            continue
        for n, p in mod.named_parameters():
            if p.grad is not None and id(p) not in trainable:
                raise FrozenBackboneChanged(f"frozen parameter {mod_name}.{n} received a gradient")


@torch.no_grad()
def _val_loss(method: Method, backbone: Backbone, data: TrainData, device: torch.device, seed: int,
              batch: int = 256) -> float:
    """Mean training loss of the adapted model on held-out tokens (no condition drop; masks drawn from a fixed seed)."""
    was = method.training
    method.eval()
    total, n = 0.0, 0
    scales = [s.to(device) for s in data.scales]
    for i in range(0, len(data), batch):
        idx = torch.arange(i, min(i + batch, len(data)), device=device)
        labels = data.labels[idx.cpu()].to(device)
        b = backbone.batch(scales, idx)
        g = _step_generator(seed, i, 7, device)
        loss, _ = backbone.loss(b, labels if not method.replaces_condition else None,
                                _val_injections(method, labels, idx), generator=g)
        total += float(loss) * len(idx)
        n += len(idx)
    method.train(was)
    return round(total / max(1, n), 5)


def _val_injections(method: Method, labels: torch.Tensor, idx: torch.Tensor):
    if getattr(method.params, "condition", None) == "instance":
        return method.sampling_injections(labels)  # held-out images have no instance prompt of their own
    return method.injections(labels, idx=idx, drop=torch.zeros_like(labels, dtype=torch.bool))


def save_adapted(path: str | os.PathLike, method: Method, config: dict[str, Any], **meta: Any) -> Path:
    return save_state_file(path, ADAPTED_FAMILY, config, method.adapter_state_dict(), what=f"adapted model {path}",
                           **meta)


def file_source(generator: str | os.PathLike, tokenizer: str | os.PathLike, clip: Optional[str] = None,
                **hints: Any) -> dict[str, Any]:
    """Where the backbone came from (paths as given, their sha256, and the loading hints an official file needs,
    e.g. ``n_head``) for the result files."""
    src: dict[str, Any] = {"generator": str(generator), "tokenizer": str(tokenizer),
                           "generator_sha256": sha256_file(generator), "tokenizer_sha256": sha256_file(tokenizer),
                           "hints": dict(hints)}
    if clip is not None:
        src["clip"] = str(clip)
    return src


def train_adaptation(
    cfg: AdaptationConfig,
    *,
    backbone: Backbone,
    data: TrainData,
    out_dir: str | os.PathLike,
    seed: int = 0,
    clip: Optional[Any] = None,
    device: torch.device | str = "cpu",
    source: Optional[dict[str, Any]] = None,
    stop_after: Optional[int] = None,
    progress: bool = True,
    val_data: Optional[TrainData] = None,
) -> dict[str, Any]:
    """Train configuration ``cfg`` with training seed ``seed``; write model.pt, record.json and curve.csv into
    ``out_dir`` and return the record. ``stop_after`` ends the run early with the resumable state kept (what a
    crash leaves behind). ``val_data``: the loss on held-out tokens before and after training goes in the record."""
    device = torch.device(device)
    out = Path(out_dir)
    world, main = distributed.world_size(), distributed.is_main()  # under torchrun: rank 0 writes every file
    if main:
        out.mkdir(parents=True, exist_ok=True)
    ts = cfg.train
    mcls = method_class(cfg.method)
    seed_everything(seed)
    backbone.to(device)
    for p in backbone.tokenizer.parameters():
        p.requires_grad_(False)
    backbone.check_tokens(data.scales)
    if len(data.class_names) > backbone.num_classes and not mcls.trains_backbone:
        log.info("the target has %d classes, the backbone knows %d", len(data.class_names), backbone.num_classes)
    if mcls.needs_clip(cfg.options) and clip is None:
        raise ValueError(f"configuration {cfg.name!r} ({cfg.method}) needs CLIP but none was given")
    if clip is not None:
        clip = clip.to(device).eval()
        for p in clip.parameters():
            p.requires_grad_(False)
    backbone_params = sum(p.numel() for p in backbone.generator.parameters())
    hash_before = state_hash(backbone.generator)
    info = MethodInfo(num_classes=len(data.class_names), class_names=list(data.class_names),
                      sentences=list(data.sentences), instance_labels=data.labels.tolist(),
                      clip_dim=None)
    ctx = TrainContext(backbone, data, clip, device, seed, mcls.needs_captions(cfg.options))
    if ctx.sentence_emb is not None:
        info.clip_dim = int(ctx.sentence_emb.shape[1])
    method = build_method(cfg, backbone, info, seed)
    if not method.replaces_condition and len(data.class_names) > backbone.num_classes:
        raise ValueError(f"the target has {len(data.class_names)} classes but the {backbone.name} backbone knows "
                         f"{backbone.num_classes}; use a method that conditions the backbone itself (vpt, mvp_t2i)")
    needs_null = ts.label_drop > 0 and not method.replaces_condition
    if needs_null and backbone.null_label < 0:
        raise ValueError(f"label_drop {ts.label_drop} needs a null class, which this {backbone.name} checkpoint does "
                         f"not have; set train.label_drop: 0 for configuration {cfg.name!r}")
    if not mcls.trains_backbone and state_hash(backbone.generator) != hash_before:
        raise FrozenBackboneChanged("building the method changed the backbone's weights")
    method.setup(ctx)
    val_before = _val_loss(method, backbone, val_data, device, seed) if val_data is not None else None
    trainable = method.trainable_parameters()
    trainable_ids = {id(p) for _, p in trainable}
    for mod in (method, backbone.generator, backbone.tokenizer, clip):
        for p in (mod.parameters() if mod is not None else ()):
            p.grad = None
    n_trainable = sum(p.numel() for _, p in trainable)
    if n_trainable == 0:
        raise RuntimeError(f"configuration {cfg.name!r}: nothing to train")
    before = _frozen_hashes(backbone, clip, mcls.trains_backbone)

    opt = torch.optim.AdamW([p for _, p in trainable], lr=ts.lr, betas=tuple(ts.betas), weight_decay=ts.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_lambda(ts.steps, ts.warmup_steps, ts.min_lr_ratio))
    fingerprint = json.dumps({"config": cfg.to_dict(), "seed": seed, "n": len(data), "generator": hash_before,
                              "source": source or {}}, sort_keys=True)
    done = out / DONE_FILE
    if done.is_file() and all((out / f).is_file() for f in SEED_FILES):
        if read_json(done).get("fingerprint") == fingerprint:
            log.info("%s seed %d: already trained in %s (same configuration, data and backbone); kept",
                     cfg.name, seed, out)
            return read_json(out / "record.json")
        log.warning("%s was written for another configuration or backbone; training again", out)
    ckpt = TrainCheckpoint(out / "train_state.pt", every=ts.checkpoint_every)
    stale = ckpt.path.exists() and load_file(ckpt.path).get("extra", {}).get("fingerprint") != fingerprint
    distributed.barrier()  # every rank has read the files before rank 0 changes them
    if main:
        done.unlink(missing_ok=True)
        if stale:
            log.warning("%s was written for another configuration or backbone; starting from scratch", ckpt.path)
            ckpt.remove()
    distributed.barrier()
    state = AdapterState(method)
    start = ckpt.resume(state, opt, sched)  # every rank loads the same state
    history: list[dict[str, Any]] = list(ckpt.extra.get("history", []))
    elapsed = float(ckpt.extra.get("elapsed_s", 0.0))

    N = len(data)
    bs = min(ts.batch_size, N)
    # the global batch (every rank draws it) and this rank's equal slice of it; one process: the whole batch
    shard = distributed.batch_shard(bs, f"adaptation.configs.{cfg.name}.train.batch_size")
    train_params = [p for _, p in trainable]
    if world > 1 and mcls.needs_clip(cfg.options):
        log.warning("%s: the CLIP terms are computed over each process's slice of the batch (its own negatives): "
                    "%d processes agree with one in the token loss, the CLIP terms in expectation", cfg.name, world)
    scales = [s.to(device) for s in data.scales]
    labels_all = data.labels.to(device)
    null = backbone.null_label
    last = ts.steps if stop_after is None else min(ts.steps, stop_after)
    log.info("%s (%s on %s, seed %d): %d trainable of %d backbone parameters (%.4f%%), %d steps of batch %d on %s%s",
             cfg.name, cfg.method, cfg.backbone, seed, n_trainable, backbone_params,
             100.0 * n_trainable / backbone_params, ts.steps, bs, device,
             f" ({world} processes of {shard.size} samples each)" if world > 1 else "")
    method.train()
    t0 = time.perf_counter()
    with PeakMemory(device) as mem:
        bar = tqdm(range(start, last), desc=f"adapt {cfg.name} seed {seed}", unit="step", initial=start,
                   total=ts.steps, disable=not (progress and main), mininterval=5.0)
        for step in bar:
            g = _step_generator(seed, step, 1, torch.device("cpu"))
            idx = torch.randperm(N, generator=g)[:bs].to(device)
            drop = (torch.rand(bs, generator=g) < ts.label_drop).to(device)
            if shard.split:  # this rank's rows of the global batch drawn above
                idx, drop = idx[shard.rows], drop[shard.rows]
            labels = labels_all[idx]
            fed = labels.masked_fill(drop, null) if null >= 0 else labels
            torch.manual_seed(seed * 1_000_003 + step)  # prompt dropout and other module randomness
            gd = _step_generator(seed, step, 2, device)
            with shard:  # per-sample draws (masks, prompt dropout) are the global batch's rows
                inj = method.injections(fed, idx=idx, drop=drop)
                loss, logits = backbone.loss(backbone.batch(scales, idx), None if method.replaces_condition else fed,
                                             inj, generator=gd)
            terms = method.extra_losses(ctx, logits=logits, labels=labels, idx=idx, drop=drop, generator=gd)
            total = loss + sum(terms.values()) if terms else loss
            # the global batch's losses (the mean of the ranks' equal slices, the same on every rank; one process:
            # the values themselves)
            names = sorted(terms)
            vals = distributed.mean_across([total, loss, *(terms[k] for k in names)])
            check_finite(vals[0], step + 1, f"adaptation {cfg.name} seed {seed} ({out})", ckpt)
            opt.zero_grad(set_to_none=True)
            total.backward()
            _grad_check(method, trainable_ids, backbone, clip)
            distributed.all_reduce_grads(train_params)  # the global batch's gradient (no-op in one process)
            if ts.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_([p for _, p in trainable], ts.grad_clip)
            opt.step()
            sched.step()
            row = {"step": step + 1, "loss": round(vals[0], 5), "task_loss": round(vals[1], 5)}
            row.update({k: round(v, 5) for k, v in zip(names, vals[2:])})
            row["lr"] = opt.param_groups[0]["lr"]
            history.append(row)
            if (step + 1) % 10 == 0:
                bar.set_postfix(loss=f"{row['loss']:.3f}")
            if (step + 1) % ts.checkpoint_every == 0 and step + 1 < ts.steps and main:
                ckpt.save(step + 1, state, opt, sched, history=history, fingerprint=fingerprint,
                          elapsed_s=elapsed + time.perf_counter() - t0)
        bar.close()
    method.eval()
    train_time = elapsed + time.perf_counter() - t0
    if last < ts.steps:
        if main:
            ckpt.save(last, state, opt, sched, history=history, fingerprint=fingerprint, elapsed_s=train_time)
        distributed.barrier()  # the state is on disk before any rank returns (and may resume from it)
        return {"stopped_at": last}

    after = _frozen_hashes(backbone, clip, mcls.trains_backbone)
    changed = sorted(k for k in before if before[k] != after[k])
    if changed:
        raise FrozenBackboneChanged(f"configuration {cfg.name!r}: the frozen {', '.join(changed)} changed during "
                                    f"training (sha256 before {[before[k][:12] for k in changed]}, after "
                                    f"{[after[k][:12] for k in changed]})")
    val_after = _val_loss(method, backbone, val_data, device, seed) if val_data is not None else None
    tail = history[-10:]

    def mean(key: str) -> Optional[float]:
        vals = [h[key] for h in tail if key in h]
        return round(sum(vals) / len(vals), 5) if vals else None

    extra_keys = sorted({k for h in history for k in h} - {"step", "loss", "task_loss", "lr"})
    record: dict[str, Any] = {
        "name": cfg.name,
        "backbone": cfg.backbone,
        "method": cfg.method,
        "seed": seed,
        "config": cfg.to_dict(),
        "trainable_params": int(n_trainable),
        "backbone_params": int(backbone_params),
        "trainable_pct": round(100.0 * n_trainable / backbone_params, 5),
        "steps": ts.steps,
        "batch_size": bs,
        "train_samples": N,
        "device": str(device),
        "train_time_s": round(train_time, 2),
        "step_time_s": round(train_time / max(1, ts.steps), 4),
        **mem.as_dict(),
        "first_loss": history[0]["loss"] if history else None,
        "first_task_loss": history[0]["task_loss"] if history else None,
        "final_loss": mean("loss"),
        "final_task_loss": mean("task_loss"),
        **{f"final_{k}": mean(k) for k in extra_keys},
        "val_samples": len(val_data) if val_data is not None else 0,
        "val_loss_before": val_before,
        "val_loss_after": val_after,
        "frozen_verified": sorted(before),
        "frozen_sha256": before,
        "backbone_trained": mcls.trains_backbone,
        "source": source or {},
    }
    if world > 1:
        record["world_size"] = world  # absent: one process
    if not main:
        return record
    config = {**cfg.to_dict(), "seed": seed, "info": info.to_dict(), "source": source or {}}
    save_adapted(out / "model.pt", method, config, trainable_params=int(n_trainable), steps=ts.steps)
    cols = ["step", "loss", "task_loss", *extra_keys, "lr"]
    write_curve(out / "curve.csv", [{k: h.get(k, 0.0) for k in cols} for h in history])
    write_json(out / "record.json", record)
    write_json(done, {"fingerprint": fingerprint})  # last: the seed's files are complete
    ckpt.remove()
    log.info("%s seed %d: loss %.4f -> %.4f in %.1f s, peak memory %.0f MiB", cfg.name, seed, record["first_loss"],
             record["final_loss"], train_time, mem.peak_mb)
    return record
