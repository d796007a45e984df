"""Seeds and spreads: several sample sets per report row (data/samples/<row>/seed-<s>/), scored one by one, summarised
as mean ± sample std over seeds, and reported with the best per column marked only beyond the spread."""
from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from _metrics_stubs import prepared_target, target_like_images, tiny_clip, write_sample_set
from genvpt.metrics.params import MetricsParams

CLASSES = ["circle", "square", "star"]
PER_CLASS = 3
ROWS = ["ar", "var", "mvp", "mvp-random0", "mvp-random1", "mvp-random2", "mvp-tau4", "mvp-tau12"]
AR_SAMPLE_TIMES = {0: 0.1, 1: 0.2, 2: 0.6}  # mean 0.3, sample std sqrt(0.07) = 0.2646 (population std: 0.2160)
MVP_TRAIN_TIMES = {0: 10.0, 1: 14.0}  # mean 12, sample std 2.828 (population std: 2.0)


def _set(root: Path, row: str, seed: int, *, kind: str, noise: float, **kw) -> None:
    imgs, labels = target_like_images(PER_CLASS, len(CLASSES), seed=1000 * sum(map(ord, row)) + seed,
                                      noise=noise)
    write_sample_set(root / "samples" / row / f"seed-{seed}", imgs, labels, CLASSES, row=row, kind=kind, seed=seed,
                     **kw)


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    from genvpt.metrics.scoring import score_sample_sets

    root = tmp_path_factory.mktemp("seeds")
    target = prepared_target(root / "prepared", {"train": 4, "val": 4, "test": 5}, CLASSES)
    for s, t in AR_SAMPLE_TIMES.items():
        _set(root, "ar", s, kind="frozen", backbone="ar", noise=80, sample_time_per_image_s=t)
    for s in range(3):
        _set(root, "var", s, kind="frozen", backbone="var", noise=200)
    for s, t in MVP_TRAIN_TIMES.items():
        rec = root / "adapted" / "mvp" / f"seed-{s}" / "record.json"
        rec.parent.mkdir(parents=True)
        rec.write_text(json.dumps({"trainable_params": 4660, "train_time_s": t, "peak_memory_mb": 900.0}))
        pd.DataFrame({"step": [0, 5, 10], "loss": [3.0, 2.0, 1.5]}).to_csv(rec.parent / "curve.csv", index=False)
        _set(root, "mvp", s, kind="adapted", method="mvp", noise=60, train_record=rec)
    for name in ("mvp-random0", "mvp-random1", "mvp-random2", "mvp-tau4", "mvp-tau12"):
        _set(root, name, 0, kind="adapted", method="mvp", noise=40 + 10 * len(name), trainable_params=4660)
    _set(root, "old-config", 0, kind="adapted", noise=50)  # on disk, not a report row: skipped
    mp = MetricsParams(kid_subsets=5, batch_size=16, isc_splits=3)
    set_rows = score_sample_sets(ROWS, mp, root / "samples", target, root / "scores", clip_model=tiny_clip())
    return root, target, mp, set_rows


def _approx(a, b):
    return a == pytest.approx(b, rel=1e-9, abs=1e-12)


# ---------------------------------------------------------------------------------------------------- the tables


def test_one_row_per_sample_set_in_row_then_seed_order(scored):
    root, _, mp, set_rows = scored
    df = pd.read_parquet(root / "scores" / "metrics.parquet")
    assert list(zip(df["row"], df["seed"])) == [
        ("ar", 0), ("ar", 1), ("ar", 2), ("var", 0), ("var", 1), ("var", 2), ("mvp", 0), ("mvp", 1),
        ("mvp-random0", 0), ("mvp-random1", 0), ("mvp-random2", 0), ("mvp-tau4", 0), ("mvp-tau12", 0)]
    assert len(set_rows) == len(df) and "old-config" not in set(df["row"])
    assert {"row", "seed", "kind", "spread_over", "n_seeds", "n_samples", "n_reals", "real_split", "fd_clip",
            "clip_score", "class_acc", "diversity_clip", "sample_time_per_image_s"} <= set(df.columns)
    assert list(df.loc[df["row"] == "ar", "spread_over"].unique()) == ["sampling_seed"]
    assert list(df.loc[df["row"] == "mvp", "spread_over"].unique()) == ["training_seed"]
    assert list(df.loc[df["row"] == "mvp", "kind"].unique()) == ["adapted"]
    # the sample counts: images per set, sets of the row, real images and their split
    assert (df["n_samples"] == PER_CLASS * len(CLASSES)).all() and (df["n_reals"] == 5 * len(CLASSES)).all()
    assert (df["real_split"] == mp.real_split).all()
    assert list(df.loc[df["row"] == "var", "n_seeds"]) == [3, 3, 3]
    # costs from the training record (mvp), the sample record (mvp-random0) and 'frozen = nothing trained'
    assert list(df.loc[df["row"] == "mvp", "train_time_s"]) == [10.0, 14.0]
    assert set(df.loc[df["row"].isin(["mvp", "mvp-random0"]), "trainable_params"]) == {4660}
    assert set(df.loc[df["row"] == "ar", "trainable_params"]) == {0}


def test_summary_is_mean_and_sample_std_over_seeds(scored):
    root = scored[0]
    per_set = pd.read_parquet(root / "scores" / "metrics.parquet")
    summ = pd.read_parquet(root / "scores" / "summary.parquet").set_index("row")
    assert list(summ.index) == ROWS
    assert summ.loc["ar", "n_seeds"] == 3 and summ.loc["mvp", "n_seeds"] == 2 and summ.loc["mvp-tau4", "n_seeds"] == 1
    assert summ.loc["ar", "seeds"] == "0,1,2" and summ.loc["ar", "images_per_set"] == 9
    # known numbers: sample std (ddof=1), not the population std
    assert _approx(summ.loc["ar", "sample_time_per_image_s"], 0.3)
    assert _approx(summ.loc["ar", "sample_time_per_image_s_std"], math.sqrt(0.07))
    assert _approx(summ.loc["mvp", "train_time_s"], 12.0) and _approx(summ.loc["mvp", "train_time_s_std"], math.sqrt(8))
    assert summ.loc["mvp", "trainable_params"] == 4660 and summ.loc["mvp", "trainable_params_std"] == 0
    # every metric of every row: mean and std over that row's sets
    for row in ROWS:
        sets = per_set[per_set["row"] == row]
        for k in ("fd_clip", "clip_score", "class_acc", "diversity_clip", "kd_clip_mean", "precision_clip"):
            assert _approx(summ.loc[row, k], sets[k].mean()), (row, k)
            if len(sets) > 1:
                assert _approx(summ.loc[row, f"{k}_std"], np.std(sets[k].to_numpy(), ddof=1)), (row, k)
            else:
                assert math.isnan(summ.loc[row, f"{k}_std"]), (row, k)  # one seed: no spread
    # diversity_clip_std is the seed spread of diversity_clip, not the mean of the within-set cluster std
    ar = per_set[per_set["row"] == "ar"]
    assert _approx(summ.loc["ar", "diversity_clip_std"], np.std(ar["diversity_clip"].to_numpy(), ddof=1))
    assert "is_clip_std" not in summ.columns and "is_clip_mean_std" in summ.columns


def test_dvc_metrics_json_holds_means_and_stds(scored):
    root = scored[0]
    summ = pd.read_parquet(root / "scores" / "summary.parquet").set_index("row")
    assert sorted(p.name for p in (root / "scores" / "metrics").iterdir()) == sorted(ROWS)
    ar = json.loads((root / "scores" / "metrics" / "ar" / "metrics.json").read_text())
    assert ar["n_seeds"] == 3 and ar["images_per_set"] == 9 and ar["n_reals"] == 15
    assert _approx(ar["fd_clip"], summ.loc["ar", "fd_clip"]) and _approx(ar["fd_clip_std"], summ.loc["ar", "fd_clip_std"])
    assert ar["fd_clip_std"] > 0
    assert _approx(ar["sample_time_per_image_s"], 0.3) and _approx(ar["sample_time_per_image_s_std"], math.sqrt(0.07))
    for k in ("clip_score", "class_acc", "diversity_clip", "kd_clip_mean"):
        assert k in ar and f"{k}_std" in ar
    tau = json.loads((root / "scores" / "metrics" / "mvp-tau4" / "metrics.json").read_text())
    assert tau["n_seeds"] == 1 and tau["fd_clip_std"] is None and isinstance(tau["fd_clip"], float)
    assert all(isinstance(v, (int, float)) or v is None for v in ar.values())


def test_definitions_and_plot_table_state_the_spread_and_counts(scored):
    root, _, mp, _ = scored
    defs = json.loads((root / "scores" / "definitions.json").read_text())
    assert "std" in defs["spread"] and "training seed" in defs["spread"] and "sampling seed" in defs["spread"]
    assert defs["real_split"] == mp.real_split and defs["n_reals"] == 15
    assert defs["counts"]["rows"]["ar"] == {"kind": "frozen", "spread_over": "sampling_seed", "n_seeds": 3,
                                            "seeds": [0, 1, 2], "images_per_set": 9, "images_per_class": 3}
    assert defs["counts"]["rows"]["mvp"]["spread_over"] == "training_seed"
    assert "is_clip_std" in defs["within_set_keys"] and "fd_clip" in defs["summary_keys"]
    with open(root / "scores" / "fd_vs_params.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == ["row", "kind", "n_seeds", "images_per_set", "n_reals", "real_split",
                              "trainable_params", "fd_clip_std", "fd_clip"]  # DVC plots the last column
    summ = pd.read_parquet(root / "scores" / "summary.parquet").set_index("row")
    assert [r["row"] for r in table] == ROWS
    assert _approx(float(table[0]["fd_clip"]), summ.loc["ar", "fd_clip"]) and table[0]["n_seeds"] == "3"
    assert table[0]["trainable_params"] == "0" and table[2]["trainable_params"] == "4660"


# ---------------------------------------------------------------------------------------------------- discovery


def test_discovery_skips_unknown_rows_and_rejects_bad_layouts(tmp_path, caplog):
    from genvpt.metrics.scoring import discover_sample_sets

    imgs, labels = target_like_images(1, len(CLASSES))
    for row, seed in (("ar", 2), ("ar", 0), ("ar", 10), ("stale", 0), ("mvp", 1)):
        write_sample_set(tmp_path / row / f"seed-{seed}", imgs, labels, CLASSES, row=row, kind="frozen", seed=seed)
    (tmp_path / "ar" / ".seed-3.tmp").mkdir()  # an unfinished atomic write is not a set
    with caplog.at_level(logging.WARNING, logger="genvpt.metrics.scoring"):
        refs = discover_sample_sets(tmp_path, ["mvp", "ar"])
    assert [(r.row, r.seed) for r in refs] == [("mvp", 1), ("ar", 0), ("ar", 2), ("ar", 10)]  # row order, seed order
    assert "stale" in caplog.text
    with pytest.raises(FileNotFoundError, match="lora"):
        discover_sample_sets(tmp_path, ["ar", "lora"])
    assert [r.row for r in discover_sample_sets(tmp_path, ["ar", "lora"], allow_missing=True)] == ["ar"] * 3
    write_sample_set(tmp_path / "old", imgs, labels, CLASSES, row="old", kind="frozen", seed=0)
    with pytest.raises(ValueError, match="old layout"):
        discover_sample_sets(tmp_path, ["old"])


def test_record_must_match_its_folder(tmp_path):
    from genvpt.metrics.scoring import discover_sample_sets, score_sample_sets

    target = prepared_target(tmp_path / "prepared", {"train": 2, "val": 2, "test": 2}, CLASSES)
    imgs, labels = target_like_images(2, len(CLASSES))
    write_sample_set(tmp_path / "samples" / "ar" / "seed-1", imgs, labels, CLASSES, row="ar", kind="frozen", seed=0)
    assert len(discover_sample_sets(tmp_path / "samples", ["ar"])) == 1
    with pytest.raises(ValueError, match="seed 0, but its folder says 1"):
        score_sample_sets(["ar"], MetricsParams(), tmp_path / "samples", target, tmp_path / "scores",
                          clip_model=tiny_clip())
    assert not (tmp_path / "scores").exists()  # nothing half-written


# ---------------------------------------------------------------------------------------------------- rows


def test_report_rows_frozen_families_then_adaptation_configs():
    from genvpt.generators.params import FAMILIES
    from genvpt.metrics.scoring import report_rows

    gen = SimpleNamespace()
    p = SimpleNamespace(generator=gen, adaptation=SimpleNamespace(configs={"mvp": {}, "lora": {}, "mvp-random0": {}}))
    assert report_rows(p) == [*FAMILIES, "mvp", "lora", "mvp-random0"]
    # before the rename: the prompts section
    assert report_rows(SimpleNamespace(generator=gen, prompts=SimpleNamespace(configs={"mvp": {}}))) == [*FAMILIES, "mvp"]
    assert report_rows(SimpleNamespace(generator=gen)) == list(FAMILIES)
    with pytest.raises(ValueError, match="frozen family"):
        report_rows(SimpleNamespace(generator=gen, adaptation=SimpleNamespace(configs={"var": {}})))


# ---------------------------------------------------------------------------------------------------- best rule


def _r(name, n=3, **vals):
    row = {"row": name, "n_seeds": n, "spread_over": "training_seed"}
    for k, (m, s) in vals.items():
        row[k], row[f"{k}_std"] = m, s
    return row


def test_best_is_marked_only_beyond_the_spread():
    from genvpt.report.tables import best_per_column, beyond_spread

    # lower is better: a's mean + std (0.31) < every other mean - std (0.34, 0.38)
    beyond = [_r("a", fd_clip=(0.30, 0.01)), _r("b", fd_clip=(0.35, 0.01)), _r("c", fd_clip=(0.40, 0.02))]
    assert best_per_column(beyond, ["fd_clip"]) == {"fd_clip": {0}}
    # the lowest mean, but within b's spread: 0.30 + 0.02 > 0.33 - 0.02
    within = [_r("a", fd_clip=(0.30, 0.02)), _r("b", fd_clip=(0.33, 0.02)), _r("c", fd_clip=(0.40, 0.02))]
    assert best_per_column(within, ["fd_clip"]) == {}
    assert beyond_spread(within[0], within[1], "fd_clip") is False and beyond_spread(within[0], within[2], "fd_clip")
    # higher is better
    acc = [_r("a", class_acc=(0.5, 0.05)), _r("b", class_acc=(0.8, 0.05)), _r("c", class_acc=(0.6, 0.04))]
    assert best_per_column(acc, ["class_acc"]) == {"class_acc": {1}}
    # a single seed has no spread: nothing is claimed
    single = [_r("a", fd_clip=(0.30, 0.01)), _r("b", n=1, fd_clip=(0.35, None))]
    assert best_per_column(single, ["fd_clip"]) == {} and beyond_spread(single[0], single[1], "fd_clip") is None
    # averaged variant rows are not ranked; unranked columns (costs) never get a mark
    avg = [_r("a", fd_clip=(0.35, 0.01)), {**_r("v (avg of 3)", fd_clip=(0.10, 0.01)), "averaged_from": ["v0", "v1"]},
           _r("b", fd_clip=(0.30, 0.01), trainable_params=(0, 0))]
    assert best_per_column(avg, ["fd_clip", "trainable_params"]) == {"fd_clip": {2}}


def test_variant_groups_are_numbered_replicates_only():
    from genvpt.report.build import variant_groups

    names = ["ar", "var", "mvp", "mvp-random0", "mvp-random1", "mvp-random2", "mvp-tau4", "mvp-tau12", "mvp-tau28",
             "lora1", "lora2", "x0"]
    assert variant_groups(names) == {"mvp-random": ["mvp-random0", "mvp-random1", "mvp-random2"],
                                     "lora": ["lora1", "lora2"]}


# ---------------------------------------------------------------------------------------------------- report


def _md_row(md: str, name: str) -> list[str]:
    line = next(line for line in md.splitlines() if line.startswith(f"| {name} |"))
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_report_from_seeded_scores(scored):
    from genvpt.report import build_report
    from genvpt.report.tables import format_value

    root, target, _, _ = scored
    index = build_report(root / "scores", root / "samples", root / "report", target_dir=target,
                         comparisons=[("mvp", "ar"), ("mvp-random", "mvp"), ("lora", "mvp")])
    md = (root / "report" / "report.md").read_text()
    html = Path(index).read_text()
    per_set = pd.read_parquet(root / "scores" / "metrics.parquet")
    summ = pd.read_parquet(root / "scores" / "summary.parquet").set_index("row")
    header = _md_row(md, "row")
    fd_col = header.index("FD-CLIP ↓")
    # every number is mean ± std (n=N)
    ar = _md_row(md, "ar")
    assert ar[1] == "3 sampling seeds" and _md_row(md, "mvp")[1] == "2 training seeds"
    assert ar[fd_col].strip("*") == (f"{format_value('fd_clip', summ.loc['ar', 'fd_clip'])} ± "
                                     f"{format_value('fd_clip', summ.loc['ar', 'fd_clip_std'])} (n=3)")
    assert _md_row(md, "mvp-tau4")[fd_col] == f"{format_value('fd_clip', summ.loc['mvp-tau4', 'fd_clip'])} (n=1)"
    # the averaged variant row: mean over the variants' sets; numbered settings (tau4/12) are not averaged
    avg = _md_row(md, "mvp-random (avg of 3)")
    sets = per_set[per_set["row"].str.startswith("mvp-random")]["fd_clip"].to_numpy()
    assert avg[1] == "3 sets of 3 variants" and np.std(sets, ddof=1) > 0
    assert avg[fd_col] == (f"{format_value('fd_clip', sets.mean())} ± {format_value('fd_clip', np.std(sets, ddof=1))}"
                           " (n=3)")
    assert "mvp-tau (avg" not in md and "<th>mvp-random (avg of 3)</th>" in html
    # mvp-tau4 has one seed, so no column can be marked best (the rule is stated)
    assert "**" not in "".join(line for line in md.splitlines() if line.startswith("| ar |") or
                               line.startswith("| mvp"))
    assert 'class="best"' not in html and "beyond the spread" in md and "mean + std" in md
    # the sampling noise, once: the frozen rows' std over sampling seeds
    noise = next(line for line in md.splitlines() if line.startswith("**Sampling noise**"))
    assert md.count("**Sampling noise**") == 1
    assert f"{format_value('fd_clip', summ.loc['ar', 'fd_clip_std'])} (ar, n=3)" in noise
    assert f"{format_value('fd_clip', summ.loc['var', 'fd_clip_std'])} (var, n=3)" in noise
    # headline comparisons with both spreads and a verdict that follows |diff| > std_a + std_b
    line = next(x for x in md.splitlines() if x.startswith("- mvp vs ar, FD-CLIP"))
    d = abs(summ.loc["mvp", "fd_clip"] - summ.loc["ar", "fd_clip"])
    beyond = d > summ.loc["mvp", "fd_clip_std"] + summ.loc["ar", "fd_clip_std"]
    assert ("beyond the spread" in line) == beyond and ("within the spread" in line) == (not beyond)
    assert "(n=2) vs" in line and line.count("±") == 2
    assert "- mvp-random (avg of 3) vs mvp, FD-CLIP" in md
    assert "lora vs mvp: not compared, no row lora" in md
    # counts are stated; grids show the first seed's set; training curves from the record's training record
    assert "9 generated images (3 per class)" in md and "15 real target images" in md
    assert "### ar (sampling seed 0)" in md and "### mvp (training seed 0)" in md
    assert (root / "report" / "plots" / "grid-mvp-random1.png").is_file()
    assert not (root / "report" / "plots" / "grid-mvp-random (avg of 3).png").exists()
    assert (root / "report" / "plots" / "curves-mvp.png").is_file()
    assert not (root / "report" / "plots" / "curves-ar.png").exists()  # no curves: tolerated
    assert (root / "report" / "plots" / "fd_vs_params.png").is_file()


def test_report_marks_the_best_beyond_the_spread(tmp_path):
    """A scores folder written by hand: FD-CLIP has a row better beyond every spread, CLIP score only by its mean."""
    from genvpt.report import build_report

    sets = []
    for row, kind, fds, cls in (("var", "frozen", (0.50, 0.52, 0.54), (20.0, 22.0, 24.0)),
                                ("mvp", "adapted", (0.30, 0.31, 0.32), (21.0, 23.0, 25.0)),
                                ("lora", "adapted", (0.40, 0.42, 0.44), (20.5, 22.5, 24.5))):
        for s, (fd, cs) in enumerate(zip(fds, cls)):
            sets.append({"row": row, "seed": s, "kind": kind,
                         "spread_over": "sampling_seed" if kind == "frozen" else "training_seed",
                         "fd_clip": fd, "clip_score": cs, "n_samples": 30, "n_reals": 60})
    from genvpt.metrics.scoring import summarize

    scores = tmp_path / "scores"
    scores.mkdir()
    pd.DataFrame(sets).to_parquet(scores / "metrics.parquet", index=False)
    pd.DataFrame(summarize(sets)).to_parquet(scores / "summary.parquet", index=False)
    (scores / "definitions.json").write_text(json.dumps({"real_split": "test", "n_reals": 60}))
    build_report(scores, tmp_path / "samples", tmp_path / "report", comparisons=[("mvp", "var"), ("lora", "mvp")])
    md = (tmp_path / "report" / "report.md").read_text()
    html = (tmp_path / "report" / "index.html").read_text()
    header = _md_row(md, "row")
    fd, cs = header.index("FD-CLIP ↓"), header.index("CLIP score ↑")
    assert _md_row(md, "mvp")[fd] == "**0.31 ± 0.01 (n=3)**"
    assert not _md_row(md, "var")[fd].startswith("**") and not _md_row(md, "lora")[fd].startswith("**")
    assert not any(_md_row(md, r)[cs].startswith("**") for r in ("var", "mvp", "lora"))  # best mean, within spread
    assert html.count('class="best"') == 1
    assert "best FD-CLIP ↓: mvp" in md
    assert "CLIP score ↑: no row is better than all others beyond the spread (best mean: mvp" in md
    assert "- mvp vs var, FD-CLIP ↓: 0.31 ± 0.01 (n=3) vs 0.52 ± 0.02 (n=3); difference −0.21: beyond the spread: " \
           "mvp is better" in md
    assert "- lora vs mvp, CLIP score ↑: 22.50 ± 2.00 (n=3) vs 23.00 ± 2.00 (n=3); difference −0.50: within the " \
           "spread" in md
    assert "**Sampling noise** (measured once: std over the sampling seeds of one frozen model): FD-CLIP ↓: " \
           "0.02 (var, n=3); CLIP score ↑: 2.00 (var, n=3)" in md


def test_memory_lines_read_the_committed_benchmark_file():
    """The report states the MVP-vs-prefilled memory benchmark for every size the committed file holds."""
    from pathlib import Path

    from genvpt.report.build import memory_lines

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "mvp_memory.json"
    lines = memory_lines([], path)
    assert len(lines) >= 1 and all("MVP" in x and "ratio" in x for x in lines)
    assert any("VAR-d16" in x for x in lines)


def test_a_class_judge_scores_every_set_and_the_report_states_how_the_judges_agree(scored, tmp_path):
    """score_sample_sets(class_judge=...): class_acc_judge per set, the judge named in definitions.json with its
    accuracy and agreement on the reals, the report's sentence; a judge of other classes is an error."""
    import torch

    from genvpt.report import build_report

    root, target, mp, _ = scored

    class Judge:  # says "circle" for everything: right on a third of the images
        class_names = list(CLASSES)
        record = {"folder": "data/classify/target/pgn", "method": "pgn", "seed": 2}

        def __call__(self, images):
            return torch.zeros(images.shape[0], dtype=torch.long)

    out = tmp_path / "scores"
    from genvpt.metrics.scoring import score_sample_sets

    rows = ["ar", "mvp"]
    set_rows = score_sample_sets(rows, mp, root / "samples", target, out, clip_model=tiny_clip(), class_judge=Judge())
    for r in set_rows:
        assert r["class_acc_judge"] == pytest.approx(1 / 3) and 0.0 <= r["judge_probe_agreement"] <= 1.0
        assert r["judge_real_acc"] == pytest.approx(5 / 15)  # 5 of the 15 real test images are circles
    defs = json.loads((out / "definitions.json").read_text())
    assert defs["class_judge"]["method"] == "pgn" and defs["class_judge"]["seed"] == 2
    assert defs["class_judge"]["real_acc"] == pytest.approx(1 / 3)
    assert defs["class_judge"]["agreement_with_probe_real"] == set_rows[0]["judge_probe_real_agreement"]
    assert defs["class_judge"]["rank_correlation_rows"] is None  # two rows: too few to rank
    build_report(out, root / "samples", tmp_path / "report", target_dir=target, comparisons=[])
    md = (tmp_path / "report" / "report.md").read_text()
    assert "Second judge, pgn (data/classify/target/pgn, seed 2): 0.333 on the same images" in md
    assert "Spearman" not in md  # two rows: no rank correlation
    assert "class acc (judge)" in md
    Judge.class_names = ["a", "b", "c"]
    with pytest.raises(ValueError, match="metrics.class_judge"):
        score_sample_sets(rows, mp, root / "samples", target, tmp_path / "s2", clip_model=tiny_clip(),
                          class_judge=Judge())


def test_rank_correlation_of_two_judges_over_rows():
    from genvpt.metrics.scoring import _rank_correlation

    rows = [{"a": 0.1, "b": 0.5}, {"a": 0.2, "b": 0.7}, {"a": 0.3, "b": 0.2}, {"a": 0.4}]  # the last lacks b
    assert _rank_correlation(rows, "a", "b") == pytest.approx(-0.5)
    assert _rank_correlation(rows[:3] + [{"a": 0.9, "b": 0.9}], "a", "b") == pytest.approx(0.4)
    assert _rank_correlation(rows[:2], "a", "b") is None
