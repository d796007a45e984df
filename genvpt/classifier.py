"""A small CNN classifier trained on prepared real images; it measures whether generated samples show their class.

    model, report = train_classifier(train.images, train.labels, val.images, val.labels, params, seed=0)
    save_classifier("data/classifier/source/model.pt", model, class_names)
    acc = class_accuracy(load_classifier("data/classifier/source/model.pt"), samples_uint8, labels)

Images are uint8 [N, 3, H, W] (or float in [-1, 1]); any square size works (global average pooling).
Training augments with random translations and horizontal flips (the shapes are drawn at random rotations, so a
mirror image keeps its class), random Gaussian blur and light Gaussian noise: a VQ decoder's outputs are smoother
than the real images, and a classifier that only knows sharp edges calls blurry but clear shapes wrong.
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .checkpoint import load_model_file, save_model, strict_load

log = logging.getLogger(__name__)

__all__ = ["ClassifierConfig", "SmallCNN", "train_classifier", "save_classifier", "load_classifier", "predict", "class_accuracy"]

FAMILY = "classifier"


@dataclass
class ClassifierConfig:
    num_classes: int = 12
    width: int = 32
    dropout: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    """conv(w) at full size, then two stages of two convs (2w, 4w) each after 2x2 max-pooling, global average and
    max pooling, a linear head. Cheap enough to train in about a minute on two CPU cores at 32 px."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        w = cfg.width
        self.cfg = cfg
        self.features = nn.Sequential(
            *_conv(3, w), nn.MaxPool2d(2),
            *_conv(w, 2 * w), *_conv(2 * w, 2 * w), nn.MaxPool2d(2),
            *_conv(2 * w, 4 * w), *_conv(4 * w, 4 * w),
        )
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(8 * w, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` float in [-1, 1] [B, 3, H, W] -> logits [B, num_classes]."""
        f = self.features(x)
        h = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
        return self.head(self.drop(h))


def _to_float(images: torch.Tensor) -> torch.Tensor:
    if images.dtype == torch.uint8:
        return images.float().div(127.5).sub(1.0)
    return images.float()


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image with its own Gaussian (``sigma`` [B] in pixels; 0 = unchanged), separable, edge-replicated."""
    B, C, H, W = x.shape
    r = max(1, int(math.ceil(2.5 * float(sigma.max()))))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t[None, :] / sigma.clamp_min(1e-3)[:, None].to(x.dtype)) ** 2)  # [B, 2r+1]
    k = k / k.sum(1, keepdim=True)
    k = k.repeat_interleave(C, dim=0)  # one kernel per (image, channel)
    y = F.pad(x.reshape(1, B * C, H, W), (r, r, r, r), mode="replicate")
    y = F.conv2d(y, k[:, None, None, :], groups=B * C)
    y = F.conv2d(y, k[:, None, :, None], groups=B * C)
    return y.reshape(B, C, H, W)


def _augment(x: torch.Tensor, g: torch.Generator, max_shift: int, noise: float, blur_prob: float = 0.0,
             blur_max: float = 0.0) -> torch.Tensor:
    B, _, H, W = x.shape
    if max_shift > 0:
        pad = F.pad(x, (max_shift,) * 4, mode="replicate")
        dx = torch.randint(0, 2 * max_shift + 1, (B,), generator=g)
        dy = torch.randint(0, 2 * max_shift + 1, (B,), generator=g)
        rows = (dy[:, None] + torch.arange(H)[None, :])  # [B, H]
        cols = (dx[:, None] + torch.arange(W)[None, :])  # [B, W]
        bi = torch.arange(B)[:, None, None]
        x = pad.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    flip = torch.rand(B, generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if blur_prob > 0 and blur_max > 0:
        sigma = torch.rand(B, generator=g) * blur_max
        sigma = torch.where(torch.rand(B, generator=g) < blur_prob, sigma, torch.zeros_like(sigma))
        if (sigma > 0).any():
            x = _gaussian_blur(x, sigma)
    if noise > 0:
        x = x + noise * torch.randn(x.shape, generator=g)
    return x


@torch.inference_mode()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Class probabilities [N, num_classes] for uint8 or [-1, 1] images."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for i in range(0, images.shape[0], batch_size):
        x = _to_float(images[i:i + batch_size]).to(device)
        out.append(model(x).softmax(-1).cpu())
    return torch.cat(out) if out else torch.empty(0, model.cfg.num_classes)


def class_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    """Fraction of ``images`` classified as ``labels``."""
    if images.shape[0] == 0:
        raise ValueError("class_accuracy needs at least one image")
    pred = predict(model, images, batch_size).argmax(-1)
    return float((pred == labels.cpu()).float().mean())


def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    val_images: torch.Tensor,
    val_labels: torch.Tensor,
    *,
    num_classes: int,
    width: int = 32,
    dropout: float = 0.1,
    epochs: int = 12,
    batch_size: int = 64,
    lr: float = 4e-3,
    weight_decay: float = 5e-4,
    max_shift: int = 3,
    noise: float = 0.05,
    blur_prob: float = 0.5,
    blur_max: float = 1.5,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[SmallCNN, dict]:
    """Train :class:`SmallCNN` with AdamW and a one-cycle cosine schedule; returns (model, report)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = SmallCNN(ClassifierConfig(num_classes=num_classes, width=width, dropout=dropout)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    N = images.shape[0]
    steps_per_epoch = max(1, math.ceil(N / batch_size))
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.15)
    x_all = _to_float(images)
    history = []
    t0 = time.time()
    for epoch in tqdm(range(epochs), desc="classifier", leave=False):
        model.train()
        perm = torch.randperm(N, generator=g)
        tot, n = 0.0, 0
        for i in range(0, N, batch_size):
            idx = perm[i:i + batch_size]
            x = _augment(x_all[idx], g, max_shift, noise, blur_prob, blur_max).to(device)
            y = labels[idx].to(device)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(idx)
            n += len(idx)
        val_acc = class_accuracy(model, val_images, val_labels)
        history.append({"epoch": epoch + 1, "train_loss": tot / n, "val_accuracy": val_acc})
        log.info("classifier epoch %d: loss %.4f, val accuracy %.4f", epoch + 1, tot / n, val_acc)
    report = {
        "val_accuracy": history[-1]["val_accuracy"] if history else class_accuracy(model, val_images, val_labels),
        "train_seconds": time.time() - t0,
        "epochs": epochs,
        "history": history,
    }
    return model.eval(), report


def save_classifier(path: str | os.PathLike, model: SmallCNN, class_names: list[str], **meta) -> Path:
    return save_model(path, model, FAMILY, model.cfg.to_dict(), class_names=list(class_names), **meta)


def load_classifier(path: str | os.PathLike, device: str | torch.device = "cpu") -> SmallCNN:
    """Load a classifier written by :func:`save_classifier` (strict keys). ``path`` may be its directory."""
    p = Path(path)
    if p.is_dir():
        p = p / "model.pt"
    config, state, meta = load_model_file(p, FAMILY)
    model = SmallCNN(ClassifierConfig(**config))
    strict_load(model, state, source=str(p))
    model.class_names = list(meta.get("class_names", []))
    model.meta = dict(meta)
    return model.to(device).eval()
