"""The evaluation sections of params.yaml: ``metrics`` (how samples are scored) and ``report`` (how it is shown);
``sample`` (what is sampled) lives in genvpt/sampling_params.py and is re-exported here. Import-light on purpose:
genvpt/config.py imports this module."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator

from ..sampling_params import SampleConfig, SampleParams
from ..schema import NAME_PATTERN as _NAME, StrictModel

__all__ = ["SampleConfig", "SampleParams", "ClassJudgeParams", "MetricsParams", "ReportParams"]


class ClassJudgeParams(StrictModel):
    """``metrics.class_judge``: the adapted classifier (stage ``classify@<config>-<dataset>``, its output folder
    data/classify/<dataset>/<config>/) that judges the samples' class beside the linear probe."""

    config: str = "pgn"  # a name in classify.configs
    dataset: str = "target"  # a name in classify.datasets whose classes are the scored target's ({} = the target)
    seed: Literal["best_val"] | int = "best_val"  # best_val: the training seed with the highest val top-1

    @field_validator("config", "dataset")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"{v!r} must match {_NAME.pattern} (a name in classify.configs / classify.datasets)")
        return v


class MetricsParams(StrictModel):
    """Scoring options. Every field defaults to the embedded default's value."""

    # torch-fidelity's Inception weights (weights-inception-2015-12-05-6726825d.pth). When the file exists, FID / IS /
    # KID / precision / recall are computed in Inception space; when it does not (the offline default), the same
    # metrics are computed in CLIP image-feature space and named FD-CLIP, IS-CLIP, KD-CLIP, precision-CLIP, recall-CLIP.
    inception_weights: Optional[str] = None
    # which split of the prepared target dataset the samples are compared with: test (the reported protocol: nothing
    # was chosen on it), val (what hyperparameters may be chosen on) or train
    real_split: Literal["test", "val", "train"] = "test"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: int = Field(default=256, ge=1)
    fid: bool = True
    isc: bool = True
    kid: bool = True
    prc: bool = True
    isc_splits: int = Field(default=10, ge=1)
    kid_subsets: int = Field(default=100, ge=1)
    kid_subset_size: int = Field(default=1000, ge=2)  # lowered to the smaller set's size when needed
    prc_neighborhood: int = Field(default=3, ge=1)
    # CLIP score = mean over samples of weight * max(cos(image, text), 0); 100 (torchmetrics scale) or 2.5 (Hessel et al.)
    clip_score: bool = True
    clip_score_weight: Literal[100.0, 2.5] = 100.0
    # conditioning text of a class-conditional sample (also the zero-shot prompt for IS-CLIP's class logits);
    # null: the caption section's sentence_template (the sentence the prompt methods are tuned with)
    text_template: Optional[str] = None
    # intra-cluster diversity (Ojha et al. 2021, as VPT-generative reports it): every training image of the target
    # train split is a cluster centre, up to diversity_centers_per_class of each class (seeded pick) when a class has
    # more; each sample joins its nearest centre; mean pairwise distance within each cluster, averaged over clusters
    diversity: bool = True
    diversity_centers_per_class: Optional[int] = Field(default=10, ge=1)  # null: every training image is a centre
    diversity_max_per_cluster: int = Field(default=50, ge=2)
    # LPIPS-VGG weights (torch-fidelity's weights-vgg16-lpips.pth and torchvision's vgg16-397923af.pth); when either is
    # absent, diversity is measured as CLIP-feature cosine distance and named diversity_clip instead of diversity_lpips
    lpips_weights: Optional[str] = None
    lpips_vgg_weights: Optional[str] = None
    lpips_resize: int = Field(default=256, ge=16)
    # class accuracy of samples under a logistic-regression probe on CLIP image features of the real target train split
    class_accuracy: bool = True
    probe_c: float = Field(default=1.0, gt=0.0)
    probe_max_iter: int = Field(default=1000, ge=10)
    # share of samples whose background is textured (genvpt/metrics/texture.py: a classifier of border statistics
    # fitted on shapes renderings of both domains); auto: on when the target is shapes in the textured domain
    texture_share: Literal["auto"] | bool = "auto"
    # a second class judge of the samples (issue 14 §6): an adapted CLIP classifier of the target trained by a
    # classify@ stage (class_acc_judge, and how it agrees with the probe on the real images); null: the probe only
    class_judge: Optional[ClassJudgeParams] = None
    seed: int = 0

    @field_validator("text_template")
    @classmethod
    def _placeholder(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and "{class_name}" not in v:
            raise ValueError("text_template must contain '{class_name}'")
        return v


class ReportParams(StrictModel):
    """The ``report`` section: the HTML/markdown report of every scored configuration."""

    title: str = "genvpt: frozen generators and prompts on the target domain"
    grid_images_per_class: int = Field(default=6, ge=1)  # columns of each configuration's sample grid
    grid_max_classes: int = Field(default=12, ge=1)  # rows (one class per row)
    grid_scale: int = Field(default=2, ge=1, le=8)  # nearest-neighbour upscaling of the grid images
    # headline comparisons "row_a:row_b" (each difference stated with both spreads and whether it is beyond them)
    compare: list[str] = Field(default_factory=lambda: [
        "vpt-ar:ar", "vpt-maskgit:maskgit", "vpt-ar-factorized:vpt-ar", "vpt-maskgit-factorized:vpt-maskgit",
        "vpt-ar-factorized:ar", "vpt-maskgit-factorized:maskgit", "mvp:var", "lora:mvp"])

    @field_validator("compare")
    @classmethod
    def _pairs(cls, v: list[str]) -> list[str]:
        bad = [x for x in v if x.count(":") != 1 or not all(x.split(":"))]
        if bad:
            raise ValueError(f"compare entries must be 'row_a:row_b', got {bad}")
        return v
