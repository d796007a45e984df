"""``compute_metrics``: one entry function with keyword arguments (torch-fidelity style) for every metric genvpt
reports, and the built-in metric groups it runs.

    from genvpt.metrics import compute_metrics
    m = compute_metrics(samples, reals, labels=labels, class_names=names, train_images=tr, train_labels=trl,
                        clip_model=clip, inception_weights="weights/pt_inception-2015-12-05.pth")

``samples`` / ``reals`` are uint8 [N,3,H,W] tensors or directories of PNG/JPEG files. Groups registered with
:func:`genvpt.metrics.register_metric` run when named in ``extra``.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from .clip_score import clip_score_from_embeddings
from .diversity import (
    LpipsDistance,
    assign_to_centers,
    cosine_distance_fn,
    intra_cluster_diversity,
    lpips_available,
    select_centers,
)
from .features import encode_images, encode_texts
from .fidelity import fidelity_metrics
from .probe import LinearProbe
from .registry import METRIC_GROUPS, register_metric

log = logging.getLogger(__name__)

__all__ = ["EvalContext", "compute_metrics", "load_images"]

BUILTIN_GROUPS = ("fidelity", "clip_score", "diversity", "class_accuracy")


def load_images(src: torch.Tensor | str | os.PathLike) -> torch.Tensor:
    """uint8 [N,3,H,W] from a tensor (checked) or a directory of images (sorted by file name)."""
    if torch.is_tensor(src):
        if src.dtype != torch.uint8 or src.dim() != 4 or src.shape[1] != 3:
            raise ValueError(f"images must be uint8 [N,3,H,W], got {src.dtype} {tuple(src.shape)}")
        return src
    d = Path(src)
    if not d.is_dir():
        raise FileNotFoundError(f"image directory {d} not found")
    from ..sampling import load_png_files

    files = sorted(p for p in d.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise ValueError(f"no PNG/JPEG images in {d}")
    return load_png_files(files)


@dataclass
class EvalContext:
    """Everything a metric group may use; CLIP features are computed once, on first use."""

    samples: torch.Tensor
    reals: torch.Tensor
    labels: Optional[torch.Tensor] = None
    texts: Optional[list[str]] = None
    class_names: Optional[list[str]] = None
    train_images: Optional[torch.Tensor] = None
    train_labels: Optional[torch.Tensor] = None
    real_labels: Optional[torch.Tensor] = None
    clip: Any = None
    device: torch.device = torch.device("cpu")
    options: dict = field(default_factory=dict)
    space: str = "none"
    cache: Optional[dict] = None  # caller-held store for the reals' / train images' features
    _feats: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.cache is not None:
            self._feats.update({k: v for k, v in self.cache.items() if k in ("reals", "train")})

    def opt(self, name: str) -> Any:
        return self.options[name]

    def features(self, which: str) -> torch.Tensor:
        """Normalised CLIP embeddings of ``samples`` / ``reals`` / ``train``."""
        if which not in self._feats:
            if self.clip is None:
                raise ValueError("a CLIP model is needed for this metric (clip_model=...)")
            imgs = {"samples": self.samples, "reals": self.reals, "train": self.train_images}[which]
            self._feats[which] = encode_images(self.clip, imgs, self.opt("batch_size"))
            if self.cache is not None and which != "samples":
                self.cache[which] = self._feats[which]
        return self._feats[which]

    def sample_texts(self) -> Optional[list[str]]:
        if self.texts is not None:
            return list(self.texts)
        if self.labels is not None and self.class_names is not None:
            tpl = self.opt("text_template")
            return [tpl.format(class_name=self.class_names[int(c)]) for c in self.labels]
        return None

    def class_texts(self) -> Optional[list[str]]:
        if self.class_names is None:
            return None
        return [self.opt("text_template").format(class_name=c) for c in self.class_names]


@register_metric("fidelity")
def _fidelity(ctx: EvalContext) -> dict:
    sink: list = []
    want_isc = ctx.opt("isc")
    out, ctx.space = fidelity_metrics(
        ctx.samples, ctx.reals,
        fid=ctx.opt("fid"), isc=want_isc, kid=ctx.opt("kid"), prc=ctx.opt("prc"),
        inception_weights=ctx.opt("inception_weights"), clip_model=ctx.clip, class_texts=ctx.class_texts(),
        feature_sink=sink, device=ctx.device, batch_size=ctx.opt("batch_size"), isc_splits=ctx.opt("isc_splits"),
        kid_subsets=ctx.opt("kid_subsets"), kid_subset_size=ctx.opt("kid_subset_size"),
        prc_neighborhood=ctx.opt("prc_neighborhood"), seed=ctx.opt("seed"), verbose=ctx.opt("verbose"),
    )
    if sink:  # reuse the CLIP features torch-fidelity just extracted (input1 = samples first, then input2 = reals)
        feats = torch.cat([f.float().cpu() for f in sink])
        n1, n2 = ctx.samples.shape[0], ctx.reals.shape[0]
        if feats.shape[0] == n1 + n2:
            ctx._feats.setdefault("samples", feats[:n1])
            ctx._feats.setdefault("reals", feats[n1:])
            if ctx.cache is not None:
                ctx.cache.setdefault("reals", ctx._feats["reals"])
    return out


@register_metric("clip_score")
def _clip_score(ctx: EvalContext) -> dict:
    if ctx.clip is None:
        log.warning("CLIP score skipped: no CLIP model")
        return {}
    texts = ctx.sample_texts()
    if texts is None:
        log.warning("CLIP score skipped: samples have neither texts nor labels with class names")
        return {}
    if len(texts) != ctx.samples.shape[0]:
        raise ValueError(f"{len(texts)} texts for {ctx.samples.shape[0]} samples")
    t = encode_texts(ctx.clip, texts, ctx.opt("batch_size"))
    return {"clip_score": clip_score_from_embeddings(ctx.features("samples"), t, ctx.opt("clip_score_weight"))}


@register_metric("diversity")
def _diversity(ctx: EvalContext) -> dict:
    centers_src, center_labels = ctx.train_images, ctx.train_labels
    which = "train"
    if centers_src is None:
        log.warning("diversity: no training images given; the real images are used as cluster centres")
        centers_src, center_labels, which = ctx.reals, ctx.real_labels, "reals"
    if center_labels is None:  # unlabelled centre pool: every image is a centre
        center_labels = torch.arange(centers_src.shape[0])
        per_class = 1
    else:
        per_class = ctx.opt("diversity_centers_per_class")
    idx = select_centers(center_labels, per_class, ctx.opt("seed"))
    kw = dict(max_per_cluster=ctx.opt("diversity_max_per_cluster"), seed=ctx.opt("seed"), num_clusters=len(idx))
    if lpips_available(ctx.opt("lpips_weights"), ctx.opt("lpips_vgg_weights")):
        lp = LpipsDistance(ctx.opt("lpips_weights"), ctx.opt("lpips_vgg_weights"), resize=ctx.opt("lpips_resize"),
                           device=ctx.device)
        assign = assign_to_centers(lp.to_centers(ctx.samples, centers_src[idx]))
        mean, std, n = intra_cluster_diversity(assign, lp.pair_fn(ctx.samples), **kw)
        return {"diversity_lpips": mean, "diversity_lpips_std": std, "diversity_clusters": n}
    if ctx.clip is None:
        log.warning("diversity skipped: neither LPIPS weights nor a CLIP model")
        return {}
    fs = ctx.features("samples")
    fc = ctx.features(which)[idx]
    assign = assign_to_centers(1.0 - fs.double() @ fc.double().T)
    mean, std, n = intra_cluster_diversity(assign, cosine_distance_fn(fs), **kw)
    return {"diversity_clip": mean, "diversity_clip_std": std, "diversity_clusters": n}


@register_metric("class_accuracy")
def _class_accuracy(ctx: EvalContext) -> dict:
    if ctx.clip is None or ctx.labels is None:
        log.warning("class accuracy skipped: it needs a CLIP model and the samples' labels")
        return {}
    if ctx.train_images is None or ctx.train_labels is None:
        log.warning("class accuracy skipped: no labelled real training images for the probe")
        return {}
    probe = LinearProbe(ctx.opt("probe_c"), ctx.opt("probe_max_iter")).fit(ctx.features("train"), ctx.train_labels)
    probe_samples = probe.predict(ctx.features("samples"))
    out = {"class_acc": _share(probe_samples == ctx.labels)}
    probe_reals = probe.predict(ctx.features("reals")) if ctx.real_labels is not None else None
    if probe_reals is not None:
        out["probe_real_acc"] = _share(probe_reals == ctx.real_labels)
    judge = ctx.options.get("class_judge")
    if judge is not None:  # a second judge (an adapted classifier, e.g. PGN): its accuracy and agreement with the probe
        judge_samples = judge(ctx.samples).cpu().long()
        out["class_acc_judge"] = _share(judge_samples == ctx.labels)
        out["judge_probe_agreement"] = _share(judge_samples == probe_samples)
        if probe_reals is not None:
            key = ("judge", id(judge))
            if ctx.cache is not None and key in ctx.cache:
                judge_reals = ctx.cache[key]
            else:
                judge_reals = judge(ctx.reals).cpu().long()
                if ctx.cache is not None:
                    ctx.cache[key] = judge_reals
            out["judge_real_acc"] = _share(judge_reals == ctx.real_labels)
            out["judge_probe_real_agreement"] = _share(judge_reals == probe_reals)
    return out


def _share(hits: torch.Tensor) -> float:
    return float(hits.double().mean()) if hits.numel() else float("nan")


def compute_metrics(
    samples: torch.Tensor | str | os.PathLike,
    reals: torch.Tensor | str | os.PathLike,
    *,
    fid: bool = True,
    isc: bool = True,
    kid: bool = True,
    prc: bool = True,
    clip_score: bool = True,
    diversity: bool = True,
    class_accuracy: bool = True,
    extra: Sequence[str] = (),
    labels: Optional[torch.Tensor | Sequence[int]] = None,
    texts: Optional[Sequence[str]] = None,
    class_names: Optional[Sequence[str]] = None,
    real_labels: Optional[torch.Tensor | Sequence[int]] = None,
    train_images: Optional[torch.Tensor | str | os.PathLike] = None,
    train_labels: Optional[torch.Tensor | Sequence[int]] = None,
    inception_weights: Optional[str | os.PathLike] = None,
    clip_model: Any = None,
    lpips_weights: Optional[str] = None,
    lpips_vgg_weights: Optional[str] = None,
    device: str | torch.device = "auto",
    batch_size: int = 256,
    isc_splits: int = 10,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    prc_neighborhood: int = 3,
    clip_score_weight: float = 100.0,
    text_template: str = "a photo of {class_name}",
    diversity_centers_per_class: Optional[int] = 1,
    diversity_max_per_cluster: int = 50,
    lpips_resize: int = 256,
    probe_c: float = 1.0,
    probe_max_iter: int = 1000,
    seed: int = 0,
    verbose: bool = False,
    feature_cache: Optional[dict] = None,
    class_judge: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> dict[str, float]:
    """Score ``samples`` against ``reals``; returns ``{metric key: value}`` (keys described in ``METRIC_INFO``).

    fid/isc/kid/prc: Inception space when ``inception_weights`` is an existing file (keys fid, is_mean, kid_mean,
    precision, recall), otherwise CLIP image-feature space through torch-fidelity's registered ``genvpt-clip``
    extractor (keys fd_clip, is_clip_mean, kd_clip_mean, precision_clip, recall_clip; IS-CLIP needs class_names).
    clip_score: needs texts, or labels + class_names (text = text_template with {class_name} filled in).
    diversity: cluster centres are ``diversity_centers_per_class`` training images per class (all if None).
    class_accuracy: a logistic-regression probe on CLIP features of (train_images, train_labels), applied to the
    samples (their labels are the conditioning classes); ``probe_real_acc`` on the reals when real_labels are given.
    feature_cache: a dict kept by the caller across calls with the *same* reals and train images; their CLIP
    features are stored there and reused (scoring several sample sets against one target).
    class_judge: a second class judge (uint8 images -> class indices; e.g. a PGN-adapted CLIP,
    :func:`genvpt.metrics.judge.load_class_judge`): with class_accuracy also ``class_acc_judge``, its agreement with
    the probe on the samples (``judge_probe_agreement``), and on the reals ``judge_real_acc`` and
    ``judge_probe_real_agreement``.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    as_long = lambda x: None if x is None else torch.as_tensor(x, dtype=torch.long)  # noqa: E731
    ctx = EvalContext(
        samples=load_images(samples),
        reals=load_images(reals),
        labels=as_long(labels),
        texts=list(texts) if texts is not None else None,
        class_names=list(class_names) if class_names is not None else None,
        train_images=load_images(train_images) if train_images is not None else None,
        train_labels=as_long(train_labels),
        real_labels=as_long(real_labels),
        clip=clip_model,
        device=torch.device(device),
        cache=feature_cache,
        options=dict(
            fid=fid, isc=isc, kid=kid, prc=prc, inception_weights=inception_weights, batch_size=batch_size,
            isc_splits=isc_splits, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size,
            prc_neighborhood=prc_neighborhood, clip_score_weight=clip_score_weight, text_template=text_template,
            diversity_centers_per_class=diversity_centers_per_class,
            diversity_max_per_cluster=diversity_max_per_cluster, lpips_weights=lpips_weights,
            lpips_vgg_weights=lpips_vgg_weights, lpips_resize=lpips_resize, probe_c=probe_c,
            probe_max_iter=probe_max_iter, seed=seed, verbose=verbose, class_judge=class_judge,
        ),
    )
    if ctx.labels is not None and len(ctx.labels) != ctx.samples.shape[0]:
        raise ValueError(f"{len(ctx.labels)} labels for {ctx.samples.shape[0]} samples")
    if ctx.train_labels is not None and ctx.train_images is not None and len(ctx.train_labels) != len(ctx.train_images):
        raise ValueError(f"{len(ctx.train_labels)} train labels for {len(ctx.train_images)} train images")
    groups = [g for g, on in zip(BUILTIN_GROUPS, (fid or isc or kid or prc, clip_score, diversity, class_accuracy)) if on]
    unknown = [g for g in extra if g not in METRIC_GROUPS]
    if unknown:
        raise ValueError(f"unknown metric group(s) {unknown}; registered: {sorted(METRIC_GROUPS)}")
    groups += [g for g in extra if g not in groups]
    out: dict[str, float] = {}
    for g in groups:
        res = METRIC_GROUPS[g](ctx)
        clash = sorted(set(res) & set(out))
        if clash:
            raise ValueError(f"metric group {g!r} returned keys already set: {clash}")
        out.update(res)
    out["n_samples"] = int(ctx.samples.shape[0])
    out["n_reals"] = int(ctx.reals.shape[0])
    return out
