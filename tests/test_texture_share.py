"""texture_share: the share of samples whose background is textured (genvpt/metrics/texture.py), so that "adapted" to
the shapes `textured` target shows in numbers. The judge must separate rendered flat from textured shapes images,
clean and blurred; scoring textured sample sets must give a share near 1 and flat ones near 0; the params switch must
remove the metric where it is off. Images are rendered with genvpt.datasets.shapes here (nothing read from data/)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from _metrics_stubs import tiny_clip, write_sample_set
from _shapes_prepared import CLASSES, make_prepared
from genvpt.config import ConfigError, DatasetParams, ShapesParams, validate_params
from genvpt.datasets.shapes import ShapesDataset
from genvpt.metrics.params import MetricsParams
from genvpt.metrics.texture import (
    DEGRADATIONS,
    TextureJudge,
    down_up,
    fit_shapes_judge,
    gaussian_blur,
    render_shapes,
    texture_features,
    texture_share_enabled,
)

TEXTURED = DatasetParams(name="shapes", shapes=ShapesParams(domain="textured", classes=CLASSES))
# only texture_share (and the counts): the CLIP metrics are tested elsewhere
ONLY_TEXTURE = dict(fid=False, isc=False, kid=False, prc=False, clip_score=False, diversity=False,
                    class_accuracy=False)


def _render(domain: str, per_class: int, seed: int, blur: float = 0.0):
    """uint8 [N,3,32,32] in label order (class-major) and the labels, like a sample set."""
    ds = ShapesDataset(image_size=32, domain=domain, images_per_class=per_class, classes=CLASSES, seed=seed,
                       max_count=1, size_scale=1.6, rotation_range=0, positions=["center"])
    imgs = [[np.asarray(ds.make(c, i).image) for i in range(per_class)] for c in range(len(CLASSES))]
    x = torch.from_numpy(np.stack([a for row in imgs for a in row])).permute(0, 3, 1, 2).contiguous()
    if blur:
        x = gaussian_blur(x.float(), blur).round().clamp(0, 255).to(torch.uint8)
    return x, torch.arange(len(CLASSES)).repeat_interleave(per_class)


# ------------------------------------------------------------------------------------------------------ the judge


@pytest.fixture(scope="module")
def judge():
    """Fitted on the embedded default's shapes params (all 12 classes), 300 renderings per domain."""
    return fit_shapes_judge(DatasetParams(), n_fit=300, n_eval=300)


def test_judge_separates_flat_from_textured_clean_and_blurred(judge):
    size = 32
    shapes = DatasetParams().shapes
    flat = render_shapes(shapes, size, "flat", seed=4242, n=360)  # a seed neither the fit nor its held-out set used
    tex = render_shapes(shapes, size, "textured", seed=4242, n=360)
    assert len(flat) == len(tex) == 360
    res = judge.evaluate(flat, tex, {k: DEGRADATIONS[k] for k in ("clean", "blur_1", "blur_1.5", "down_up_2",
                                                              "blur_1+noise_8")})
    acc = {k: v["accuracy"] for k, v in res["conditions"].items()}
    assert acc["clean"] >= 0.97, res
    assert min(acc.values()) >= 0.93, res
    # both kinds of error stay small, not just their average
    assert res["conditions"]["clean"]["flat_judged_textured"] <= 0.02
    assert res["conditions"]["clean"]["textured_judged_textured"] >= 0.95
    # the fit recorded its own held-out accuracy (clean and blurred) for the reader
    held = judge.record["heldout"]
    assert held["n_flat"] == held["n_textured"] == 300
    assert held["accuracy_clean"] >= 0.95 and held["accuracy_blurred_mean"] >= 0.9
    assert set(held["conditions"]) == set(DEGRADATIONS)


def test_features_rise_with_a_textured_border_not_with_the_shape():
    """The same large centred square on a plain and on a striped background: most border statistics rise with the
    stripes; the square alone (reaching 6 px from the edge) leaves them at zero."""
    x = torch.zeros(2, 3, 32, 32)
    x[:, 0] = 200.0  # red background
    stripes = (torch.arange(32) // 3 % 2).float().view(1, 32).expand(32, 32)
    x[1, 1] += 100.0 * stripes  # red / orange vertical stripes
    x[:, :, 6:26, 6:26] = 240.0  # the shape
    f = texture_features(x)
    assert f.shape == (2, 21) and torch.isfinite(f).all()
    assert (f[0] == 0).all()
    assert (f[1] > f[0]).sum() >= 10


def test_judge_on_other_sizes_and_unfitted():
    with pytest.raises(RuntimeError, match="fit"):
        TextureJudge(32).predict(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    flat, _ = _render("flat", 20, seed=3)
    tex, _ = _render("textured", 20, seed=3)
    j = TextureJudge(32).fit(flat, tex, seed=0)
    big_flat = torch.nn.functional.interpolate(_render("flat", 8, seed=9)[0].float(), size=64, mode="nearest")
    big_tex = torch.nn.functional.interpolate(_render("textured", 8, seed=9)[0].float(), size=64, mode="nearest")
    assert j.share(big_flat) <= 0.1 and j.share(big_tex) >= 0.9  # resized to the size it was fitted at
    assert np.isnan(j.share(torch.zeros(0, 3, 32, 32)))


# ------------------------------------------------------------------------------------------------------ scoring


def _write_sets(root):
    """ar (frozen): flat images at two sampling seeds; mvp (adapted): textured images at two training seeds, one of
    them blurred as a tokenizer would; the target's prepared splits: real textured shapes."""
    samples = root / "samples"
    for s in (0, 1):
        imgs, labels = _render("flat", 8, seed=100 + s)
        write_sample_set(samples / "ar" / f"seed-{s}", imgs, labels, CLASSES, row="ar", kind="frozen", seed=s,
                         backbone="ar")
        imgs, labels = _render("textured", 8, seed=200 + s, blur=1.0 if s else 0.0)
        write_sample_set(samples / "mvp" / f"seed-{s}", imgs, labels, CLASSES, row="mvp", kind="adapted", seed=s,
                         method="mvp", trainable_params=10)
    target = make_prepared(root / "prepared", domain="textured", images_per_class=8)
    return samples, target


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    from genvpt.metrics.scoring import score_sample_sets

    root = tmp_path_factory.mktemp("texture")
    samples, target = _write_sets(root)
    mp = MetricsParams(**ONLY_TEXTURE)
    assert mp.texture_share == "auto"
    rows = score_sample_sets(["ar", "mvp"], mp, samples, target, root / "scores", clip_model=tiny_clip(),
                             dataset_params=TEXTURED)
    return root, samples, target, rows


def test_textured_samples_score_near_one_and_flat_near_zero(scored):
    root = scored[0]
    df = pd.read_parquet(root / "scores" / "metrics.parquet")
    share = dict(zip(zip(df["row"], df["seed"]), df["texture_share"]))
    assert share[("ar", 0)] <= 0.1 and share[("ar", 1)] <= 0.1, share
    assert share[("mvp", 0)] >= 0.9 and share[("mvp", 1)] >= 0.9, share  # seed 1 is blurred
    assert (df["texture_share_real"] >= 0.9).all()  # the real textured target's own share: the reference
    summ = pd.read_parquet(root / "scores" / "summary.parquet").set_index("row")
    for row in ("ar", "mvp"):
        vals = df.loc[df["row"] == row, "texture_share"].to_numpy()
        assert summ.loc[row, "texture_share"] == pytest.approx(vals.mean())
        assert summ.loc[row, "texture_share_std"] == pytest.approx(np.std(vals, ddof=1), abs=1e-12)
    assert summ.loc["mvp", "texture_share"] - summ.loc["ar", "texture_share"] >= 0.8
    dvc = json.loads((root / "scores" / "metrics" / "mvp" / "metrics.json").read_text())
    assert dvc["texture_share"] >= 0.9 and "texture_share_std" in dvc


def test_definitions_record_the_judge_and_its_accuracy(scored):
    root, _, target, _ = scored
    defs = json.loads((root / "scores" / "definitions.json").read_text())
    tex = defs["texture_share"]
    assert tex["setting"] == "auto" and tex["real_split"] == "test" and tex["n_reals"] > 0
    assert tex["heldout"]["accuracy_clean"] >= 0.95 and "blur_1.5" in tex["heldout"]["conditions"]
    assert tex["real_share"] >= 0.9 and tex["fit_images"]["flat"] > 0
    assert "texture_share" in defs["summary_keys"]
    assert "clean" in defs["metrics"]["texture_share"]["definition"]


def test_switch_false_or_a_target_that_cannot_tell_removes_the_metric(scored, tmp_path):
    from genvpt.metrics.scoring import score_sample_sets

    _, samples, target, _ = scored
    for name, mp, dataset in (
        ("false", MetricsParams(**ONLY_TEXTURE, texture_share=False), TEXTURED),
        ("flat-target", MetricsParams(**ONLY_TEXTURE), DatasetParams(shapes=ShapesParams(domain="flat"))),
        ("unknown-target", MetricsParams(**ONLY_TEXTURE), None),
    ):
        out = tmp_path / name
        rows = score_sample_sets(["ar", "mvp"], mp, samples, target, out, clip_model=tiny_clip(),
                                 dataset_params=dataset)
        assert all("texture_share" not in r for r in rows), name
        for table in ("metrics.parquet", "summary.parquet"):
            cols = set(pd.read_parquet(out / table).columns)
            assert not any(c.startswith("texture_share") for c in cols), (name, table)
        assert "texture_share" not in json.loads((out / "definitions.json").read_text()), name


def test_the_switch_resolves_against_the_target_dataset():
    digits = DatasetParams(name="digits")
    assert texture_share_enabled("auto", TEXTURED)
    assert not texture_share_enabled("auto", DatasetParams(shapes=ShapesParams(domain="outlined")))
    assert not texture_share_enabled("auto", digits) and not texture_share_enabled("auto", None)
    assert not texture_share_enabled(False, TEXTURED)
    assert texture_share_enabled(True, DatasetParams(shapes=ShapesParams(domain="flat")))
    with pytest.raises(ValueError, match="shapes"):
        texture_share_enabled(True, digits)
    assert validate_params({"metrics": {"texture_share": False}}).metrics.texture_share is False
    assert validate_params({"metrics": {"texture_share": True}}).metrics.texture_share is True
    assert validate_params({}).metrics.texture_share == "auto"
    with pytest.raises(ConfigError, match="metrics.texture_share"):
        validate_params({"metrics": {"texture_share": "sometimes"}})


def test_degradations_keep_shape_and_range():
    x = _render("textured", 2, seed=1)[0].float()
    for name, fn in DEGRADATIONS.items():
        y = fn(x)
        assert y.shape == x.shape, name
    assert down_up(x, 4).std() < x.std()
    assert gaussian_blur(x, 1.5).std() < x.std()
