"""Registries, torch-fidelity style: metric groups (functions computing several keys) and what each key means.

A metric group is ``fn(ctx: EvalContext) -> dict[str, float]``; ``compute_metrics(..., extra=("name",))`` runs a
registered group in addition to the built-in ones. Every key a group returns should be described with
:func:`register_metric_info` so that the report knows its label, whether higher is better and its definition.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

__all__ = [
    "MetricInfo",
    "METRIC_GROUPS",
    "METRIC_INFO",
    "register_metric",
    "register_metric_info",
    "metric_info",
]


@dataclass(frozen=True)
class MetricInfo:
    key: str  # key in metrics.json / metrics.parquet
    label: str  # column header in the report (e.g. "FD-CLIP")
    higher_is_better: Optional[bool]  # None: not ranked (counts, settings)
    definition: str
    fmt: str = ".4g"
    group: str = "other"


METRIC_GROUPS: dict[str, Callable] = {}
METRIC_INFO: dict[str, MetricInfo] = {}


def register_metric(name: str, fn: Callable | None = None, *, replace: bool = False):
    """Register a metric group ``fn(ctx) -> dict``; usable as a decorator (``@register_metric("name")``)."""

    def deco(f: Callable) -> Callable:
        if name in METRIC_GROUPS and not replace and METRIC_GROUPS[name] is not f:
            raise ValueError(f"metric group {name!r} is already registered")
        METRIC_GROUPS[name] = f
        return f

    return deco(fn) if fn is not None else deco


def register_metric_info(*infos: MetricInfo, replace: bool = True) -> None:
    for info in infos:
        if info.key in METRIC_INFO and not replace:
            raise ValueError(f"metric {info.key!r} is already described")
        METRIC_INFO[info.key] = info


def metric_info(key: str) -> MetricInfo:
    """What ``key`` means; unknown keys get a neutral description (not ranked)."""
    return METRIC_INFO.get(key, MetricInfo(key, key, None, "(no description registered)"))


_I = MetricInfo
register_metric_info(
    # Inception space (torch-fidelity with the Inception weights file)
    _I("fid", "FID", False, "Fréchet distance between Inception-v3 pool3 (2048-d) feature Gaussians of samples and "
       "real images (torch-fidelity inception-v3-compat).", ".3f", "fidelity"),
    _I("is_mean", "IS", True, "Inception Score exp(E KL(p(y|x) || p(y))) over torch-fidelity splits, mean.",
       ".3f", "fidelity"),
    _I("is_std", "IS std", None, "Inception Score, standard deviation over splits.", ".3f", "fidelity"),
    _I("kid_mean", "KID", False, "Kernel Inception Distance: unbiased MMD² with the cubic polynomial kernel on "
       "Inception pool3 features, mean over random subsets.", ".3g", "fidelity"),
    _I("kid_std", "KID std", None, "KID standard deviation over subsets.", ".4f", "fidelity"),
    _I("precision", "precision", True, "Fraction of samples inside the real k-NN manifold (Kynkäänniemi et al., "
       "k=3) in Inception pool3 space.", ".3f", "fidelity"),
    _I("recall", "recall", True, "Fraction of real images inside the samples' k-NN manifold (k=3) in Inception "
       "pool3 space.", ".3f", "fidelity"),
    # CLIP space (offline default): the same formulas on another network's features -- not comparable to FID
    _I("fd_clip", "FD-CLIP", False, "Fréchet distance between Gaussians fitted to the L2-normalised CLIP image "
       "embeddings of samples and real images (the project's CLIP, via a torch-fidelity registered feature "
       "extractor). Not Inception FID.", ".4g", "fidelity"),
    _I("is_clip_mean", "IS-CLIP", True, "Inception-Score formula on CLIP zero-shot class probabilities "
       "(softmax of logit_scale · cos(image, class text)), mean over splits. Not Inception IS.", ".3f", "fidelity"),
    _I("is_clip_std", "IS-CLIP std", None, "IS-CLIP standard deviation over splits.", ".3f", "fidelity"),
    _I("kd_clip_mean", "KD-CLIP", False, "Unbiased MMD² with the cubic polynomial kernel on normalised CLIP image "
       "embeddings, mean over random subsets. Not Inception KID.", ".3g", "fidelity"),
    _I("kd_clip_std", "KD-CLIP std", None, "KD-CLIP standard deviation over subsets.", ".3g", "fidelity"),
    _I("precision_clip", "precision-CLIP", True, "Fraction of samples inside the real k-NN manifold (k=3) in CLIP "
       "image-embedding space.", ".3f", "fidelity"),
    _I("recall_clip", "recall-CLIP", True, "Fraction of real images inside the samples' k-NN manifold (k=3) in CLIP "
       "image-embedding space.", ".3f", "fidelity"),
    # text alignment
    _I("clip_score", "CLIP score", True, "Mean over samples of w·max(cos(CLIP image embedding, CLIP text embedding "
       "of the conditioning text), 0), with w = 100 (torchmetrics scale) unless params say 2.5 (Hessel et al.). "
       "The clamp is per sample.", ".2f", "alignment"),
    # diversity
    _I("diversity_lpips", "intra-LPIPS", True, "Intra-cluster LPIPS-VGG (Ojha et al. 2021): each sample joins the "
       "cluster of its nearest training image (LPIPS); mean pairwise LPIPS within each cluster (at most 50 members), "
       "averaged over non-empty clusters.", ".3g", "diversity"),
    _I("diversity_lpips_std", "intra-LPIPS std", None, "Standard deviation of intra-LPIPS across clusters.",
       ".4f", "diversity"),
    _I("diversity_clip", "intra-CLIP-dist", True, "Intra-cluster diversity as in Ojha et al. 2021 with CLIP-feature "
       "cosine distance 1 - cos instead of LPIPS (LPIPS weights absent): nearest-training-image clusters, mean "
       "pairwise distance within each cluster (at most 50 members), averaged over non-empty clusters.",
       ".3g", "diversity"),
    _I("diversity_clip_std", "intra-CLIP-dist std", None, "Standard deviation of intra-CLIP-dist across clusters.",
       ".4f", "diversity"),
    _I("diversity_clusters", "clusters", None, "Number of clusters with at least two samples.", "d", "diversity"),
    # class fidelity
    _I("class_acc", "class acc", True, "Accuracy of the samples' conditioning class under a logistic-regression "
       "probe on CLIP image embeddings trained on the real target train split.", ".3f", "classes"),
    _I("probe_real_acc", "probe acc (real)", None, "The same probe's accuracy on the real images the samples are "
       "compared with (the ceiling for class acc).", ".3f", "classes"),
    _I("class_acc_judge", "class acc (judge)", True, "Accuracy of the samples' conditioning class under the adapted "
       "classifier metrics.class_judge names (e.g. the PGN-adapted CLIP ViT of the target; definitions.json: which "
       "folder and seed).", ".3f", "classes"),
    _I("judge_probe_agreement", "judge = probe", None, "Share of samples to which the adapted-classifier judge and "
       "the linear probe give the same class.", ".3f", "classes"),
    _I("judge_real_acc", "judge acc (real)", None, "The adapted-classifier judge's accuracy on the real images the "
       "samples are compared with.", ".3f", "classes"),
    _I("judge_probe_real_agreement", "judge = probe (real)", None, "Share of those real images to which the judge "
       "and the linear probe give the same class.", ".3f", "classes"),
    # cost
    _I("trainable_params", "trainable params", None, "Parameters trained for this configuration (0 for a frozen "
       "backbone).", ",d", "cost"),
    _I("trainable_pct", "trainable %", None, "Trainable parameters as a percentage of the frozen backbone's "
       "parameters (from the training record; 0 for a frozen backbone).", ".3f", "cost"),
    _I("model_params", "model params", None, "Parameters of the networks used to sample (generator + tokenizer).",
       ",d", "cost"),
    _I("train_time_s", "train time (s)", None, "Wall-clock training time from the training record.", ".1f", "cost"),
    _I("train_peak_memory_mb", "train peak mem (MiB)", None, "Peak memory during training, from its record.",
       ".0f", "cost"),
    _I("sample_time_per_image_s", "s / image", None, "Sampling wall-clock time per image (batched, inference_mode).",
       ".4f", "cost"),
    _I("sample_peak_memory_mb", "sample peak mem (MiB)", None, "Peak memory while sampling (CUDA max allocated, or "
       "the sampling process's max RSS on CPU).", ".0f", "cost"),
    _I("n_samples", "samples", None, "Number of generated images scored.", "d", "cost"),
    _I("n_reals", "reals", None, "Number of real images they are compared with.", "d", "cost"),
)
register_metric_info(
    # sample counts of the seeded evaluation (genvpt.metrics.scoring)
    _I("n_seeds", "seeds", None, "Sample sets of a report row: one per training seed (adapted rows) or per sampling "
       "seed (frozen rows).", "d", "cost"),
    _I("images_per_set", "images / set", None, "Generated images in each sample set of the row.", "d", "cost"),
    _I("images_per_class", "images / class", None, "Generated images per class in each sample set.", "d", "cost"),
    _I("sampling_seed", "sampling seed", None, "The sampling seed of a set (adapted rows: one fixed seed).", "d",
       "cost"),
)
register_metric_info(
    # the target domain's defining feature where the dataset can tell it (genvpt.metrics.texture, metrics.texture_share)
    _I("texture_share", "textured share", True, "Share of the samples whose background is judged textured (the shapes "
       "target's defining feature: striped / dotted / checkered / gradient backgrounds) by a logistic regression on "
       "21 border statistics, fitted at scoring time on shapes renderings of the target's params in the flat and "
       "textured domains (clean plus blurred / down-up-sampled / noisy copies). The real target's own share is "
       "texture_share_real; the judge's held-out accuracy (clean and blurred, per domain) is in "
       "scores/definitions.json under texture_share.", ".3f", "domain"),
    _I("texture_share_real", "textured share (real)", None, "texture_share of the real target images the samples are "
       "compared with (the reference: 1 for a fully textured target when the judge is right).", ".3f", "domain"),
)
