"""Stage extra_target@<name> (stages/extra_target.py) end to end at toy size: the derived params, the inner stages
(prepare, tokenize, adapt, sample, score) on digits with the tiny pipeline's params (tests/_tiny_pipeline.py), and
the summary the report's "Other targets" table reads; params errors name the key."""
from __future__ import annotations

import contextlib
import json
import math
import shutil

import pytest
import yaml

from _tiny_pipeline import tiny_params

from genvpt.config import ConfigError, validate_params
from genvpt.datasets.params import deep_merge

pytestmark = pytest.mark.usefixtures("one_thread")

NAME = "new-classes"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The tiny pipeline's params and the upstream model files the stage reads (tokenizer, AR generator, CLIP), built
    with the library at the toy sizes (random weights: the stage's plumbing is under test, not their quality)."""
    import torch

    from _adapt_tiny import tiny_generator, tiny_vqgan
    from genvpt.clip import build_clip, save_clip
    from genvpt.generators import save_generator
    from genvpt.tokenizers import save_tokenizer

    ws = tmp_path_factory.mktemp("extra_target")
    params = tiny_params()
    assert params["extra_targets"][NAME]["configs"] == ["vpt-ar"]
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    save_tokenizer(ws / "data/tokenizers/vqgan/model.pt", tiny_vqgan())
    save_generator(ws / "data/generators/ar/model.pt", tiny_generator("ar", num_classes=3))
    torch.manual_seed(0)
    save_clip(ws / "data/clip/model.pt", build_clip(params["clip"]["model"]))
    return ws


@pytest.fixture(scope="module")
def ran(workspace):
    """The stage run once in the workspace (as dvc.yaml's command runs it), over a work folder an interrupted run
    left with other inputs."""
    from stages import extra_target

    stale = workspace / "data/targets" / f"{NAME}.partial"
    stale.mkdir(parents=True)
    (stale / "junk.txt").write_text("old")
    (stale / "inputs.json").write_text("{}")
    with contextlib.chdir(workspace):
        return extra_target.main(["--name", NAME, "--out", f"data/targets/{NAME}", "--summary",
                                  f"results/targets/{NAME}.json", "--params", "params.yaml"])


def test_extra_target_runs_the_per_target_stages_and_summarises(workspace, ran):
    summary = ran
    out = workspace / "data/targets" / NAME
    # the stale work folder was started afresh: nothing of it survives
    assert not (workspace / "data/targets" / f"{NAME}.partial").exists() and not (out / "junk.txt").exists()
    def strict(const):
        raise AssertionError(f"{const} in the summary: not valid JSON")

    on_disk = json.loads((workspace / "results/targets" / f"{NAME}.json").read_text(), parse_constant=strict)
    assert on_disk == json.loads(json.dumps(summary))
    # rows: the frozen backbone the configuration adapts first, then the configuration
    assert summary["row_order"] == ["ar", "vpt-ar"] and summary["frozen"] == ["ar"] and summary["configs"] == ["vpt-ar"]
    assert summary["fd_key"] == "fd_clip" and "train images" in summary["class_judge"]
    rows = summary["rows"]
    for row, kind in (("ar", "frozen"), ("vpt-ar", "adapted")):
        r = rows[row]
        assert r["kind"] == kind and r["n_seeds"] == 2 and r["method"] == (None if kind == "frozen" else "vpt")
        for key in ("class_acc", "fd_clip", "trainable_params"):
            assert isinstance(r[key], (int, float)) and math.isfinite(r[key]), (row, key, r)
        assert 0.0 <= r["class_acc"] <= 1.0 and r["class_acc_std"] is not None
    assert rows["ar"]["trainable_params"] == 0 and rows["vpt-ar"]["trainable_params"] > 0
    assert isinstance(rows["vpt-ar"]["trainable_params"], int)
    assert set(summary["tokenizer_psnr"]["vqgan"]) == {"val", "test"}
    assert all(v > 0 for v in summary["tokenizer_psnr"]["vqgan"].values())

    # the derived params: the dataset block merged with the target's overrides, the target's configurations only
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    derived = yaml.safe_load((out / "params.yaml").read_text())
    merged = deep_merge(params["dataset"], params["extra_targets"][NAME]["dataset"])
    assert merged["name"] == "digits" and merged["few_shot"]["num_classes"] == 3
    want = validate_params({**params, "dataset": merged}).dataset
    assert derived["dataset"] == want.model_dump(mode="json") == summary["dataset"]
    assert list(derived["adaptation"]["configs"]) == ["vpt-ar"]
    assert derived["adaptation"]["configs"]["vpt-ar"] == params["adaptation"]["configs"]["vpt-ar"]
    # the pipeline target's classifier does not judge this target's classes
    assert derived["metrics"] == {**params["metrics"], "class_judge": None}
    assert params["metrics"]["class_judge"] is not None
    assert {k: v for k, v in derived.items() if k not in ("dataset", "adaptation", "extra_targets", "metrics")} == \
        {k: v for k, v in params.items() if k not in ("dataset", "adaptation", "extra_targets", "metrics")}
    classes = json.loads((out / "prepared/classes.json").read_text())
    assert classes == summary["classes"] and len(classes) == 3 and "zero" in classes
    # the inner stages' outputs, in the target's folder
    for rel in ("tokens/vqgan/meta.json", "adapted/vpt-ar/seed-1/model.pt", "samples/ar/seed-1/record.json",
                "samples/vpt-ar/seed-0/record.json", "scores/summary.parquet"):
        assert (out / rel).is_file(), rel


@pytest.mark.parametrize("target, key, words", [
    ({"dataset": {"name": "digits"}, "configs": ["vpt-ar", "nope"]}, f"extra_targets.{NAME}.configs", ["nope"]),
    ({"dataset": {"shapes": {"domian": "flat"}}, "configs": ["vpt-ar"]}, f"extra_targets.{NAME}.dataset.shapes.domian",
     ["unknown key", "domain"]),
])
def test_bad_extra_target_params_name_the_key(workspace, monkeypatch, tmp_path, target, key, words):
    monkeypatch.chdir(workspace)
    params = tiny_params()
    params["extra_targets"][NAME] = target
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(params, sort_keys=False))
    from stages import extra_target

    with pytest.raises(ConfigError) as err:
        extra_target.main(["--name", NAME, "--out", str(tmp_path / "out"), "--summary", str(tmp_path / "s.json"),
                           "--params", str(bad)])
    assert key in str(err.value) and all(w in str(err.value) for w in words), str(err.value)
    assert not (tmp_path / "out.partial").exists()


def test_unknown_target_and_missing_upstream_files(workspace, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(workspace)
    from stages import extra_target

    with pytest.raises(SystemExit):
        extra_target.main(["--name", "nope", "--out", str(tmp_path / "o"), "--summary", str(tmp_path / "s.json"),
                           "--params", "params.yaml"])
    assert "no extra target 'nope'" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="pretrain_generator@ar"):
        extra_target.main(["--name", NAME, "--out", str(tmp_path / "o"), "--summary", str(tmp_path / "s.json"),
                           "--params", "params.yaml", "--generators", str(tmp_path / "none")])


def test_report_other_targets_section(workspace, ran, tmp_path, caplog):
    """The report's "Other targets": a table per target named in params, frozen rows first; a summary of a target
    params no longer names is left out with a warning."""
    from genvpt.report import build_report
    from genvpt.report.targets import load_target_results, targets_markdown

    results_dir = tmp_path / "targets"
    shutil.copytree(workspace / "results/targets", results_dir)
    removed = {**json.loads((results_dir / f"{NAME}.json").read_text()), "target": "removed"}
    (results_dir / "removed.json").write_text(json.dumps(removed))
    with caplog.at_level("WARNING"):
        results = load_target_results(results_dir, [NAME])
    assert [d["target"] for d in results] == [NAME] and "removed" in caplog.text
    md = targets_markdown(results)
    assert "## Other targets" in md and f"### {NAME}: digits, 3 classes" in md
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| row | n | FD-CLIP ↓ | class acc") and "trainable" in lines[0].lower()
    assert [line.split("|")[1].strip() for line in lines[1:]] == ["ar", "vpt-ar"]
    assert "(n=2)" in lines[1] and "train images" in md
    # in the whole report, from the target's own scores and samples
    out = workspace / "data/targets" / NAME
    build_report(out / "scores", out / "samples", tmp_path / "report", targets_dir=results_dir, target_names=[NAME],
                 comparisons=[("vpt-ar", "ar")])
    report_md = (tmp_path / "report/report.md").read_text()
    assert "## Other targets" in report_md and "removed" not in report_md
    assert "<h2>Other targets</h2>" in (tmp_path / "report/index.html").read_text()
