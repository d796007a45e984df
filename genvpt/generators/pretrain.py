"""The ``pretrain_generator`` stage's work for one family: train (or import) a backbone, then judge its samples.

Outputs in ``out_dir``::

    model.pt       the generator (genvpt file: family + config + weights), read by ``load_generator`` / ``load_backbone``
    loss.csv       step, loss, lr, val_loss (DVC plot; header only when an official checkpoint was imported)
    samples.png    one row per class, ``eval.grid_per_class`` samples each
    metrics.json   losses, time, parameters, sampling speed, class accuracy of samples under the source classifier

When params name an official checkpoint (``generator.<family>.checkpoint``) nothing is trained: the file is loaded
strictly (its sizes read from its shapes) and saved as ``model.pt``.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Optional

import torch

from .. import distributed
from ..checkpoint import CheckpointError
from ..io import atomic_path, write_json
from ..training import count_parameters, peak_memory_mb, seed_everything, write_curve
from . import TOKENIZER_OF, Backbone, load_pretrained, sample_settings, save_generator
from .common import pick_device
from .params import GeneratorParams
from .train import train_generator

log = logging.getLogger(__name__)

__all__ = ["pretrain_family", "save_sample_grid", "evaluate_backbone"]

CURVE_KEYS = ["step", "loss", "lr", "val_loss"]


def save_sample_grid(path: str | os.PathLike, images: torch.Tensor, labels: torch.Tensor, num_classes: int, per_class: int) -> Path:
    """PNG grid, row c = the first ``per_class`` images of class c (uint8 [N, 3, H, W])."""
    from torchvision.utils import make_grid
    from PIL import Image

    rows = []
    H, W = images.shape[-2:]
    for c in range(num_classes):
        sel = images[labels == c][:per_class]
        if sel.shape[0] < per_class:
            sel = torch.cat([sel, torch.zeros(per_class - sel.shape[0], 3, H, W, dtype=torch.uint8)])
        rows.append(sel)
    grid = make_grid(torch.cat(rows).float(), nrow=per_class, padding=2, pad_value=255.0)
    arr = grid.clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
    return Path(path)


def evaluate_backbone(
    backbone: Backbone,
    gp: GeneratorParams,
    *,
    class_names: list[str],
    classifier: Any = None,
    val_tokens: Any = None,
    grid_path: Optional[str | os.PathLike] = None,
) -> dict:
    """Sample ``eval.samples_per_class`` images per class; class accuracy under ``classifier`` (when its classes
    match), sampling speed, and the accuracy on tokenizer reconstructions of ``val_tokens`` (the ceiling)."""
    from ..classifier import class_accuracy, predict

    ev = gp.eval
    nc = backbone.num_classes
    labels = torch.arange(nc).repeat_interleave(ev.samples_per_class)
    t0 = time.perf_counter()
    images = backbone.sample_images(labels, seed=ev.seed, batch_size=ev.batch_size, progress=True)
    dt = time.perf_counter() - t0
    out: dict[str, Any] = {
        "samples": int(labels.numel()),
        "sample_seconds": dt,
        "sample_images_per_second": labels.numel() / max(dt, 1e-9),
        "sampling": dict(backbone.sample_defaults),
    }
    if grid_path is not None:
        save_sample_grid(grid_path, images, labels, nc, ev.grid_per_class)
    if classifier is None:
        return out
    if classifier.cfg.num_classes != nc:
        log.warning("classifier has %d classes, the generator %d: no sample class accuracy", classifier.cfg.num_classes, nc)
        out["sample_class_accuracy"] = None
        return out
    pred = predict(classifier, images).argmax(-1)
    correct = (pred == labels).float()
    out["sample_class_accuracy"] = float(correct.mean())
    out["per_class_accuracy"] = {
        (class_names[c] if c < len(class_names) else str(c)): float(correct[labels == c].mean()) for c in range(nc)
    }
    if val_tokens is not None and len(val_tokens):
        with torch.inference_mode():
            recon = []
            for i in range(0, len(val_tokens), ev.batch_size):
                sl = [s[i:i + ev.batch_size].to(backbone.device) for s in val_tokens.scales]
                if backbone.family == "var":
                    img = backbone.decode(sl)
                else:
                    side = val_tokens.grid[0]
                    img = backbone.decode(sl[0].view(-1, side, side))
                recon.append(img.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).cpu())
        out["reconstruction_class_accuracy"] = class_accuracy(classifier, torch.cat(recon), val_tokens.labels)
    return out


def pretrain_family(
    family: str,
    gp: GeneratorParams,
    *,
    tokens_dir: str | os.PathLike,
    tokenizer_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    classifier_path: Optional[str | os.PathLike] = None,
    seed: int = 0,
) -> dict:
    """Train (or import) ``family``'s backbone into ``out_dir`` and evaluate it; returns the metrics."""
    from ..classifier import load_classifier
    from ..tokenizers import load_tokenizer
    from ..tokenizers.token_shards import load_tokens

    t_stage = time.perf_counter()
    out = Path(out_dir)
    main = distributed.is_main()  # under torchrun: rank 0 writes every output, the others only train
    if main:
        out.mkdir(parents=True, exist_ok=True)
    fp = gp.family(family)
    device = distributed.rank_device(pick_device(gp.device))
    if gp.num_threads:
        torch.set_num_threads(gp.num_threads)
    seed_everything(seed)
    tokenizer = load_tokenizer(tokenizer_path, family=TOKENIZER_OF[family], device=device)

    val_tokens, class_names = None, None
    if Path(tokens_dir).is_dir():
        val_tokens = load_tokens(tokens_dir, "val")
        class_names = list(val_tokens.class_names)
    summary: dict[str, Any]
    if fp.checkpoint:
        hints = _hints(family, gp, tokenizer)
        model = load_pretrained(family, fp.checkpoint, **hints).to(device)
        history: list[dict] = []
        summary = {"family": family, "trained": False, "checkpoint": str(fp.checkpoint), "parameters": count_parameters(model)}
    else:
        tokens = load_tokens(tokens_dir, "train")
        _check_tokens(tokens, tokenizer, tokens_dir)
        class_names = list(tokens.class_names)
        res = train_generator(family, gp, tokens=tokens, val_tokens=val_tokens, tokenizer=tokenizer,
                              state_path=out / "train_state.pt", seed=seed, device=device)
        model, history = res.model, res.history
        summary = {"trained": True, **res.summary}
    if not main:  # evaluation and every output: rank 0's
        log.info("%s: rank %d done; rank 0 writes the outputs", family, distributed.rank())
        return summary
    class_names = class_names or [str(c) for c in range(model.cfg.num_classes)]

    save_generator(out / "model.pt", model.cpu(), class_names=class_names, tokenizer=str(tokenizer_path),
                   source_checkpoint=fp.checkpoint, summary=summary)
    model.to(device)
    if history:
        write_curve(out / "loss.csv", history)
    else:
        _write_header(out / "loss.csv")

    backbone = Backbone(family, model.eval(), tokenizer, sample_settings(gp, family))
    classifier = None
    if classifier_path is not None and Path(classifier_path).exists():
        classifier = load_classifier(classifier_path, device=device)
    else:
        log.warning("no classifier at %s: samples are not judged", classifier_path)
    ev = evaluate_backbone(backbone, gp, class_names=class_names, classifier=classifier, val_tokens=val_tokens,
                           grid_path=out / "samples.png")
    metrics = {**summary, **ev, "device": str(device), "peak_memory_mb": peak_memory_mb(device),
               "stage_seconds": time.perf_counter() - t_stage}
    if classifier is not None:
        metrics["classifier_real_val_accuracy"] = getattr(classifier, "meta", {}).get("val_accuracy")
    write_json(out / "metrics.json", metrics)
    # train_state.pt is kept: it holds the finished training (fingerprinted by model config, training params, seed and
    # data), so a rerun after a change to the sampling settings only re-evaluates instead of training again
    log.info("%s: sample class accuracy %s, %.1f s", family, metrics.get("sample_class_accuracy"), metrics["stage_seconds"])
    return metrics


def _write_header(path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(",".join(CURVE_KEYS) + "\n")


def _hints(family: str, gp: GeneratorParams, tokenizer: Any) -> dict:
    if family == "ar":
        return {"n_head": gp.ar.n_head, "order": gp.ar.order, "vocab_size": tokenizer.vocab_size}
    if family == "maskgit":
        return {"heads": gp.maskgit.heads, "vocab_size": tokenizer.vocab_size}
    return {"patch_nums": tuple(tokenizer.patch_nums), "vocab_size": tokenizer.vocab_size, "Cvae": tokenizer.Cvae}


def _check_tokens(tokens: Any, tokenizer: Any, tokens_dir: Any) -> None:
    vocab = tokenizer.vocab_size
    hi = max(int(s.max()) for s in tokens.scales)
    if hi >= vocab:
        raise CheckpointError(f"token shards {tokens_dir} hold token {hi} >= the tokenizer's vocabulary {vocab}: "
                              f"they were made by another tokenizer")
    if hasattr(tokenizer, "patch_nums") and list(tokenizer.patch_nums) != list(tokens.grid):
        raise CheckpointError(f"token shards {tokens_dir} have scales {tokens.grid}, the tokenizer {list(tokenizer.patch_nums)}")
