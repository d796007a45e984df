"""Report figures (PNG): sample grids, training curves, FD against trainable parameters. matplotlib with Agg."""
from __future__ import annotations

import csv
import logging
import math
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from ..io import atomic_path
from ..metrics.registry import metric_info

log = logging.getLogger(__name__)

__all__ = ["image_grid", "save_grid", "plot_fd_vs_params", "read_curve", "plot_curves"]

STEP_COLUMNS = ("step", "iter", "iteration", "epoch", "global_step")


def image_grid(images: torch.Tensor, labels: torch.Tensor, *, per_class: int, max_classes: int,
               scale: int = 1, pad: int = 2) -> np.ndarray:
    """Rows = classes (first ``max_classes``), columns = the first ``per_class`` images of each class; uint8 HxWx3."""
    classes = torch.unique(labels).tolist()[:max_classes]
    h, w = images.shape[2] * scale, images.shape[3] * scale
    grid = np.full((len(classes) * (h + pad) + pad, per_class * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for r, c in enumerate(classes):
        idx = torch.nonzero(labels == c).flatten()[:per_class]
        for k, i in enumerate(idx.tolist()):
            im = images[i]
            if scale > 1:
                im = im.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
            y, x = pad + r * (h + pad), pad + k * (w + pad)
            grid[y:y + h, x:x + w] = im.permute(1, 2, 0).numpy()
    return grid


def save_grid(path: str | os.PathLike, grid: np.ndarray) -> Path:
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
    return Path(path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_fd_vs_params(path: str | os.PathLike, rows: Sequence[dict], fd_key: str) -> Optional[Path]:
    """Scatter of FD (or FD-CLIP) against trainable parameters (symlog x: frozen backbones sit at 0); the mean over a
    row's seeds with its std as an error bar when the rows carry ``<fd_key>_std``. Averaged variant rows are left
    out (their members are plotted)."""
    def _f(v):
        return float(v) if isinstance(v, (int, float)) and math.isfinite(float(v)) else None

    pts = [(str(r.get("row", r.get("config", "?"))), float(r.get("trainable_params", 0) or 0), float(r[fd_key]),
            _f(r.get(f"{fd_key}_std")) or 0.0)
           for r in rows if _f(r.get(fd_key)) is not None and not r.get("averaged_from")]
    if not pts:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=110)
    xs, ys, es = [p[1] for p in pts], [p[2] for p in pts], [p[3] for p in pts]
    ax.errorbar(xs, ys, yerr=es, fmt="o", ms=6, color="#1f77b4", ecolor="#7aa6d0", capsize=3, zorder=3)
    for name, x, y, _ in pts:
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("trainable parameters (symlog; 0 = frozen backbone)")
    ax.set_ylabel(metric_info(fd_key).label + " (lower is better)")
    ax.set_title(f"{metric_info(fd_key).label} vs trainable parameters (mean ± std over seeds)", fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)


def read_curve(path: str | os.PathLike) -> Optional[tuple[str, dict[str, np.ndarray]]]:
    """(x column, {column: values}) of a training-curve CSV; None when it has no step column or numbers."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return None
    cols = list(rows[0].keys())
    x = next((c for c in cols if c.lower() in STEP_COLUMNS), None)
    data: dict[str, np.ndarray] = {}
    for c in cols:
        try:
            vals = np.array([float(r[c]) if r[c] not in ("", None) else np.nan for r in rows])
        except ValueError:
            continue
        data[c] = vals
    if x is None:
        data["row"] = np.arange(len(rows), dtype=float)
        x = "row"
    ys = [c for c in data if c != x and np.isfinite(data[c]).any()]
    return (x, data) if ys else None


def plot_curves(path: str | os.PathLike, curves: Sequence[str | os.PathLike], title: str) -> Optional[Path]:
    """One panel per CSV; every numeric column against the step column; losses on a log axis when positive."""
    parsed = [(Path(c), read_curve(c)) for c in curves if Path(c).is_file()]
    parsed = [(p, r) for p, r in parsed if r is not None]
    if not parsed:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(parsed), figsize=(4.6 * len(parsed), 3.2), dpi=110, squeeze=False)
    for ax, (p, (x, data)) in zip(axes[0], parsed):
        ys = [c for c in data if c != x and c.lower() not in STEP_COLUMNS and np.isfinite(data[c]).any()]
        losses = [c for c in ys if "loss" in c.lower()] or ys[:1]
        others = [c for c in ys if c not in losses][:4]
        for c in losses[:6]:
            ax.plot(data[x], data[c], label=c, lw=1.2)
        vals = np.concatenate([data[c][np.isfinite(data[c])] for c in losses[:6]])
        if len(vals) and (vals > 0).all() and vals.max() / max(vals.min(), 1e-12) > 20:
            ax.set_yscale("log")
        handles, labels = ax.get_legend_handles_labels()
        if others:  # learning rate, accuracy, ... on a second axis
            ax2 = ax.twinx()
            for k, c in enumerate(others):
                ax2.plot(data[x], data[c], label=c, lw=1.0, ls="--", color=f"C{len(losses) + k}")
            ax2.tick_params(labelsize=7)
            h2, l2 = ax2.get_legend_handles_labels()
            handles, labels = handles + h2, labels + l2
        ax.set_xlabel(x)
        ax.set_title(p.name, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(handles, labels, fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)
