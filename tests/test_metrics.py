"""Metrics against hand-computed values on small feature sets, and the torch-fidelity paths (registered CLIP extractor,
Inception weights file) on tiny random networks."""
from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import linalg

from _metrics_stubs import class_images, tiny_clip
from genvpt.metrics import (
    CLIP_EXTRACTOR,
    CLIP_KEYS,
    METRIC_INFO,
    ClipFeatureExtractor,
    MetricsParams,
    compute_metrics,
    encode_images,
    feature_metrics,
    fidelity_metrics,
    register_metric,
)
from genvpt.metrics.clip_score import clip_score_from_embeddings
from genvpt.metrics.diversity import assign_to_centers, cosine_distance_fn, intra_cluster_diversity, select_centers
from genvpt.metrics.probe import LinearProbe


def _exact_gaussian(n: int, mean: np.ndarray, cov: np.ndarray, seed: int) -> torch.Tensor:
    """n points whose empirical mean and (ddof=1) covariance are exactly ``mean`` and ``cov``."""
    d = len(mean)
    z = np.random.default_rng(seed).standard_normal((n, d))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # whiten: cov(z) = I
    return torch.from_numpy(z @ np.linalg.cholesky(cov).T + mean)


@pytest.fixture(scope="module")
def clip():
    return tiny_clip()


# ---------------------------------------------------------------------------------------------------- FD / KD / PR / IS


def test_fd_of_a_set_with_itself_is_zero():
    x = torch.randn(200, 8, dtype=torch.float64)
    m = feature_metrics(x, x, kid_subsets=5, kid_subset_size=50)
    assert abs(m["fd_clip"]) < 1e-8
    assert m["precision_clip"] == 1.0 and m["recall_clip"] == 1.0
    y = x + 1.0  # shift every coordinate by 1: FD = d * 1
    assert feature_metrics(y, x, kid_subsets=5, kid_subset_size=50)["fd_clip"] == pytest.approx(8.0, rel=1e-6)


def test_fd_of_two_gaussians_matches_the_closed_form():
    d = 4
    mu1, mu2 = np.zeros(d), np.array([1.0, -2.0, 0.5, 0.0])
    s1, s2 = np.array([1.0, 2.0, 0.5, 1.0]), np.array([2.0, 1.0, 0.5, 3.0])
    x = _exact_gaussian(500, mu1, np.diag(s1**2), 0)
    y = _exact_gaussian(400, mu2, np.diag(s2**2), 1)
    # diagonal covariances: ||mu1 - mu2||^2 + sum (s1 - s2)^2
    closed = float(((mu1 - mu2) ** 2).sum() + ((s1 - s2) ** 2).sum())
    assert feature_metrics(x, y, kid_subsets=2, kid_subset_size=100)["fd_clip"] == pytest.approx(closed, rel=1e-6)
    # full covariances: ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))
    a = np.random.default_rng(3).standard_normal((d, d))
    c1, c2 = a @ a.T + np.eye(d), np.diag(s2**2)
    x, y = _exact_gaussian(500, mu1, c1, 4), _exact_gaussian(500, mu2, c2, 5)
    closed = float(((mu1 - mu2) ** 2).sum() + np.trace(c1 + c2 - 2 * linalg.sqrtm(c1 @ c2).real))
    assert feature_metrics(x, y, kid_subsets=2, kid_subset_size=100)["fd_clip"] == pytest.approx(closed, rel=1e-6)


def _unbiased_mmd2_poly(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1.0) ** 3  # noqa: E731 -- KID's kernel: gamma = 1/d, coef0 = 1, degree 3
    m, n = len(x), len(y)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
            - 2 * kxy.mean())


def test_kd_is_the_unbiased_mmd_estimate():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(60, 5, generator=g), torch.randn(60, 5, generator=g) + 0.7
    # one subset holding every point: exactly the unbiased MMD^2 estimate with the cubic polynomial kernel
    kd = feature_metrics(x, y, kid_subsets=1, kid_subset_size=60)["kd_clip_mean"]
    assert kd == pytest.approx(_unbiased_mmd2_poly(x.double().numpy(), y.double().numpy()), rel=1e-4)
    # unbiased: two samples of one distribution average to ~0 (and can go negative); a shift gives a clearly positive value
    same = [feature_metrics(torch.randn(200, 5, generator=g), torch.randn(200, 5, generator=g),
                            kid_subsets=20, kid_subset_size=100, seed=s)["kd_clip_mean"] for s in range(5)]
    shifted = feature_metrics(torch.randn(200, 5, generator=g) + 0.5, torch.randn(200, 5, generator=g),
                              kid_subsets=20, kid_subset_size=100)["kd_clip_mean"]
    assert abs(float(np.mean(same))) < 0.1 * shifted
    assert min(same) < 0.02 * shifted


def test_precision_recall_on_constructed_sets():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    real = torch.cat([c + 0.1 * torch.randn(20, 2, generator=g) for c in centers])  # 80 points in 4 tight clusters
    copies = real[:40]  # exact copies of the real points of the first two clusters
    outliers = torch.tensor([100.0, 100.0]) + 0.1 * torch.randn(20, 2, generator=g)
    gen = torch.cat([copies, outliers])
    m = feature_metrics(gen, real, kid_subsets=2, kid_subset_size=20)
    assert m["precision_clip"] == pytest.approx(40 / 60)  # the 40 copies lie on real points, the outliers far away
    assert m["recall_clip"] == pytest.approx(40 / 80)  # clusters 3 and 4 are not covered by any generated ball


def test_inception_score_formula_on_known_logits():
    c = 6
    onehot = torch.eye(c).repeat(10, 1) * 60.0  # confident and uniform over classes: IS = number of classes
    assert feature_metrics(torch.randn(60, 3), torch.randn(60, 3), gen_logits=onehot, isc_splits=1,
                           kid_subsets=1, kid_subset_size=10)["is_clip_mean"] == pytest.approx(c, rel=1e-3)
    same = torch.zeros(60, c)
    same[:, 0] = 60.0  # always the same class: IS = 1
    assert feature_metrics(torch.randn(60, 3), torch.randn(60, 3), gen_logits=same, isc_splits=1,
                           kid_subsets=1, kid_subset_size=10)["is_clip_mean"] == pytest.approx(1.0, rel=1e-3)


# ----------------------------------------------------------------------------------------- torch-fidelity: CLIP space


def test_registered_clip_extractor_path_through_torch_fidelity(clip, caplog):
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    assert FEATURE_EXTRACTORS_REGISTRY[CLIP_EXTRACTOR] is ClipFeatureExtractor
    s, _ = class_images(12, seed=1)
    r, _ = class_images(12, seed=2)
    sink: list = []
    with caplog.at_level(logging.WARNING, logger="genvpt.metrics.fidelity"):
        out, space = fidelity_metrics(s, r, clip_model=clip, class_texts=["a red", "a blue", "a green", "a grey"],
                                      feature_sink=sink, inception_weights="/nonexistent/inception.pth",
                                      kid_subsets=5, kid_subset_size=20, batch_size=16)
        fidelity_metrics(s, r, clip_model=clip, class_texts=["a x"], inception_weights="/nonexistent/inception.pth",
                         kid_subsets=2, kid_subset_size=20)
    assert space == "clip"
    assert set(out) == set(CLIP_KEYS.values())  # named FD-CLIP etc., never fid / kid
    assert sum("Inception weights" in r.message for r in caplog.records) == 1  # said once
    # the same numbers as torch-fidelity's formulas on the features our CLIP gives directly
    fs, fr = encode_images(clip, s), encode_images(clip, r)
    assert torch.allclose(torch.cat(sink), torch.cat([fs, fr]), atol=1e-5)
    ref = feature_metrics(fs, fr, kid_subsets=5, kid_subset_size=20)
    for k in ("fd_clip", "precision_clip", "recall_clip"):
        assert out[k] == pytest.approx(ref[k], rel=1e-3, abs=1e-6)
    assert out["kd_clip_mean"] == pytest.approx(ref["kd_clip_mean"], rel=1e-2, abs=1e-6)
    assert out["is_clip_mean"] >= 1.0


def test_compute_metrics_identical_sets_and_all_keys_described(clip):
    imgs, labels = class_images(10, seed=4)
    train, train_labels = class_images(8, seed=5)
    m = compute_metrics(imgs, imgs, labels=labels, real_labels=labels, class_names=["r", "g", "b", "k"],
                        train_images=train, train_labels=train_labels, clip_model=clip, kid_subsets=3)
    assert abs(m["fd_clip"]) < 1e-4
    assert m["precision_clip"] == 1.0 and m["recall_clip"] == 1.0
    assert "fid" not in m and "kid_mean" not in m
    assert m["n_samples"] == 40 and m["n_reals"] == 40
    assert set(m) <= set(METRIC_INFO), sorted(set(m) - set(METRIC_INFO))
    assert 0.0 <= m["class_acc"] <= 1.0 and 0.0 <= m["clip_score"] <= 100.0


def test_extension_registry(clip):
    @register_metric("mean_brightness", replace=True)
    def _bright(ctx):
        return {"mean_brightness": float(ctx.samples.float().mean())}

    imgs = torch.full((4, 3, 8, 8), 10, dtype=torch.uint8)
    m = compute_metrics(imgs, imgs, fid=False, isc=False, kid=False, prc=False, clip_score=False, diversity=False,
                        class_accuracy=False, extra=("mean_brightness",))
    assert m["mean_brightness"] == 10.0
    with pytest.raises(ValueError, match="unknown metric group"):
        compute_metrics(imgs, imgs, fid=False, isc=False, kid=False, prc=False, clip_score=False, diversity=False,
                        class_accuracy=False, extra=("nope",))


# ------------------------------------------------------------------------------------- torch-fidelity: Inception space


def test_inception_path_with_a_weights_file(tmp_path, monkeypatch):
    """A random state dict with torch-fidelity's Inception layout stands in for the real file (not downloadable here)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    empty = tmp_path / "empty.pt"
    torch.save({}, empty)
    with monkeypatch.context() as mp:
        mp.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None)
        torch.manual_seed(0)
        sd = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty)).state_dict()
    weights = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    torch.save(sd, weights)
    s, _ = class_images(2, num_classes=2, seed=1)
    r, _ = class_images(2, num_classes=2, seed=2)
    monkeypatch.setattr(FeatureExtractorInceptionV3, "INPUT_IMAGE_SIZE", 75)  # Inception's smallest input: fast test
    # fid=False only to keep the test fast (FID's 2048x2048 eigen-decomposition costs ~10 s on 2 cores); the FID
    # formula and key mapping are exercised by the CLIP-space tests through the same calculate_metrics call
    out, space = fidelity_metrics(s, r, fid=False, inception_weights=weights, kid_subsets=2, isc_splits=2,
                                  prc_neighborhood=1)
    assert space == "inception"
    assert set(out) == {"is_mean", "is_std", "kid_mean", "kid_std", "precision", "recall"}
    assert all(math.isfinite(v) for v in out.values())
    bad = tmp_path / "bad.pth"
    torch.save({"w": torch.zeros(2)}, bad)
    with pytest.raises(Exception, match="not torch-fidelity's Inception"):
        fidelity_metrics(s, r, inception_weights=bad)


# -------------------------------------------------------------------------------------------------------- CLIP score


def test_clip_score_on_known_embeddings():
    img = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    txt = torch.tensor([[1.0, 0.0], [0.5, math.sqrt(3) / 2], [-1.0, 0.0], [0.0, 3.0]])  # cos 1, 0.5, -1 -> 0, 0
    assert clip_score_from_embeddings(img, txt) == pytest.approx(100 * (1 + 0.5 + 0 + 0) / 4)
    assert clip_score_from_embeddings(img, txt, weight=2.5) == pytest.approx(2.5 * 1.5 / 4)


class _LookupClip:
    """encode_images: unit vector chosen by the image's value; encode_texts: unit vector per known text."""

    logit_scale = 100.0
    table = {"a cat": [1.0, 0.0, 0.0], "a dog": [0.0, 1.0, 0.0], "a pig": [0.6, 0.8, 0.0]}

    def encode_images(self, x):
        v = torch.zeros(x.shape[0], 3)
        v[x[:, 0, 0, 0] == 0, 0] = 1.0  # value 0: "cat-like"
        v[x[:, 0, 0, 0] != 0, 1] = 1.0  # otherwise "dog-like"
        return v

    def encode_texts(self, texts):
        return torch.tensor([self.table[t] for t in texts])


def test_clip_score_texts_from_labels_and_template():
    imgs = torch.zeros(4, 3, 4, 4, dtype=torch.uint8)
    imgs[2:] = 200
    labels = torch.tensor([0, 2, 1, 0])  # texts: a cat, a pig, a dog, a cat
    m = compute_metrics(imgs, imgs, fid=False, isc=False, kid=False, prc=False, diversity=False, class_accuracy=False,
                        labels=labels, class_names=["cat", "dog", "pig"], clip_model=_LookupClip(),
                        text_template="a {class_name}")
    # cos: cat-img/"a cat" 1, cat-img/"a pig" 0.6, dog-img/"a dog" 1, dog-img/"a cat" 0
    assert m["clip_score"] == pytest.approx(100 * (1 + 0.6 + 1 + 0) / 4)
    m = compute_metrics(imgs, imgs, fid=False, isc=False, kid=False, prc=False, diversity=False, class_accuracy=False,
                        texts=["a dog"] * 4, clip_model=_LookupClip())
    assert m["clip_score"] == pytest.approx(100 * 0.5)


# --------------------------------------------------------------------------------------------------------- diversity


def test_intra_cluster_diversity_on_constructed_clusters():
    # cluster 0: three points on a line (pairwise cosine distances known); cluster 1: one point (ignored);
    # cluster 2: empty (ignored); cluster 3: two identical points (distance 0)
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0],  # cluster 0: 1-cos = 1, 2, 1
                      [1.0, 1.0],  # cluster 1
                      [0.0, -1.0], [0.0, -1.0]])  # cluster 3
    assign = torch.tensor([0, 0, 0, 1, 3, 3])
    mean, std, n = intra_cluster_diversity(assign, cosine_distance_fn(f), num_clusters=4)
    assert n == 2
    assert mean == pytest.approx(((1 + 2 + 1) / 3 + 0.0) / 2)
    assert std == pytest.approx(np.std([4 / 3, 0.0]))
    # at most max_per_cluster members per cluster -> only pairs among the kept members
    big = torch.randn(200, 4)
    _, _, n = intra_cluster_diversity(torch.zeros(200, dtype=torch.long), cosine_distance_fn(big), max_per_cluster=5)
    assert n == 1
    assert math.isnan(intra_cluster_diversity(torch.tensor([0, 1]), cosine_distance_fn(f[:2]))[0])


def test_diversity_clusters_are_centred_on_training_images_not_classes():
    """The paper's clusters (Ojha et al. 2021): one per training image. A class with two modes, each sample close to
    its training image: per-image clusters measure the variety around each image (small); one cluster per class
    would measure the distance between the modes instead."""
    assert MetricsParams().diversity_centers_per_class == 10  # every image of 10-shot data; at most 10 per class
    g = torch.Generator().manual_seed(0)
    # features of 4 training images: class 0 has modes at 0 and 90 degrees, class 1 at 180 and 270 degrees
    angles = torch.tensor([0.0, 90.0, 180.0, 270.0]) * math.pi / 180
    train = torch.stack([angles.cos(), angles.sin(), torch.zeros(4)], dim=1)
    train_labels = torch.tensor([0, 0, 1, 1])
    mode = torch.arange(40) % 4
    samples = train[mode] + 0.05 * torch.randn(40, 3, generator=g)  # small variety around each training image
    per_image = select_centers(train_labels, 10)
    assert per_image.tolist() == [0, 1, 2, 3]  # classes of at most 10 images: every image is a centre
    fs, fc = F.normalize(samples, dim=-1), F.normalize(train, dim=-1)
    assign = assign_to_centers(1.0 - fs.double() @ fc[per_image].double().T)
    assert torch.equal(assign, mode)
    mean, _, n = intra_cluster_diversity(assign, cosine_distance_fn(samples), num_clusters=len(per_image))
    assert n == 4 and mean < 0.01
    one_per_class = select_centers(train_labels, 1)
    assign1 = assign_to_centers(1.0 - fs.double() @ fc[one_per_class].double().T)
    mean1, _, n1 = intra_cluster_diversity(assign1, cosine_distance_fn(samples), num_clusters=2)
    assert n1 <= 2 and mean1 > 0.2  # the inter-mode distance (1 - cos 90 deg = 1 for half of the pairs)
    # many images per class: bounded to 10 per class, a seeded pick; fewer: all of them
    labels = torch.cat([torch.zeros(4, dtype=torch.long), torch.ones(30, dtype=torch.long)])
    picked = select_centers(labels, 10, seed=3)
    assert (labels[picked] == 0).sum() == 4 and (labels[picked] == 1).sum() == 10
    assert torch.equal(picked, select_centers(labels, 10, seed=3))
    assert select_centers(labels, None).numel() == 34
    with pytest.raises(ValueError, match="per_class"):
        select_centers(labels, 0)


def test_diversity_in_compute_metrics_orders_collapse_below_variety(clip):
    train, train_labels = class_images(6, seed=7)
    varied, labels = class_images(10, seed=8, spread=0.4)
    collapsed = varied[:1].repeat(40, 1, 1, 1)  # mode collapse: one image repeated
    kw = dict(fid=False, isc=False, kid=False, prc=False, clip_score=False, class_accuracy=False, labels=labels,
              train_images=train, train_labels=train_labels, clip_model=clip)
    dv = compute_metrics(varied, train, **kw)
    dc = compute_metrics(collapsed, train, **kw)
    assert dc["diversity_clip"] == pytest.approx(0.0, abs=1e-6)
    assert dv["diversity_clip"] > 1e-4
    assert select_centers(train_labels, 2).numel() == 8 and select_centers(train_labels, None).numel() == 24


def test_lpips_diversity_path(tmp_path, monkeypatch, clip):
    """torch-fidelity's LPIPS with weights files on disk (random VGG here: real weights cannot be downloaded)."""
    from types import SimpleNamespace

    from torch_fidelity import sample_similarity_lpips as tfl
    from torchvision.models.vgg import cfgs, make_layers

    # VGG-16's convolutional trunk (torch-fidelity uses .features only), random weights
    monkeypatch.setattr(tfl, "torchvision_load_pretrained_vgg16", lambda **kw: SimpleNamespace(features=make_layers(cfgs["D"])))
    lin = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate([64, 128, 256, 512, 512])}
    torch.save(lin, tmp_path / "lpips.pth")
    torch.save({}, tmp_path / "vgg.pth")  # present on disk; the monkeypatched loader ignores its contents
    imgs, labels = class_images(3, num_classes=2, seed=9)
    m = compute_metrics(imgs, imgs, fid=False, isc=False, kid=False, prc=False, clip_score=False, class_accuracy=False,
                        labels=labels, train_images=imgs, train_labels=labels, clip_model=clip,
                        lpips_weights=str(tmp_path / "lpips.pth"), lpips_vgg_weights=str(tmp_path / "vgg.pth"),
                        lpips_resize=16)
    assert "diversity_lpips" in m and "diversity_clip" not in m
    assert m["diversity_lpips"] > 0
    # features computed once per image give torch-fidelity's own LPIPS values
    from genvpt.metrics.diversity import LpipsDistance

    lp = LpipsDistance(str(tmp_path / "lpips.pth"), str(tmp_path / "vgg.pth"), resize=16)
    with torch.inference_mode():
        ref = lp.model(imgs[:4], imgs[[1, 2, 3, 0]]).flatten().double()
    assert torch.allclose(lp(imgs[:4], imgs[[1, 2, 3, 0]]), ref, rtol=1e-4, atol=1e-7)
    assert torch.allclose(lp.pair_fn(imgs)(torch.tensor([0, 1, 2, 3]), torch.tensor([1, 2, 3, 0])), ref,
                          rtol=1e-4, atol=1e-7)
    d = lp.to_centers(imgs[:4], imgs[[1, 0]])
    assert d.shape == (4, 2)
    got = torch.stack([d[0, 0], d[2, 0], d[3, 1], d[1, 1]])  # pairs (0,1), (2,1), (3,0), (1,0); LPIPS is symmetric
    assert torch.allclose(got, ref[[0, 1, 3, 0]], rtol=1e-4, atol=1e-7)
    assert d[1, 0] == 0 and d[0, 1] == 0  # an image is at distance 0 from itself


# ------------------------------------------------------------------------------------------------------------- probe


def test_linear_probe_accuracy():
    g = torch.Generator().manual_seed(0)
    centers = torch.eye(4) * 5
    y = torch.arange(4).repeat(30)
    x = centers[y] + 0.3 * torch.randn(120, 4, generator=g)
    probe = LinearProbe().fit(x, y)
    xs = centers[y[:40]] + 0.3 * torch.randn(40, 4, generator=g)
    assert probe.accuracy(xs, y[:40]) == 1.0
    assert probe.accuracy(xs, (y[:40] + 1) % 4) == 0.0
    with pytest.raises(ValueError, match="two classes"):
        LinearProbe().fit(x[:5], torch.zeros(5, dtype=torch.long))


# ------------------------------------------------------------------------------------------------------------ params


def test_metrics_params():
    from genvpt.config import ConfigError, validate_params

    assert MetricsParams().clip_score_weight == 100.0
    assert MetricsParams.model_validate({"clip_score_weight": 2.5}).clip_score_weight == 2.5
    p = validate_params({"metrics": {"inception_weights": "w.pth", "real_split": "train"}})
    assert p.metrics.real_split == "train"
    assert MetricsParams().real_split == "test"  # the report scores the test split
    assert validate_params({"metrics": {"real_split": "val"}}).metrics.real_split == "val"
    with pytest.raises(ConfigError, match="metrics.real_split"):
        validate_params({"metrics": {"real_split": "holdout"}})
    with pytest.raises(ConfigError, match="metrics.fd"):
        validate_params({"metrics": {"fd": True}})


def test_a_second_class_judge_beside_the_probe(clip):
    """compute_metrics(class_judge=...): the judge's accuracy on the samples, its agreement with the probe there,
    and on the reals (computed once per feature cache) its accuracy and agreement."""

    imgs, labels = class_images(10, seed=4)
    reals, real_labels = class_images(6, seed=6)
    train, train_labels = class_images(8, seed=5)
    calls = []

    def judge(x):  # a judge that is right on the first half of every batch and says class 0 elsewhere
        calls.append(x.shape[0])
        lab = labels if x.shape[0] == len(labels) else real_labels
        out = lab.clone()
        out[len(out) // 2:] = 0
        return out

    kw = dict(fid=False, isc=False, kid=False, prc=False, clip_score=False, diversity=False, labels=labels,
              real_labels=real_labels, class_names=["r", "g", "b", "k"], train_images=train,
              train_labels=train_labels, clip_model=clip)
    cache: dict = {}
    m = compute_metrics(imgs, reals, class_judge=judge, feature_cache=cache, **kw)
    probe = LinearProbe().fit(encode_images(clip, train), train_labels)
    p_s, p_r = probe.predict(encode_images(clip, imgs)), probe.predict(encode_images(clip, reals))
    j_s, j_r = judge(imgs), judge(reals)
    assert m["class_acc"] == pytest.approx(float((p_s == labels).double().mean()))
    assert m["class_acc_judge"] == pytest.approx(float((j_s == labels).double().mean()))
    assert m["judge_probe_agreement"] == pytest.approx(float((j_s == p_s).double().mean()))
    assert m["judge_real_acc"] == pytest.approx(float((j_r == real_labels).double().mean()))
    assert m["judge_probe_real_agreement"] == pytest.approx(float((j_r == p_r).double().mean()))
    assert set(m) <= set(METRIC_INFO)
    calls.clear()
    m2 = compute_metrics(imgs, reals, class_judge=judge, feature_cache=cache, **kw)
    assert calls == [len(imgs)] and m2 == m  # the reals' verdicts come from the cache
    assert "class_acc_judge" not in compute_metrics(imgs, reals, **kw)
