"""Issue #18 section 4: a shared DVC remote (params ``remote:``, flows/dvc_stages.py). Clone 1 runs the tiny
two-stage pipeline through ``run_if_stale`` and pushes every stage's outputs to a local directory remote; clone 2,
a git clone of the same commit with dvc.lock, runs the same function: no stage command runs (the side-effect
counter outside both clones), the outputs are there and ``dvc status`` is clean."""
from __future__ import annotations

from pathlib import Path

import pytest

from _two_stage_dvc import commit, counts, dvc, dvc_status, make_repo, run

STAGES = ["make", "fit"]  # dependency order (the flow's stage_plan gives the same)


def _remote_params(**kw):
    from genvpt.config import validate_params

    return validate_params({"remote": kw}).remote


def _run_all(root: Path, remote) -> dict[str, dict]:
    from flows.dvc_stages import run_if_stale

    return {name: run_if_stale(root, name, remote=remote) for name in STAGES}


def _use_remote(clone: Path, store: Path) -> None:
    """The remote as each machine configures it: DVC's default remote, in the untracked .dvc/config.local."""
    dvc(clone, "remote", "add", "--local", "-d", "store", str(store))


@pytest.fixture
def counter(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "commands-run.txt"
    monkeypatch.setenv("TINY_COUNTER", str(path))
    return path


def test_a_second_clone_pulls_instead_of_running(tmp_path, counter):
    from flows.pipeline import stage_order

    store = tmp_path / "remote"
    one = make_repo(tmp_path / "one")
    assert stage_order(one) == STAGES
    _use_remote(one, store)
    remote = _remote_params()  # name null: DVC's default remote
    first = _run_all(one, remote)
    assert all(r["ran"] and not r["pulled"] for r in first.values())
    assert counts(counter) == {"fit": 1, "make": 1}
    assert dvc_status(one) == {}
    assert any(store.rglob("*")), "nothing was pushed to the remote"
    commit(one, "results: dvc.lock and metrics.json")  # what a machine commits after a run

    two = tmp_path / "two"
    run(tmp_path, "git", "clone", "-q", str(one), str(two))
    assert not (two / "data/model.txt").exists() and not (two / "data/values").exists()
    _use_remote(two, store)
    second = _run_all(two, remote)
    assert not any(r["ran"] for r in second.values()) and all(r["pulled"] for r in second.values()), second
    assert counts(counter) == {"fit": 1, "make": 1}, "clone 2 ran a stage command"
    for rel in ("data/values/0.txt", "data/values/2.txt", "data/model.txt", "metrics.json"):
        assert (two / rel).read_bytes() == (one / rel).read_bytes(), rel
    assert dvc_status(two) == {}

    again = _run_all(two, remote)  # up to date: nothing pulled or run
    assert not any(r["ran"] or r["pulled"] for r in again.values())


def test_objects_missing_from_the_remote_mean_the_stage_runs(tmp_path, counter):
    store = tmp_path / "remote"
    one = make_repo(tmp_path / "one")
    _use_remote(one, store)
    _run_all(one, _remote_params(push=False))  # clone 1 never pushes
    assert not store.exists() or not any(store.rglob("*"))
    commit(one, "results")
    two = tmp_path / "two"
    run(tmp_path, "git", "clone", "-q", str(one), str(two))
    _use_remote(two, store)
    second = _run_all(two, _remote_params(name="store"))
    assert all(r["ran"] for r in second.values())
    assert counts(counter) == {"fit": 2, "make": 2}
    assert dvc_status(two) == {}
    assert any(store.rglob("*")), "clone 2 did not push what it computed"


def test_remote_params_are_validated_and_an_unknown_remote_names_the_key(tmp_path, counter):
    from flows.dvc_stages import RemoteError, run_if_stale
    from genvpt.config import ConfigError, validate_params

    with pytest.raises(ConfigError, match=r"remote\.name: must be a DVC remote name"):
        validate_params({"remote": {"name": "s3://bucket"}})
    with pytest.raises(ConfigError, match=r"remote\.pull: Input should be a valid boolean"):
        validate_params({"remote": {"pull": "sometimes"}})
    one = make_repo(tmp_path / "one")
    with pytest.raises(RemoteError, match=r"params remote\.name: no DVC remote named 'shared' \(configured: none\)"):
        run_if_stale(one, "make", remote=_remote_params(name="shared"))
    # no remote configured and name null: the flow works as without a remote
    assert run_if_stale(one, "make", remote=_remote_params())["ran"]


@pytest.mark.parametrize("max_parallel", [1, 2])
def test_the_flow_pulls_from_the_remote_instead_of_running(tmp_path, prefect_harness, max_parallel):
    """The Prefect flow itself (serial and concurrent paths) hands params ``remote`` to every stage: machine 1's run
    pushes, machine 2's run of the same commit pulls every stage and runs no command."""
    from _orch_repo import make_tiny_dvc_repo, outputs, step_cmd, timings
    from flows.pipeline import pipeline

    stages = {"a": {"cmd": step_cmd("a", 0, "data/a.txt", []), "deps": ["step.py"], "outs": ["data/a.txt"]},
              "b": {"cmd": step_cmd("b", 0, "data/b.txt", ["data/a.txt"]), "deps": ["step.py", "data/a.txt"],
                    "outs": ["data/b.txt"]}}
    one = make_tiny_dvc_repo(tmp_path / "m1", stages, prefect={"max_parallel": max_parallel})
    store = tmp_path / "remote"
    _use_remote(one, store)
    first = pipeline(root=str(one))
    assert all(r["ran"] for r in first) and set(timings(one)) == {"a", "b"}
    assert any(store.rglob("*")), "the flow pushed nothing"
    commit(one, "results")
    two = tmp_path / "m2" / "repo"
    two.parent.mkdir()
    run(tmp_path, "git", "clone", "-q", str(one), str(two))
    _use_remote(two, store)
    second = pipeline(root=str(two))
    assert not any(r["ran"] for r in second) and all(r.get("pulled") for r in second), second
    assert not (two.parent / "timing").exists(), "machine 2 ran a stage command"
    assert outputs(two) == outputs(one)
