"""Issue #18 section 3: a sweep (flows/sweep.py) runs as DVC experiments, two at a time, and ends in one table.

On the tiny two-stage DVC repository (tests/_two_stage_dvc.py): a 2x2 grid over ``fit.lr`` x ``fit.width`` runs as
four ``dvc exp run --temp`` experiments, two at once; every experiment is in the table with its params and metrics,
the metrics equal a direct run of the scripts with those params, the upstream stage never reruns (its output comes
from the shared cache), the cache is consistent (every file's md5 is its name) and after ``dvc gc
--all-experiments`` each experiment applies to a workspace whose ``dvc status`` is clean."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from _two_stage_dvc import commit, corrupt_cache_files, counts, dvc, dvc_status, make_repo

ROOT = Path(__file__).resolve().parents[1]


def _direct_run(repo: Path, where: Path, params: dict) -> dict:
    """The scripts run by hand (no DVC) with ``params``: what a sweep experiment must reproduce."""
    where.mkdir()
    for f in ("make.py", "fit.py"):
        shutil.copy(repo / f, where / f)
    (where / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "TINY_COUNTER": str(where / "counter.txt")}  # not the sweep's counter
    for f in ("make.py", "fit.py"):
        subprocess.run([sys.executable, f], cwd=where, check=True, env=env)
    return json.loads((where / "metrics.json").read_text())


def test_a_grid_runs_two_at_a_time_into_one_table(tmp_path, monkeypatch):
    from flows.sweep import SweepSpec, run_sweep

    counter = tmp_path / "commands-run.txt"
    monkeypatch.setenv("TINY_COUNTER", str(counter))
    repo = make_repo(tmp_path / "repo")
    dvc(repo, "repro")
    commit(repo, "baseline results")
    assert counts(counter) == {"fit": 1, "make": 1}

    spec = SweepSpec(name="grid", jobs=2, grid={"fit.lr": [0.2, 0.3], "fit.width": [1, 2]})
    result = run_sweep(repo, spec)
    assert result.failed == []
    names = ["grid-1", "grid-2", "grid-3", "grid-4"]
    assert [r["experiment"] for r in result.rows] == names
    # two at a time: the first two commands overlapped
    first, second = sorted(result.outcomes, key=lambda o: o.started)[:2]
    assert second.started < first.finished, "the experiments did not run at the same time"
    # the upstream stage came from the shared cache; fit ran once per experiment
    assert counts(counter) == {"fit": 5, "make": 1}

    base = yaml.safe_load((repo / "params.yaml").read_text())
    combos = [(0.2, 1), (0.2, 2), (0.3, 1), (0.3, 2)]
    for i, (row, (lr, width)) in enumerate(zip(result.rows, combos)):
        assert row["status"] == "ok" and row["fit.lr"] == lr and row["fit.width"] == width, row
        direct = _direct_run(repo, tmp_path / f"direct-{i}", {**base, "fit": {"lr": lr, "width": width}})
        assert row["metrics.json:loss"] == direct["loss"] and row["metrics.json:n_values"] == direct["n_values"]

    # the table files
    out = repo / "results" / "sweeps" / "grid"
    with open(out / "table.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [r["experiment"] for r in table] == names
    assert [(float(r["fit.lr"]), int(r["fit.width"]), float(r["metrics.json:loss"])) for r in table] == \
        [(r["fit.lr"], r["fit.width"], r["metrics.json:loss"]) for r in result.rows]
    md = (out / "report.md").read_text()
    assert "## Sweep `grid`" in md and all(f"| {n} | ok |" in md for n in names)
    assert json.loads((out / "sweep.json").read_text())["experiments"][3]["overrides"] == {"fit.lr": 0.3, "fit.width": 2}
    # `dvc exp show` lists them too (the same records)
    shown = json.loads(dvc(repo, "exp", "show", "--json"))
    listed = {x["name"] for b in shown for g in (b.get("experiments") or []) for x in g["revs"]}
    assert set(names) <= listed

    # the shared cache after parallel writers: consistent, the workspace clean, every experiment restorable after gc
    cache = repo / ".dvc" / "cache"
    assert corrupt_cache_files(cache) == []
    assert dvc_status(repo) == {}
    dvc(repo, "gc", "--workspace", "--all-experiments", "--force")
    for name, (lr, width) in zip(names, combos):
        dvc(repo, "exp", "apply", name)
        assert dvc_status(repo) == {}, name
        assert (repo / "data" / "model.txt").read_text().split()[:2] == [str(lr), str(width)]
    assert corrupt_cache_files(cache) == []
    assert counts(counter) == {"fit": 5, "make": 1}, "applying an experiment ran a command"


def test_a_second_sweep_of_the_same_name_is_refused_unless_replaced(tmp_path, monkeypatch):
    from flows.sweep import SweepError, SweepSpec, run_sweep

    monkeypatch.setenv("TINY_COUNTER", str(tmp_path / "counter.txt"))
    repo = make_repo(tmp_path / "repo")
    spec = SweepSpec(name="one", experiments=[{"fit.width": 3}])
    assert run_sweep(repo, spec).failed == []
    with pytest.raises(SweepError, match="one-1 exist already"):
        run_sweep(repo, spec)
    again = run_sweep(repo, spec, collect_only=True)  # the table rebuilt from the experiment, nothing run
    assert again.outcomes == [] and again.rows[0]["status"] == "ok" and again.rows[0]["fit.width"] == 3


def test_bad_sweeps_fail_before_running_and_name_the_key(tmp_path):
    from flows.sweep import SweepError, SweepSpec, check_experiments, expand, hydra_value, load_spec
    from genvpt.config import validate_params

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    spec = SweepSpec(name="s", grid={"adaptation.train.lr": [0.01, -1.0]},
                     experiments=[{"adaptation.trian.lr": 0.1}, {"dataset.name": "digits"}])
    exps = expand(spec)
    assert [e.name for e in exps] == ["s-1", "s-2", "s-3", "s-4"]
    with pytest.raises(SweepError) as err:
        check_experiments(params, exps, validate_params)
    msg = str(err.value)
    assert "experiment s-2 (adaptation.train.lr=-1.0): adaptation.train.lr: Input should be greater than 0" in msg
    assert "experiment s-3 (adaptation.trian.lr=0.1): adaptation.trian.lr: params.yaml has no key 'trian'" in msg
    assert "s-1" not in msg and "s-4" not in msg
    check_experiments(params, [exps[0], exps[3]], validate_params)  # the good ones pass

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ngrid: {fit.lr: []}\njobs: 0\n")
    with pytest.raises(SweepError) as err:
        load_spec(bad)
    assert "grid: every grid key needs at least one value: fit.lr" in str(err.value)
    assert "jobs: Input should be greater than or equal to 1" in str(err.value)

    assert [hydra_value(v) for v in (1e-05, 0.1, 3, True, None, "null", "it's", [0, 1], {"a": 1.0})] == \
        ["0.00001", "0.1", "3", "true", "null", "'null'", "'it\\'s'", "[0,1]", "{a:1.0}"]


def test_the_example_spec_is_valid_for_this_params_yaml():
    from flows.sweep import check_experiments, expand, load_spec
    from genvpt.config import validate_params

    spec = load_spec(ROOT / "sweeps" / "mvp-lr.yaml")
    exps = expand(spec)
    assert len(exps) == 6 and spec.targets == ["adapt@mvp"]
    check_experiments(yaml.safe_load((ROOT / "params.yaml").read_text()), exps, validate_params)
