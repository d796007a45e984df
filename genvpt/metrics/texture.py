"""``texture_share``: the share of a sample set's images whose background is textured -- the defining feature of the
``shapes`` dataset's ``textured`` domain (striped / dotted / checkered / gradient backgrounds), so that "adapted" shows
in numbers as well as in the sample grids.

The judge (:class:`TextureJudge`) is a logistic regression on 21 pixel statistics of the image *border*, where the
centred shapes of the embedded default rarely reach: for two rings (2 and 4 px wide at 32 px) the 50/75/90 %
quantiles of each pixel's colour distance to the ring's median colour and the mean / 75 % quantile of neighbouring
pixel differences; within-patch spread and between-patch colour distance of the four corner patches; and, over 12
border segments (3 per side), quantiles of the within-segment spread and of each segment's median-colour offset (a
gradient changes colour between segments, stripes / checks / dots within them). A plain background with a shape
touching the border deviates in a few segments; a texture in most of them.

:func:`fit_shapes_judge` trains it at scoring time on images rendered by :mod:`genvpt.datasets.shapes` with the
target's own ``dataset.shapes`` params, in the ``flat`` (label 0) and ``textured`` (label 1) domains, at seeds other
than the dataset's (``dataset.seed`` + 7919; held out: + 7920): clean images plus copies degraded the way generated
samples are (Gaussian blur, box down- and bilinear up-sampling, pixel noise), so that blurrier samples are still
judged by their background. Its accuracy is then measured on held-out renderings (another seed), clean and under each
degradation, and recorded (``TextureJudge.record``; the score stage writes it to definitions.json).

Measured for the embedded default (params.yaml, 32 px, 12 classes; fit on 600 + 600 renderings): held-out renderings
(600 flat + 600 textured) 99.9 % clean, 98.2 % mean over the blurred conditions of :data:`BLURRED` (worst: 95.3 %, 4x
down-up, where 6.8 % of flat images are called textured: large shapes smeared into the border; blur sigma 2: 0 % flat
called textured, 94.7 % of textured found, every miss dotted: 76 % of those found); real prepared images: 0 of 12000
flat source images (train + val) called textured, 99.75 % of 1200 textured target images found (240 / 240 of the test
split), 98.2 % mean / 96.8 % worst over the same blurred conditions. Images reconstructed by the flat-trained msvq
tokenizer (PSNR 16 dB on textured images): 0 % of 1200 flat reconstructions and 78.8 % of 1200 textured ones called
textured (checkered 88 %, dotted 50 %, gradient 92 %, striped 85 %); the dotted reconstructions inspected had lost
their dots, so calling them plain is right.

``texture_share`` is on when ``metrics.texture_share`` is true, or ``auto`` and the target dataset is ``shapes`` in the
``textured`` domain (:func:`texture_share_enabled`); otherwise the key is absent (not 0).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "TextureJudge",
    "texture_features",
    "texture_share_enabled",
    "fit_shapes_judge",
    "render_shapes",
    "DEGRADATIONS",
    "BLURRED",
    "gaussian_blur",
    "down_up",
    "add_noise",
]

REF_SIZE = 32  # border widths below are given at 32 px and scaled with the image side


# --------------------------------------------------------------------------------------------------------------
# degradations (generated samples are blurrier than real images: the tokenizers' decoders blur)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of float [N,C,H,W] (replicate padding)."""
    if sigma <= 0:
        return x
    r = max(1, int(math.ceil(3 * sigma)))
    k = torch.exp(-torch.arange(-r, r + 1, dtype=x.dtype) ** 2 / (2 * sigma * sigma))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def down_up(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Box-downsample by ``factor`` and upsample back (bilinear): what a tokenizer with that stride can keep."""
    h, w = x.shape[-2:]
    return F.interpolate(F.avg_pool2d(x, factor), size=(h, w), mode="bilinear", align_corners=False)


def add_noise(x: torch.Tensor, std: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(int(seed))
    return (x + std * torch.randn(x.shape, generator=g, dtype=x.dtype)).clamp(0, 255)


# the held-out conditions the judge's accuracy is reported under (name -> float image -> float image)
DEGRADATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "clean": lambda x: x,
    "blur_1": lambda x: gaussian_blur(x, 1.0),
    "blur_1.5": lambda x: gaussian_blur(x, 1.5),
    "blur_2": lambda x: gaussian_blur(x, 2.0),
    "down_up_2": lambda x: down_up(x, 2),
    "down_up_4": lambda x: down_up(x, 4),
    "blur_1+noise_8": lambda x: add_noise(gaussian_blur(x, 1.0), 8.0, seed=1),
    "noise_15": lambda x: add_noise(x, 15.0, seed=2),
}
BLURRED = ("blur_1", "blur_1.5", "blur_2", "down_up_2", "down_up_4", "blur_1+noise_8")


def _augment(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """One degraded copy of each image: eight equal groups (clean, blur 0.8 / 1.3 / 1.8 / 2.2, down-up x2 / x4,
    down-up x2 + blur 0.8), then pixel noise (std 2..20) on half of them."""
    n = len(x)
    ops = [lambda z: z, lambda z: gaussian_blur(z, 0.8), lambda z: gaussian_blur(z, 1.3),
           lambda z: gaussian_blur(z, 1.8), lambda z: gaussian_blur(z, 2.2), lambda z: down_up(z, 2),
           lambda z: down_up(z, 4), lambda z: gaussian_blur(down_up(z, 2), 0.8)]
    out = x.clone()
    for idx, op in zip(np.array_split(rng.permutation(n), len(ops)), ops):
        if len(idx):
            out[idx] = op(x[idx])
    for idx in np.array_split(rng.permutation(n), 4)[:2]:
        if len(idx):
            out[idx] = add_noise(out[idx], float(rng.uniform(2.0, 20.0)), seed=int(rng.integers(2**31)))
    return out


# --------------------------------------------------------------------------------------------------------------
# features


def _ring(h: int, w: int, b: int) -> torch.Tensor:
    m = torch.zeros(h, w, dtype=torch.bool)
    m[:b] = m[-b:] = True
    m[:, :b] = m[:, -b:] = True
    return m


@functools.lru_cache(maxsize=16)
def _layout(h: int, w: int) -> dict:
    """Flat pixel indices of the border regions of an h x w image: two rings (2 and 4 px at 32 px, with the pairs of
    horizontally / vertically adjacent ring pixels), the four corner patches and the 12 border segments."""
    s = min(h, w) / REF_SIZE
    idx = torch.arange(h * w).view(h, w)
    out: dict = {"rings": []}
    for b in (2, 4):
        m = _ring(h, w, max(1, round(b * s)))
        mh, mv = m[:, 1:] & m[:, :-1], m[1:] & m[:-1]
        out["rings"].append((idx[m], idx[:, :-1][mh], idx[:, 1:][mh], idx[:-1][mv], idx[1:][mv]))
    k = max(2, round(0.15 * min(h, w)))
    out["corners"] = torch.stack([idx[:k, :k], idx[:k, -k:], idx[-k:, :k], idx[-k:, -k:]]).flatten(1)  # 4, k*k
    b, n = max(1, round(3 * s)), min(h, w) // 3  # 12 segments: 3 per side, b deep, n long
    segs = []
    for lo_w, lo_h in ((0, 0), ((w - n) // 2, (h - n) // 2), (w - n, h - n)):
        segs += [idx[:b, lo_w:lo_w + n], idx[-b:, lo_w:lo_w + n], idx[lo_h:lo_h + n, :b].T, idx[lo_h:lo_h + n, -b:].T]
    out["segments"] = torch.stack([q.reshape(-1) for q in segs])  # 12, b*n
    return out


def _spread_and_median(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[N,3,R,P] regions -> (mean colour distance of each region's pixels to its median colour [N,R], the medians
    [N,R,3])."""
    med = p.median(-1, keepdim=True).values
    return (p - med).norm(dim=1).mean(-1), med.squeeze(-1).transpose(1, 2)


def texture_features(images: torch.Tensor) -> torch.Tensor:
    """[N,21] border statistics (log1p) of uint8 or float (0..255) [N,3,H,W] images."""
    x = images.float()
    n, c, h, w = x.shape
    if c != 3:
        raise ValueError(f"images must be [N,3,H,W], got {tuple(images.shape)}")
    lay = _layout(h, w)
    flat = x.reshape(n, 3, h * w)
    out = []
    for ring, h0, h1, v0, v1 in lay["rings"]:
        p = flat[:, :, ring]  # N,3,P
        d = (p - p.median(-1, keepdim=True).values).norm(dim=1)
        out.append(torch.quantile(d, torch.tensor([0.5, 0.75, 0.9]), dim=1).T)
        nd = torch.cat([(flat[:, :, h1] - flat[:, :, h0]).abs().sum(1),
                        (flat[:, :, v1] - flat[:, :, v0]).abs().sum(1)], 1)  # neighbouring pixel differences
        out.append(torch.stack([nd.mean(1), torch.quantile(nd, 0.75, dim=1)], 1))
    spread, meds = _spread_and_median(flat[:, :, lay["corners"]])
    out.append(torch.stack([spread.mean(1), spread.min(1).values, torch.cdist(meds, meds).flatten(1).max(1).values], 1))
    seg_spread, seg_meds = _spread_and_median(flat[:, :, lay["segments"]])
    offset = (seg_meds - seg_meds.median(1, keepdim=True).values).norm(dim=-1)
    qs = torch.tensor([0.0, 0.25, 0.5, 0.75])
    out += [torch.quantile(seg_spread, qs, dim=1).T, torch.quantile(offset, qs, dim=1).T]
    return torch.log1p(torch.cat(out, 1))


# --------------------------------------------------------------------------------------------------------------
# the judge


class TextureJudge:
    """Textured-background classifier: standardised :func:`texture_features` -> logistic regression.
    ``image_size``: the side it was fitted at (other sizes are resized to it); ``record``: how it was fitted and its
    held-out accuracies."""

    def __init__(self, image_size: int, c: float = 1.0):
        self.image_size = int(image_size)
        self.c = float(c)
        self.model: Any = None
        self.record: dict = {}

    def _features(self, images: torch.Tensor, batch: int = 512) -> np.ndarray:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [N,3,H,W], got {tuple(images.shape)}")
        out = []
        for i in range(0, len(images), batch):
            x = images[i:i + batch].float()
            if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
                x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True,
                                  align_corners=False)
            out.append(texture_features(x).numpy())
        return np.concatenate(out) if out else np.zeros((0, 21))

    def fit(self, flat: torch.Tensor, textured: torch.Tensor, *, seed: int = 0, augment: bool = True) -> "TextureJudge":
        """Fit on plain-background (label 0) and textured (label 1) images, plus one degraded copy of each."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        rng = np.random.default_rng(seed)
        parts, labels = [flat.float(), textured.float()], [np.zeros(len(flat)), np.ones(len(textured))]
        if augment:
            parts += [_augment(flat.float(), rng), _augment(textured.float(), rng)]
            labels += labels[:2]
        x = np.concatenate([self._features(p) for p in parts])
        y = np.concatenate(labels)
        self.model = make_pipeline(StandardScaler(), LogisticRegression(C=self.c, max_iter=5000)).fit(x, y)
        self.record.update({"fit_images": {"flat": int(len(flat)), "textured": int(len(textured)),
                                           "degraded_copies": bool(augment)}})
        return self

    def predict(self, images: torch.Tensor) -> np.ndarray:
        """True where an image's background is judged textured."""
        if self.model is None:
            raise RuntimeError("TextureJudge.fit first")
        if len(images) == 0:
            return np.zeros(0, dtype=bool)
        return self.model.predict(self._features(images)).astype(bool)

    def share(self, images: torch.Tensor) -> float:
        """The share of ``images`` judged textured (NaN for no images)."""
        p = self.predict(images)
        return float(p.mean()) if len(p) else math.nan

    def evaluate(self, flat: torch.Tensor, textured: torch.Tensor,
                 conditions: Optional[dict[str, Callable]] = None) -> dict:
        """Accuracy (mean of the two per-domain accuracies), and the share judged textured of each domain, under
        each condition of :data:`DEGRADATIONS`; also the mean accuracy over the :data:`BLURRED` conditions."""
        conditions = DEGRADATIONS if conditions is None else conditions
        out: dict = {}
        for name, fn in conditions.items():
            pf = self.predict(fn(flat.float()))
            pt = self.predict(fn(textured.float()))
            out[name] = {"accuracy": round(float((1 - pf.mean() + pt.mean()) / 2), 4),
                         "flat_judged_textured": round(float(pf.mean()), 4),
                         "textured_judged_textured": round(float(pt.mean()), 4)}
        blurred = [out[k]["accuracy"] for k in BLURRED if k in out]
        summary = {"n_flat": int(len(flat)), "n_textured": int(len(textured)), "conditions": out}
        if "clean" in out:
            summary["accuracy_clean"] = out["clean"]["accuracy"]
        if blurred:
            summary["accuracy_blurred_mean"] = round(float(np.mean(blurred)), 4)
            summary["accuracy_blurred_min"] = round(float(np.min(blurred)), 4)
        return summary


# --------------------------------------------------------------------------------------------------------------
# the switch and the shapes judge


def texture_share_enabled(setting: Any, dataset: Any) -> bool:
    """``metrics.texture_share`` resolved against the target ``dataset`` params (None: unknown). ``auto``: on for
    ``shapes`` in the ``textured`` domain; ``true``: on, but only a ``shapes`` target can tell (an error otherwise);
    ``false``: off."""
    if setting is False or setting is None:
        return False
    name = getattr(dataset, "name", None)
    domain = getattr(getattr(dataset, "shapes", None), "domain", None)
    if setting == "auto":
        return name == "shapes" and domain == "textured"
    if setting is True:
        if name != "shapes":
            raise ValueError(f"metrics.texture_share: true needs a shapes target dataset (dataset.name is {name!r}): "
                             f"the judge is trained on shapes renderings; use auto or false")
        return True
    raise ValueError(f"metrics.texture_share must be auto, true or false, got {setting!r}")


def render_shapes(shapes: Any, image_size: int, domain: str, seed: int, n: int) -> torch.Tensor:
    """About ``n`` images (whole rounds over the classes) of ``dataset.shapes`` params ``shapes`` in ``domain``, uint8
    [N,3,H,W]."""
    from ..datasets.shapes import ShapesDataset

    classes = list(shapes.classes) if shapes.classes else None
    n_classes = len(classes) if classes else 12
    ds = ShapesDataset(image_size=image_size, domain=domain, images_per_class=max(1, math.ceil(n / n_classes)),
                       classes=classes, max_count=shapes.max_count, seed=seed, size_scale=shapes.size_scale,
                       colours=shapes.colours, rotation_range=shapes.rotation_range, positions=shapes.positions,
                       sizes=shapes.sizes, position_jitter=shapes.position_jitter)
    arr = np.stack([np.asarray(r.image.convert("RGB"), dtype=np.uint8) for r in ds])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


FIT_SEED_OFFSET = 7919  # render seeds dataset.seed + these: streams no prepared split uses
EVAL_SEED_OFFSET = 7920


def fit_shapes_judge(dataset: Any, *, n_fit: int = 600, n_eval: int = 600, seed: int = 0) -> TextureJudge:
    """A :class:`TextureJudge` fitted on ``n_fit`` rendered images per domain (flat / textured) of the target's
    ``dataset.shapes`` params, with its accuracy on ``n_eval`` held-out renderings per domain in ``record``."""
    shapes, size = dataset.shapes, int(dataset.image_size)
    fit_seed, eval_seed = int(dataset.seed) + FIT_SEED_OFFSET, int(dataset.seed) + EVAL_SEED_OFFSET
    judge = TextureJudge(size).fit(render_shapes(shapes, size, "flat", fit_seed, n_fit),
                                   render_shapes(shapes, size, "textured", fit_seed, n_fit), seed=seed)
    held = judge.evaluate(render_shapes(shapes, size, "flat", eval_seed, n_eval),
                          render_shapes(shapes, size, "textured", eval_seed, n_eval))
    judge.record.update({
        "judge": "logistic regression on 21 border statistics (texture_features), fitted on shapes renderings of "
                 "the target's dataset.shapes params in the flat and textured domains, clean plus one degraded "
                 "(blurred / down-up-sampled / noisy) copy each",
        "image_size": size, "fit_seed": fit_seed, "heldout_seed": eval_seed,
        "heldout": held,
    })
    return judge
