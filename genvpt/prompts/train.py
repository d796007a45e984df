"""One training loop for every prompt method (mvp, prefilled, lora, finetune, mvp_t2i) on a frozen VAR.

Per step: a batch of target-domain token maps (the tokenizer's multi-scale indices), VAR's teacher-forcing input
(``idxBl_to_var_input``), teacher-forced logits with the method's prompts in place, and

    L = CE(logits, tokens) + lambda_sen * L_CLIP(I_sen, "a photo of {class}") + lambda_cap * L_CLIP(I_cap, caption)

with I_sen / I_cap decoded from soft residuals after kappa = floor(beta K) and K scales (genvpt/prompts/mvp.py).
AdamW (betas 0.9/0.95, VAR's) over the trainable parameters only, linear warm-up then cosine decay, gradient
clipping. Classes are replaced by the null class with probability ``label_drop`` (texts by the learned null text
for text-to-image), so the unconditional branch used by classifier-free guidance is tuned too. VAR runs in eval mode
(no drop-path / dropout), so the frozen network computes exactly what it computes when sampling.

Guarantees checked here, not assumed:

* the frozen parts (VAR except for fine-tuning, the VQ tokenizer, CLIP) hash bit-for-bit the same after training as
  before (sha256 of their state dicts; for LoRA the base weights under their original names);
* after every backward pass only trainable parameters hold gradients;
* batches, label drops and Gumbel noise are functions of (seed, step), so a resumed run gives the same result as an
  uninterrupted one.

Outputs in ``out_dir``: ``model.pt`` (the trained adapter state + everything needed to rebuild it), ``record.json``
(trainable parameters and their share, train time, peak memory of the training loop, losses, frozen-check hashes),
``curve.csv`` (per-step losses for DVC plots). ``train_state.pt`` holds the resumable state while training runs.
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
import torch.nn.functional as F
from tqdm import tqdm

from ..checkpoint import load_file
from ..io import atomic_path, sha256_file, write_json
from ..training import TrainCheckpoint, cosine_lambda, seed_everything, write_curve
from .memory import PeakMemory
from .mvp import (
    FramePrompt,
    PrefixPrompt,
    PromptedVAR,
    build_prompted,
    clip_contrastive_loss,
    init_prefix_from_embeddings,
    soft_fhat,
    state_hash,
)
from .params import PromptConfig
from .positions import prompt_positions

log = logging.getLogger(__name__)

__all__ = ["PROMPT_FAMILY", "TrainData", "FrozenBackboneChanged", "train_prompt", "save_prompt_file"]

PROMPT_FAMILY = "prompt"


class FrozenBackboneChanged(RuntimeError):
    """A part that must stay frozen changed during training (its state-dict hash differs)."""


class TrainData:
    """What the loop needs, in memory: token maps per scale [N, pn*pn], labels [N], class names, the sentence of
    each class and the caption of each sample (None where there is none)."""

    def __init__(self, scales: Sequence[torch.Tensor], labels: torch.Tensor, class_names: Sequence[str],
                 captions: Optional[Sequence[Optional[str]]] = None, sentence_template: str = "a photo of {class_name}",
                 sentences: Optional[Sequence[str]] = None):
        self.scales = [s.long() for s in scales]
        self.labels = labels.long()
        self.class_names = list(class_names)
        n = self.labels.shape[0]
        if any(s.shape[0] != n for s in self.scales):
            raise ValueError("every scale needs one token map per label")
        if n and int(self.labels.max()) >= len(self.class_names):
            raise ValueError(f"labels reach {int(self.labels.max())} but there are {len(self.class_names)} classes")
        self.captions = list(captions) if captions is not None else [None] * n
        if len(self.captions) != n:
            raise ValueError(f"{len(self.captions)} captions for {n} samples")
        self.sentences = (list(sentences) if sentences is not None
                          else [sentence_template.format(class_name=c) for c in self.class_names])
        if len(self.sentences) != len(self.class_names):
            raise ValueError(f"{len(self.sentences)} sentences for {len(self.class_names)} classes")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def grid(self) -> list[int]:
        return [round(s.shape[1] ** 0.5) for s in self.scales]


# ---------------------------------------------------------------------------------------------------------------


def _step_generator(seed: int, step: int, salt: int) -> torch.Generator:
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(step) * 97 + salt) % (2**63 - 1))


@torch.no_grad()
def _encode_texts(clip: Any, texts: Sequence[str], batch: int = 256) -> torch.Tensor:
    """CLIP text features as ordinary (not inference-mode) tensors, so they can enter the autograd graph."""
    out = [clip.encode_texts(list(texts[i:i + batch])).float() for i in range(0, len(texts), batch)]
    return torch.cat(out)


def _clip_logit_scale(clip: Any) -> float:
    s = clip.logit_scale
    return float(s.detach().exp() if isinstance(s, nn.Parameter) else s)


class _Adapter(nn.Module):
    """What a training checkpoint stores: the trainable tensors only (not the frozen backbone)."""

    def __init__(self, model: PromptedVAR):
        super().__init__()
        self._model = [model]

    def state_dict(self, *args, **kwargs):  # type: ignore[override]
        return self._model[0].adapter_state_dict()

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # type: ignore[override]
        self._model[0].load_adapter_state_dict(state_dict, source="training checkpoint")


def _frozen_hashes(model: PromptedVAR, tokenizer: nn.Module, clip: Optional[nn.Module], method: str) -> dict[str, str]:
    out = {"tokenizer": state_hash(tokenizer)}
    if method != "finetune":
        out["var"] = state_hash(model.var)
    if clip is not None:
        out["clip"] = state_hash(clip)
    return out


def _grad_check(model: PromptedVAR, trainable: set[int], tokenizer: nn.Module, clip: Optional[nn.Module]) -> None:
    for mod_name, mod in (("model", model), ("tokenizer", tokenizer), ("clip", clip)):
        if mod is None:
            continue
        for n, p in mod.named_parameters():
            if p.grad is not None and id(p) not in trainable:
                raise FrozenBackboneChanged(f"frozen parameter {mod_name}.{n} received a gradient")


@torch.no_grad()
def _val_ce(model: PromptedVAR, tokenizer: nn.Module, data: TrainData, sent_emb: Optional[torch.Tensor],
            device: torch.device, batch: int = 256) -> float:
    """Mean token cross-entropy of the (prompted) model on held-out tokens; classes are never dropped
    (text-to-image: conditioned on the class sentences)."""
    total, n = 0.0, 0
    for i in range(0, len(data), batch):
        gt = [s[i:i + batch].to(device) for s in data.scales]
        labels = data.labels[i:i + batch].to(device)
        x = tokenizer.idxBl_to_var_input(gt)
        if model.text is not None:
            logits = model(None, x, cond_embeds=model.condition(sent_emb[labels]))
        else:
            logits = model(labels, x)
        gt_BL = torch.cat(gt, dim=1)
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), gt_BL.reshape(-1), reduction="sum").item()
        n += gt_BL.numel()
    return round(total / max(1, n), 5)


def save_prompt_file(path: str | os.PathLike, model: PromptedVAR, config: dict[str, Any], **meta: Any) -> Path:
    """The trained adapter as a genvpt model file (family ``prompt``), readable by ``load_model_file``."""
    payload = {"family": PROMPT_FAMILY, "config": dict(config), "state_dict": model.adapter_state_dict(),
               "meta": dict(meta)}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def train_prompt(
    name: str,
    cfg: PromptConfig,
    *,
    var: nn.Module,
    tokenizer: nn.Module,
    data: TrainData,
    out_dir: str | os.PathLike,
    clip: Optional[Any] = None,
    device: torch.device | str = "cpu",
    source: Optional[dict[str, Any]] = None,
    stop_after: Optional[int] = None,
    progress: bool = True,
    val_data: Optional[TrainData] = None,
) -> dict[str, Any]:
    """Train configuration ``name`` and write model.pt, record.json, curve.csv into ``out_dir``; return the record.

    ``var`` / ``tokenizer`` / ``clip`` are loaded models (moved to ``device`` here). ``source`` (paths, file hashes)
    is stored with the result so the sampler can rebuild the backbone. ``stop_after`` ends the run early after that
    many steps with the resumable state kept (what a crash leaves behind; used by the resume test). ``val_data``
    (held-out target tokens): the model's token cross-entropy on it before and after training goes in the record."""
    device = torch.device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    var = var.to(device)
    tokenizer = tokenizer.to(device).eval()
    for p in tokenizer.parameters():
        p.requires_grad_(False)
    patch_nums = tuple(int(p) for p in var.patch_nums)
    if tuple(tokenizer.patch_nums) != patch_nums:
        raise ValueError(f"VAR's scales {patch_nums} differ from the tokenizer's {tuple(tokenizer.patch_nums)}")
    if tuple(data.grid) != patch_nums:
        raise ValueError(f"the token maps have scales {tuple(data.grid)}, VAR has {patch_nums}: tokens from another tokenizer?")
    if len(data.class_names) > var.num_classes:
        raise ValueError(f"the target has {len(data.class_names)} classes, VAR knows only {var.num_classes}")
    K = len(patch_nums)
    kappa = cfg.kappa(K)
    needs_clip = cfg.lambda_sen > 0 or cfg.lambda_cap > 0 or cfg.text_to_image
    if needs_clip and clip is None:
        raise ValueError(f"config {name!r} needs CLIP (lambda_sen/lambda_cap > 0 or text-to-image) but none was given")
    if clip is not None:
        clip = clip.to(device).eval()
        for p in clip.parameters():
            p.requires_grad_(False)
    has_caps = all(c for c in data.captions)
    if (cfg.lambda_cap > 0 or (cfg.text_to_image and cfg.t2i_text == "caption")) and not has_caps:
        missing = sum(1 for c in data.captions if not c)
        raise ValueError(f"config {name!r} uses captions but {missing} of {len(data)} training samples have none "
                         f"(run the caption stage, or set lambda_cap: 0)")

    backbone_params = sum(p.numel() for p in var.parameters())  # before adapters are added
    hashes_before_var = state_hash(var)
    clip_dim = None
    sent_emb = cap_emb = cap_ids = None
    if clip is not None:
        sent_emb = _encode_texts(clip, data.sentences).to(device)  # [num_classes, D]
        clip_dim = sent_emb.shape[1]
        if has_caps:
            uniq = sorted(set(data.captions))
            index = {c: i for i, c in enumerate(uniq)}
            cap_ids = torch.tensor([index[c] for c in data.captions], dtype=torch.long)
            cap_emb = _encode_texts(clip, uniq).to(device)
    model = build_prompted(var, cfg, clip_dim=clip_dim)
    model.to(device)
    if model.text is not None and cfg.t2i_init == "classes":
        null_text = _encode_texts(clip, [""]).to(device)
        labels_all = torch.arange(len(data.class_names), device=device)
        with torch.no_grad():
            ce = var.class_emb(labels_all)
            ne = var.class_emb(torch.tensor([var.num_classes], device=device))
        resid = model.text.to("cpu").init_from_classes(sent_emb.cpu(), ce.cpu(), null_text.cpu(), ne.cpu())
        model.text.to(device)
        log.info("text projection initialised from the class sentences (relative residual %.3f)", resid)

    if cfg.method == "prefilled" and cfg.prefix_init == "embeddings":
        g0 = _step_generator(cfg.seed, 0, 3)
        first = torch.randperm(len(data), generator=g0)[: min(len(data), 256)]
        with torch.no_grad():
            x0 = tokenizer.idxBl_to_var_input([s[first].to(device) for s in data.scales])
        positions = prompt_positions(patch_nums, cfg.tau, cfg.positions, first_scale=cfg.first_scale,
                                     seed=cfg.positions_seed)
        init_prefix_from_embeddings(model, x0, positions)
    val_ce_before = _val_ce(model, tokenizer, val_data, sent_emb, device) if val_data is not None else None
    trainable = model.trainable_named_parameters()
    trainable_ids = {id(p) for _, p in trainable}
    for mod in (model, tokenizer, clip):  # stale gradients from elsewhere would fail the per-step check
        for p in (mod.parameters() if mod is not None else ()):
            p.grad = None
    n_trainable = sum(p.numel() for _, p in trainable)
    if n_trainable == 0:
        raise RuntimeError(f"config {name!r}: nothing to train")
    before = _frozen_hashes(model, tokenizer, clip, cfg.method)
    if cfg.method != "finetune" and before["var"] != hashes_before_var:
        raise FrozenBackboneChanged("building the method changed the backbone's weights")

    opt = torch.optim.AdamW([p for _, p in trainable], lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_lambda(cfg.steps, cfg.warmup_steps, cfg.min_lr_ratio))
    fingerprint = json.dumps({"name": name, "config": cfg.model_dump(mode="json"), "n": len(data),
                              "var": hashes_before_var, "source": source or {}}, sort_keys=True)
    ckpt = TrainCheckpoint(out / "train_state.pt", every=cfg.checkpoint_every)
    if ckpt.path.exists() and load_file(ckpt.path).get("extra", {}).get("fingerprint") != fingerprint:
        log.warning("%s was written for another configuration or backbone; starting from scratch", ckpt.path)
        ckpt.remove()
    adapter = _Adapter(model)
    start = ckpt.resume(adapter, opt, sched)
    history: list[dict[str, Any]] = list(ckpt.extra.get("history", []))
    elapsed = float(ckpt.extra.get("elapsed_s", 0.0))

    N = len(data)
    bs = min(cfg.batch_size, N)
    scales_dev = [s.to(device) for s in data.scales]
    labels_dev = data.labels.to(device)
    null = var.num_classes
    logit_scale = _clip_logit_scale(clip) if clip is not None else 1.0
    last = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    log.info("%s (%s): %d trainable of %d backbone parameters (%.4f%%), %d steps of batch %d on %s", name, cfg.method,
             n_trainable, backbone_params, 100.0 * n_trainable / backbone_params, cfg.steps, bs, device)

    t0 = time.perf_counter()
    with PeakMemory(device) as mem:
        bar = tqdm(range(start, last), desc=f"train_prompt {name}", unit="step", initial=start, total=cfg.steps,
                   disable=not progress, mininterval=5.0)
        for step in bar:
            g = _step_generator(cfg.seed, step, 1)
            idx = torch.randperm(N, generator=g)[:bs].to(device)
            gt = [s[idx] for s in scales_dev]
            labels = labels_dev[idx]
            drop = (torch.rand(bs, generator=g) < cfg.label_drop).to(device)
            with torch.no_grad():
                x_BLCv = tokenizer.idxBl_to_var_input(gt)
            gt_BL = torch.cat(gt, dim=1)
            cond = None
            if model.text is not None:
                temb = cap_emb[cap_ids.to(device)[idx]] if cfg.t2i_text == "caption" else sent_emb[labels]
                cond = model.condition(temb, drop)
                logits = model(None, x_BLCv, cond_embeds=cond)
            else:
                logits = model(labels.masked_fill(drop, null), x_BLCv)
            ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), gt_BL.reshape(-1))
            loss = ce
            l_sen = l_cap = torch.zeros((), device=device)
            if cfg.lambda_sen > 0 or cfg.lambda_cap > 0:
                cb = min(bs, cfg.clip_batch_size or bs)
                f_sen, f_cap = soft_fhat(logits[:cb], tokenizer, [kappa, K], mode=cfg.soft_codes,
                                         temperature=cfg.code_temperature, generator=_step_generator(cfg.seed, step, 2))
                if cfg.lambda_sen > 0:
                    img_sen = tokenizer.fhat_to_img(f_sen)
                    l_sen = clip_contrastive_loss(clip.encode_images(img_sen), sent_emb, labels[:cb], logit_scale)
                    loss = loss + cfg.lambda_sen * l_sen
                if cfg.lambda_cap > 0:
                    img_cap = tokenizer.fhat_to_img(f_cap)
                    ids = cap_ids.to(device)[idx[:cb]]
                    present, inv = torch.unique(ids, return_inverse=True)
                    l_cap = clip_contrastive_loss(clip.encode_images(img_cap), cap_emb[present], inv, logit_scale)
                    loss = loss + cfg.lambda_cap * l_cap
            opt.zero_grad(set_to_none=True)
            loss.backward()
            _grad_check(model, trainable_ids, tokenizer, clip)
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_([p for _, p in trainable], cfg.grad_clip)
            opt.step()
            sched.step()
            history.append({"step": step + 1, "loss": round(loss.item(), 5), "ce": round(ce.item(), 5),
                            "clip_sen": round(l_sen.item(), 5), "clip_cap": round(l_cap.item(), 5),
                            "lr": opt.param_groups[0]["lr"]})
            if (step + 1) % 10 == 0:
                bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", ce=f"{history[-1]['ce']:.3f}")
            if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
                ckpt.save(step + 1, adapter, opt, sched, history=history, fingerprint=fingerprint,
                          elapsed_s=elapsed + time.perf_counter() - t0)
        bar.close()
    train_time = elapsed + time.perf_counter() - t0
    if last < cfg.steps:  # stopped early on purpose: leave the resumable state, write nothing final
        ckpt.save(last, adapter, opt, sched, history=history, fingerprint=fingerprint, elapsed_s=train_time)
        return {"stopped_at": last}

    after = _frozen_hashes(model, tokenizer, clip, cfg.method)
    changed = sorted(k for k in before if before[k] != after[k])
    if changed:
        raise FrozenBackboneChanged(f"config {name!r}: the frozen {', '.join(changed)} changed during training "
                                    f"(state-dict sha256 before {[before[k][:12] for k in changed]}, "
                                    f"after {[after[k][:12] for k in changed]})")

    val_ce_after = _val_ce(model, tokenizer, val_data, sent_emb, device) if val_data is not None else None
    prompt_tokens = model.prompt.num_tokens if isinstance(model.prompt, (FramePrompt, PrefixPrompt)) else 0
    per_scale = model.prompt.counts if isinstance(model.prompt, FramePrompt) else None
    tail = history[-10:]

    def mean(key: str) -> Optional[float]:
        return round(sum(h[key] for h in tail) / len(tail), 5) if tail else None

    record: dict[str, Any] = {
        "name": name,
        "method": cfg.method,
        "config": cfg.model_dump(mode="json"),
        "trainable_params": int(n_trainable),
        "backbone_params": int(backbone_params),
        "trainable_pct": round(100.0 * n_trainable / backbone_params, 5),
        "prompt_tokens": prompt_tokens,
        "prompt_tokens_per_scale": per_scale,
        "sequence_length": int(var.L) + (prompt_tokens if cfg.method == "prefilled" else 0),
        "patch_nums": list(patch_nums),
        "kappa": kappa,
        "lora_modules": len(model.lora_modules),
        "steps": cfg.steps,
        "batch_size": bs,
        "train_samples": N,
        "device": str(device),
        "train_time_s": round(train_time, 2),
        "step_time_s": round(train_time / max(1, cfg.steps), 4),
        **mem.as_dict(),
        "first_loss": history[0]["loss"] if history else None,
        "first_ce": history[0]["ce"] if history else None,
        "final_loss": mean("loss"),
        "final_ce": mean("ce"),
        "final_clip_sen": mean("clip_sen"),
        "final_clip_cap": mean("clip_cap"),
        "val_samples": len(val_data) if val_data is not None else 0,
        "val_ce_before": val_ce_before,
        "val_ce_after": val_ce_after,
        "frozen_verified": sorted(before),
        "frozen_sha256": before,
        "backbone_trained": cfg.method == "finetune",
        "source": source or {},
    }
    config = {
        "name": name,
        "method": cfg.method,
        "prompt_config": cfg.model_dump(mode="json"),
        "patch_nums": list(patch_nums),
        "C": int(var.C),
        "num_classes": int(var.num_classes),
        "class_names": data.class_names,
        "sentences": data.sentences,
        "clip_dim": clip_dim,
        "lora_modules": model.lora_modules,
        "source": source or {},
    }
    save_prompt_file(out / "model.pt", model, config, trainable_params=int(n_trainable), steps=cfg.steps)
    write_curve(out / "curve.csv", history)
    write_json(out / "record.json", record)
    ckpt.remove()
    log.info("%s: loss %.4f -> %.4f (CE %.4f -> %.4f) in %.1f s, peak memory %.0f MiB (+%.0f MiB in the loop)",
             name, record["first_loss"], record["final_loss"], record["first_ce"], record["final_ce"], train_time,
             mem.peak_mb, mem.delta_mb)
    return record


def file_source(generator: str | os.PathLike, tokenizer: str | os.PathLike, clip: Optional[str] = None) -> dict[str, Any]:
    """Where the backbone came from (paths as given, and their sha256) for the result files."""
    src: dict[str, Any] = {"generator": str(generator), "tokenizer": str(tokenizer),
                           "generator_sha256": sha256_file(generator), "tokenizer_sha256": sha256_file(tokenizer)}
    if clip is not None:
        src["clip"] = str(clip)
    return src
