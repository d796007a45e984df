"""Pretraining of the embedded default's tiny CLIP (the ``pretrain_clip`` stage).

A real CLIP is pretrained on web-scale image/text pairs; the embedded default trains a tiny open_clip model
(genvpt/clip/configs/genvpt-tiny-vit.json, 32 px) on the *source* domain only:

* open_clip's ``ClipLoss`` (symmetric InfoNCE) on image / ground-truth caption pairs;
* plus ``class_loss_weight`` x cross-entropy of each image against the class prompts of all classes (one template
  drawn per class and step from ``clip.train.templates``). This is the contrastive loss on the "a photo of
  {class_name}" texts with the duplicates in a batch merged into one target, so zero-shot class prompts work;
* a texture augmentation stands in for the variety of web images: with probability ``texture_prob`` an image's
  plain background is replaced by a random pattern (stripes at any angle, checks, dots, a gradient, in a shade of
  the background colour) and the pattern's word is put into its caption ("on a striped red background").
  No target-domain image is used for training; the target's validation split is only evaluated.

Resumable (``TrainCheckpoint`` every ``checkpoint_every`` steps; batches are a function of (seed, step), so a
resumed run continues exactly). Outputs: ``model.pt`` (``save_clip``), ``metrics.json`` (zero-shot accuracy on the
source and target val splits, caption retrieval, time), ``loss.csv``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..checkpoint import load_file
from ..datasets.shards import SplitData, load_split
from ..io import write_json
from ..training import (TrainCheckpoint, check_finite, cosine_lambda, count_parameters, peak_memory_mb,
                        seed_everything, write_curve)
from .model import ClipModel, build_clip, is_own_config, load_clip, resolve_device, save_clip
from .params import ClipParams

log = logging.getLogger(__name__)

__all__ = ["TEXTURE_WORDS", "add_textures", "pretrain_clip", "import_clip", "evaluate_clip", "caption_retrieval_top1"]

TEXTURE_WORDS = ("striped", "checkered", "dotted", "gradient")
_BACKGROUND_RE = re.compile(r" on an? (\w+) background$")
LOGIT_SCALE_MAX = math.log(100.0)


# ---------------------------------------------------------------------------------------------------------------
_MIRROR_X = {"left": "right", "right": "left"}
_MIRROR_Y = {"upper": "lower", "lower": "upper", "top": "bottom", "bottom": "top"}
_MIRROR_X_RE = re.compile(r"\b(left|right)\b")
_MIRROR_Y_RE = re.compile(r"\b(upper|lower|top|bottom)\b")


def flip_and_shift(
    images: torch.Tensor, captions: Sequence[str], generator: torch.Generator, flip: bool = True, max_shift: int = 0
) -> tuple[torch.Tensor, list[str]]:
    """Caption-preserving geometric augmentation of uint8 images [B,3,H,W].

    Mirror images (horizontal and vertical, each with probability 1/2) keep the class of rotation-free shape classes;
    the position words of the caption are mirrored with them ("upper left" -> "lower left"). Shifts of at most
    ``max_shift`` pixels (edge pixels repeated) are far below the distance between caption positions.
    """
    B, _, H, W = images.shape
    captions = list(captions)
    out = images
    if flip:
        fx = torch.rand(B, generator=generator) < 0.5
        fy = torch.rand(B, generator=generator) < 0.5
        out = torch.where(fx[:, None, None, None], out.flip(-1), out)
        out = torch.where(fy[:, None, None, None], out.flip(-2), out)
        for i in range(B):
            c = captions[i]
            if not c:
                continue
            if fx[i]:
                c = _MIRROR_X_RE.sub(lambda m: _MIRROR_X[m.group(1)], c)
            if fy[i]:
                c = _MIRROR_Y_RE.sub(lambda m: _MIRROR_Y[m.group(1)], c)
            captions[i] = c
    if max_shift > 0:
        s = max_shift
        padded = F.pad(out.float(), (s, s, s, s), mode="replicate").to(out.dtype)
        dx = torch.randint(-s, s + 1, (B,), generator=generator)
        dy = torch.randint(-s, s + 1, (B,), generator=generator)
        rows = (torch.arange(H)[None, :] + s - dy[:, None])  # [B,H]: output row r reads padded row r+s-dy
        cols = (torch.arange(W)[None, :] + s - dx[:, None])
        b = torch.arange(B)[:, None, None]
        out = padded.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()
    return out, captions


def add_textures(
    images: torch.Tensor, captions: Sequence[str], prob: float, generator: torch.Generator, tol: int = 40
) -> tuple[torch.Tensor, list[str]]:
    """Replace the plain background of a random subset of uint8 images [B,3,H,W] by a synthetic pattern.

    The background colour is the most frequent border colour (used only when it covers half the border); pixels
    within ``tol`` of it are repainted. Captions ending in "on a <colour> background" gain the pattern word.
    """
    B, _, H, W = images.shape
    captions = list(captions)
    if prob <= 0 or B == 0:
        return images, captions
    g = generator
    chosen = torch.rand(B, generator=g) < prob
    border = torch.cat([images[:, :, 0, :], images[:, :, -1, :], images[:, :, :, 0], images[:, :, :, -1]], dim=2)  # [B,3,P]
    same = (border[:, :, :, None] == border[:, :, None, :]).all(1)  # [B,P,P]
    counts = same.sum(-1)
    best = counts.argmax(-1)
    bg = border.gather(2, best.view(B, 1, 1).expand(B, 3, 1)).squeeze(2).float()  # [B,3]
    plain = counts.gather(1, best[:, None]).squeeze(1) * 2 >= border.shape[2]
    chosen &= plain
    mask = (images.float() - bg[:, :, None, None]).abs().amax(1) <= tol  # [B,H,W]

    kind = torch.randint(0, 4, (B,), generator=g)
    theta = torch.rand(B, generator=g) * math.pi
    period = 4.0 + 6.0 * torch.rand(B, generator=g)
    phase = torch.rand(B, 2, generator=g) * period[:, None]
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    x = xx[None] + phase[:, 0, None, None]
    y = yy[None] + phase[:, 1, None, None]
    p = period[:, None, None]
    u = x * theta.cos()[:, None, None] + y * theta.sin()[:, None, None]
    stripes = torch.floor(u / (p / 2)).remainder(2)
    checks = (torch.floor(x / p) + torch.floor(y / p)).remainder(2)
    radius = (0.2 + 0.1 * torch.rand(B, generator=g))[:, None, None] * p
    dots = ((x.remainder(p) - p / 2) ** 2 + (y.remainder(p) - p / 2) ** 2 <= radius**2).float()
    gu = (xx[None] - W / 2) * theta.cos()[:, None, None] * 2 + (yy[None] - H / 2) * theta.sin()[:, None, None] * 2
    gradient = (gu / W + 0.5).clamp(0, 1)
    pattern = torch.stack([stripes, checks, dots, gradient], 1).gather(1, kind.view(B, 1, 1, 1).expand(B, 1, H, W))  # [B,1,H,W]

    lum = (bg * torch.tensor([0.299, 0.587, 0.114])).sum(1)
    towards = torch.where(lum < 128, torch.full_like(lum, 255.0), torch.zeros_like(lum))[:, None]
    mix = (0.3 + 0.3 * torch.rand(B, generator=g))[:, None]
    second = bg * (1 - mix) + towards * mix  # a lighter / darker shade of the background colour
    painted = bg[:, :, None, None] * (1 - pattern) + second[:, :, None, None] * pattern
    repaint = (mask & chosen[:, None, None])[:, None]
    out = torch.where(repaint, painted.round().clamp(0, 255).to(torch.uint8), images)
    for i in torch.nonzero(chosen).flatten().tolist():
        word = TEXTURE_WORDS[int(kind[i])]
        captions[i] = _BACKGROUND_RE.sub(lambda m: f" on a {word} {m.group(1)} background", captions[i]) if captions[i] else captions[i]
    return out, captions


# ---------------------------------------------------------------------------------------------------------------
def caption_retrieval_top1(clip: ClipModel, images: torch.Tensor, captions: Sequence[str]) -> float:
    """Image -> caption retrieval accuracy among the split's own captions (duplicates count as correct)."""
    img = clip.embed_images(images)
    txt = clip.embed_texts(list(captions))
    best = (img @ txt.T).argmax(-1)
    return float(sum(captions[int(j)] == captions[i] for i, j in enumerate(best)) / len(captions))


def evaluate_clip(clip: ClipModel, split: SplitData, template: str, templates: Sequence[str]) -> dict[str, float]:
    clip.eval()
    out = {
        "zero_shot_accuracy": clip.zero_shot_accuracy(split.images, split.labels, split.class_names, [template]),
        "zero_shot_accuracy_ensemble": clip.zero_shot_accuracy(split.images, split.labels, split.class_names, templates),
    }
    caps = [c for c in split.captions]
    if all(caps):
        out["caption_retrieval_top1"] = caption_retrieval_top1(clip, split.images, caps)  # type: ignore[arg-type]
    return out


def _texts_for(split: SplitData, template: str) -> list[str]:
    """Ground-truth captions; the class sentence where a sample has none."""
    return [c if c else template.format(class_name=split.class_names[int(l)]) for c, l in zip(split.captions, split.labels)]


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "logit_scale" in n or n.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _batch_indices(n: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Epoch-wise shuffling that depends only on (seed, step): resuming at any step gives the same batches."""
    per_epoch = max(1, n // batch_size)
    epoch, j = divmod(step, per_epoch)
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g)
    return perm[j * batch_size : (j + 1) * batch_size]


def _fingerprint(params: ClipParams, seed: int, source_dir: Path) -> str:
    blob = json.dumps({"clip": params.model_dump(), "seed": seed, "source": str(source_dir)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pretrain_clip(
    source_dir: str | Path,
    out_dir: str | Path,
    params: ClipParams,
    *,
    seed: int = 0,
    target_dir: Optional[str | Path] = None,
    sentence_template: str = "a photo of {class_name}",
    steps: Optional[int] = None,
) -> dict:
    """Train the tiny CLIP on ``source_dir``'s train split; write model.pt, metrics.json, loss.csv into ``out_dir``.

    ``steps`` overrides ``params.train.steps`` (tests). Returns the metrics dict.
    """
    tp = params.train
    total = int(steps or tp.steps)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not is_own_config(params.model):
        return import_clip(source_dir, out, params, target_dir=target_dir, sentence_template=sentence_template)
    if tp.num_threads:
        torch.set_num_threads(tp.num_threads)
    seed_everything(seed)
    device = resolve_device(params.device)

    train = load_split(source_dir, "train")
    texts = _texts_for(train, sentence_template)
    class_names = train.class_names
    log.info("CLIP pretraining on %d source images, %d classes, %d steps of %d on %s", len(train), len(class_names), total, tp.batch_size, device)

    clip = build_clip(params.model, quick_gelu=bool(params.quick_gelu), device=device, batch_size=tp.eval_batch_size)
    clip.train()
    opt = torch.optim.AdamW(_param_groups(clip.model, tp.weight_decay), lr=tp.lr, betas=(0.9, 0.98), eps=1e-6)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_lambda(total, tp.warmup_steps, min_ratio=0.02))
    import open_clip

    clip_loss = open_clip.ClipLoss()

    ckpt = TrainCheckpoint(out / "train_state.pt", every=tp.checkpoint_every)
    fp = _fingerprint(params, seed, Path(source_dir))
    if ckpt.path.exists():
        old = load_file(ckpt.path).get("extra", {}).get("fingerprint")
        if old != fp:
            log.warning("%s was written with other params or data; starting from scratch", ckpt.path)
            ckpt.remove()
    start = ckpt.resume(clip.model, opt, sched)
    history: list[dict] = list(ckpt.extra.get("history", []))
    elapsed = float(ckpt.extra.get("elapsed_s", 0.0))
    cpu_elapsed = float(ckpt.extra.get("cpu_s", 0.0))
    c0 = time.process_time()

    n = len(train)
    bs = min(tp.batch_size, n)
    import contextlib

    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if tp.autocast == "bf16" else contextlib.nullcontext())
    t0 = time.perf_counter()
    bar = tqdm(range(start, total), desc="pretrain_clip", unit="step", initial=start, total=total, mininterval=5.0)
    for step in bar:
        idx = _batch_indices(n, bs, step, seed)
        g = torch.Generator().manual_seed(seed * 7919 + step)
        ramp = min(1.0, (step + 1) / (tp.texture_ramp * total)) if tp.texture_ramp > 0 else 1.0
        imgs, caps = flip_and_shift(train.images[idx], [texts[i] for i in idx.tolist()], g, tp.flip, tp.max_shift)
        imgs, caps = add_textures(imgs, caps, tp.texture_prob * ramp, g)
        labels = train.labels[idx].to(device)
        with autocast:
            img_f = clip.encode_images(imgs).float()
            txt_f = clip.encode_texts(caps).float()
            cls_f = None
            if tp.class_loss_weight > 0:
                pick = torch.randint(0, len(tp.templates), (len(class_names),), generator=g).tolist()
                cls_f = clip.encode_texts([tp.templates[j].format(class_name=c) for c, j in zip(class_names, pick)]).float()
        scale = clip.logit_scale
        loss_cap = clip_loss(img_f, txt_f, scale)
        loss = loss_cap
        loss_cls = torch.zeros((), device=device)
        if cls_f is not None:
            loss_cls = F.cross_entropy(scale * img_f @ cls_f.T, labels)
            loss = loss + tp.class_loss_weight * loss_cls
        check_finite(loss, step + 1, f"CLIP pretraining ({out})", ckpt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            clip.model.logit_scale.clamp_(0, LOGIT_SCALE_MAX)
        history.append(
            {"step": step + 1, "loss": round(loss.item(), 5), "loss_caption": round(loss_cap.item(), 5),
             "loss_class": round(loss_cls.item(), 5), "lr": opt.param_groups[0]["lr"], "logit_scale": round(scale.item(), 3)}
        )
        if (step + 1) % 10 == 0:
            bar.set_postfix(loss=f"{float(loss):.3f}")
        if (step + 1) % tp.checkpoint_every == 0 and step + 1 < total:
            ckpt.save(step + 1, clip.model, opt, sched, history=history, fingerprint=fp,
                      elapsed_s=elapsed + time.perf_counter() - t0, cpu_s=cpu_elapsed + time.process_time() - c0)
    train_time = elapsed + time.perf_counter() - t0
    train_cpu = cpu_elapsed + time.process_time() - c0
    bar.close()

    clip.eval()
    templates = list(tp.templates)
    metrics: dict = {
        "model": params.model,
        "parameters": count_parameters(clip.model),
        "steps": total,
        "batch_size": bs,
        "train_time_s": round(train_time, 1),  # wall clock (depends on what else runs on the machine)
        "train_cpu_s": round(train_cpu, 1),  # CPU seconds of this process (all its threads)
        "num_threads": torch.get_num_threads(),
        "final_loss": history[-1]["loss"] if history else None,
        "template": sentence_template,
        "source_val": evaluate_clip(clip, load_split(source_dir, "val"), sentence_template, templates),
    }
    if target_dir is not None:
        metrics["target_val"] = evaluate_clip(clip, load_split(target_dir, "val"), sentence_template, templates)
    metrics["zero_shot_accuracy"] = {k: metrics[k]["zero_shot_accuracy"] for k in ("source_val", "target_val") if k in metrics}
    metrics["peak_memory_mb"] = round(peak_memory_mb(device), 1)
    log.info("zero-shot accuracy (%r): %s; trained in %.1f s", sentence_template, metrics["zero_shot_accuracy"], train_time)

    save_clip(out / "model.pt", clip, steps=total, source=str(source_dir), fingerprint=fp)
    write_curve(out / "loss.csv", history)
    write_json(out / "metrics.json", metrics)
    ckpt.remove()
    return metrics


def import_clip(
    source_dir: str | Path,
    out_dir: str | Path,
    params: ClipParams,
    *,
    target_dir: Optional[str | Path] = None,
    sentence_template: str = "a photo of {class_name}",
) -> dict:
    """A real CLIP (``clip.model`` not one of genvpt's configs): nothing to pretrain. Load ``clip.pretrained`` (with
    the QuickGELU choice), evaluate it zero-shot like the tiny one, and save it as ``model.pt`` so that the stages
    downstream of ``pretrain_clip`` read one file either way."""
    out = Path(out_dir)
    t0 = time.perf_counter()
    clip = load_clip(params, device=params.device)
    templates = list(params.train.templates)
    metrics: dict = {
        "model": params.model,
        "mode": "imported",
        "pretrained": params.pretrained,
        "quick_gelu": clip.quick_gelu,
        "parameters": count_parameters(clip.model),
        "template": sentence_template,
        "source_val": evaluate_clip(clip, load_split(source_dir, "val"), sentence_template, templates),
    }
    if target_dir is not None:
        metrics["target_val"] = evaluate_clip(clip, load_split(target_dir, "val"), sentence_template, templates)
    metrics["zero_shot_accuracy"] = {k: metrics[k]["zero_shot_accuracy"] for k in ("source_val", "target_val") if k in metrics}
    metrics["eval_time_s"] = round(time.perf_counter() - t0, 1)
    log.info("imported CLIP %s from %s; zero-shot accuracy %s", params.model, params.pretrained, metrics["zero_shot_accuracy"])
    save_clip(out / "model.pt", clip, imported_from=params.pretrained)
    write_curve(out / "loss.csv", [{"step": 0, "loss": ""}])
    write_json(out / "metrics.json", metrics)
    return metrics
