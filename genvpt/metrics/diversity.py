"""Intra-cluster diversity (Ojha et al., CVPR 2021, "Few-shot image generation via cross-domain correspondence"),
the diversity measure VPT-generative (Sohn et al., CVPR 2023) reports.

Cluster centres are the training images: every one of them in the few-shot setting the paper was made for, or, when
a class has more, ``centers_per_class`` of each class picked with a seeded generator (``metrics.
diversity_centers_per_class``, 10 by default, so 10-shot data uses every image; null uses every image always).
Not one cluster per class: a class with several modes would then score the distance between its modes, not the
variety the generator produces around each training image. Each sample joins the cluster of its nearest centre
(over all classes); within each cluster at most ``max_per_cluster`` members (chosen with a seeded generator) give all
pairwise (i < j) distances, averaged per cluster; the result is the mean (and std) over clusters with at least two
members (empty clusters and clusters of one are ignored; their number is reported as ``diversity_clusters``).

The distance is LPIPS-VGG when its weights are available (torch-fidelity's ``SampleSimilarityLPIPS``), otherwise the
cosine distance ``1 - cos`` between CLIP image embeddings, both for the assignment and within clusters; the outputs
are named ``diversity_lpips`` or ``diversity_clip`` accordingly, so a CLIP-distance value is never shown as LPIPS.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

__all__ = [
    "intra_cluster_diversity",
    "cosine_distance_fn",
    "assign_to_centers",
    "select_centers",
    "PAPER_CENTERS_PER_CLASS",
    "lpips_available",
    "LpipsDistance",
]

VGG16_FILE = "vgg16-397923af.pth"  # torchvision's VGG16_Weights.IMAGENET1K_V1 file name
LPIPS_FILE = "weights-vgg16-lpips.pth"  # torch-fidelity's LPIPS linear-layer weights file name


PAPER_CENTERS_PER_CLASS = 10  # metrics.diversity_centers_per_class's default: all images of 10-shot data


def select_centers(labels: torch.Tensor, per_class: Optional[int], seed: int = 0) -> torch.Tensor:
    """Sorted indices of the training images used as cluster centres: every image of a class with at most
    ``per_class`` images, ``per_class`` of it (seeded pick) otherwise; every image when ``per_class`` is None."""
    if per_class is not None and per_class < 1:
        raise ValueError(f"per_class must be at least 1 (or None: every image), got {per_class}")
    if per_class is None:
        return torch.arange(len(labels))
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        picks.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.sort(torch.cat(picks)).values


def assign_to_centers(dist_to_centers: torch.Tensor) -> torch.Tensor:
    """Cluster index of every sample: argmin over the [N, K] distance matrix."""
    return dist_to_centers.argmin(dim=1)


def cosine_distance_fn(features: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Pairwise distance on indices into ``features``: ``1 - cos``."""
    f = F.normalize(features.double(), dim=-1)

    def dist(i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        return 1.0 - (f[i] * f[j]).sum(-1)

    return dist


def intra_cluster_diversity(
    assignment: torch.Tensor,
    pair_distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    num_clusters: Optional[int] = None,
    max_per_cluster: int = 50,
    seed: int = 0,
) -> tuple[float, float, int]:
    """(mean over clusters of the mean pairwise distance, std over clusters, number of clusters used).

    ``assignment`` [N] gives each sample's cluster; ``pair_distance(i, j)`` returns distances of sample pairs given as
    index tensors. Clusters with fewer than two members are ignored; no usable cluster gives NaN.
    """
    g = torch.Generator().manual_seed(seed)
    k = int(num_clusters) if num_clusters is not None else int(assignment.max()) + 1 if len(assignment) else 0
    per_cluster = []
    for c in range(k):
        members = torch.nonzero(assignment == c).flatten()
        if len(members) < 2:
            continue
        if len(members) > max_per_cluster:
            members = members[torch.randperm(len(members), generator=g)[:max_per_cluster]]
        ii, jj = torch.triu_indices(len(members), len(members), offset=1)
        per_cluster.append(float(pair_distance(members[ii], members[jj]).double().mean()))
    if not per_cluster:
        return float("nan"), float("nan"), 0
    t = torch.tensor(per_cluster, dtype=torch.float64)
    return float(t.mean()), float(t.std(unbiased=False)), len(per_cluster)


# ---------------------------------------------------------------------------------------------------------------
# LPIPS (torch-fidelity's implementation; weights must already be on disk)


def _lpips_files(lpips_weights: Optional[str], vgg_weights: Optional[str]) -> tuple[Optional[Path], Optional[Path]]:
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    lp = Path(lpips_weights) if lpips_weights else hub / LPIPS_FILE
    vg = Path(vgg_weights) if vgg_weights else hub / VGG16_FILE
    return (lp if lp.is_file() else None), (vg if vg.is_file() else None)


def lpips_available(lpips_weights: Optional[str] = None, vgg_weights: Optional[str] = None) -> bool:
    lp, vg = _lpips_files(lpips_weights, vgg_weights)
    return lp is not None and vg is not None


@contextlib.contextmanager
def _hub_dir_with(files: dict[str, Path]):
    """A temporary torch hub dir whose checkpoints/ holds ``files`` under the names torch-fidelity asks for."""
    old = torch.hub.get_dir()
    with tempfile.TemporaryDirectory(prefix="genvpt-hub-") as tmp:
        ck = Path(tmp) / "checkpoints"
        ck.mkdir()
        for name, src in files.items():
            os.symlink(Path(src).resolve(), ck / name)
        torch.hub.set_dir(tmp)
        try:
            yield
        finally:
            torch.hub.set_dir(old)


class LpipsDistance:
    """LPIPS-VGG between uint8 images with torch-fidelity's ``SampleSimilarityLPIPS`` modules.

    ``lpips(a, b)`` matches ``SampleSimilarityLPIPS.forward`` for paired batches; :meth:`to_centers` and
    :meth:`pair_fn` compute each image's VGG features once and reuse them for every pair it belongs to (the same
    formula: sum over layers of the spatial mean of the learned channel weighting of squared normalised differences).
    """

    def __init__(self, lpips_weights: Optional[str] = None, vgg_weights: Optional[str] = None, *,
                 resize: Optional[int] = 256, device: torch.device | str = "cpu", batch_size: int = 32):
        from torch_fidelity.sample_similarity_lpips import SampleSimilarityLPIPS

        lp, vg = _lpips_files(lpips_weights, vgg_weights)
        if lp is None or vg is None:
            raise FileNotFoundError(f"LPIPS needs {LPIPS_FILE} and {VGG16_FILE} (given: {lpips_weights}, {vgg_weights})")
        # torch.hub reads a file already in the hub cache without downloading (the hash is checked only on download)
        with _hub_dir_with({LPIPS_FILE: lp, VGG16_FILE: vg}):
            self.model = SampleSimilarityLPIPS("lpips-vgg16", sample_similarity_resize=resize,
                                               sample_similarity_dtype="uint8")
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.batch_size = batch_size

    @torch.inference_mode()
    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised VGG features (5 layers) of uint8 images, on the LPIPS device."""
        from torch_fidelity.sample_similarity_lpips import normalize_tensor

        m = self.model
        outs: list[list[torch.Tensor]] = [[] for _ in range(m.L)]
        for s in range(0, images.shape[0], self.batch_size):
            x = m.normalize(images[s:s + self.batch_size].to(self.device))
            if m.sample_similarity_resize is not None:
                x = m.resize(x, m.sample_similarity_resize)
            for k, o in enumerate(m.net(x)):
                outs[k].append(normalize_tensor(o))
        return [torch.cat(o) for o in outs]

    @torch.inference_mode()
    def from_features(self, fa: list[torch.Tensor], fb: list[torch.Tensor]) -> torch.Tensor:
        """LPIPS of paired feature rows -> [N] float64 on CPU."""
        from torch_fidelity.sample_similarity_lpips import spatial_average

        m = self.model
        val = sum(spatial_average(m.lins[k].model((fa[k] - fb[k]) ** 2)) for k in range(m.L))
        return val.flatten().double().cpu()

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """LPIPS of paired uint8 image batches a[i], b[i] -> [N] (float64, CPU)."""
        out = [self.from_features(self.features(a[s:s + self.batch_size]), self.features(b[s:s + self.batch_size]))
               for s in range(0, a.shape[0], self.batch_size)]
        return torch.cat(out) if out else torch.empty(0, dtype=torch.float64)

    def to_centers(self, images: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        """[N, K] LPIPS between every image and every centre image."""
        fc = self.features(centers)
        rows = []
        for s in range(0, images.shape[0], self.batch_size):
            fi = self.features(images[s:s + self.batch_size])
            b = fi[0].shape[0]
            cols = [self.from_features(fi, [f[k:k + 1].expand(b, *f.shape[1:]) for f in fc]) for k in range(len(centers))]
            rows.append(torch.stack(cols, dim=1))
        return torch.cat(rows)

    def pair_fn(self, images: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """``dist(i, j)`` on indices into ``images``; features of the indices involved are computed once per call."""

        def dist(i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
            uniq, inv = torch.unique(torch.cat([i, j]), return_inverse=True)
            feats = self.features(images[uniq])
            ii, jj = inv[: len(i)].to(self.device), inv[len(i):].to(self.device)
            out = [self.from_features([f[ii[s:s + self.batch_size]] for f in feats],
                                      [f[jj[s:s + self.batch_size]] for f in feats])
                   for s in range(0, len(i), self.batch_size)]
            return torch.cat(out)

        return dist
