"""DVC and Prefect: the stage graph, `dvc repro` / `dvc exp run` on a tiny config, and the flow agreeing with DVC."""
from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, make_repo_copy

DVC = [sys.executable, "-m", "dvc"]


def tiny_params() -> str:
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    for block in ("dataset", "source"):
        p[block]["image_size"] = 16
        p[block]["shapes"]["images_per_class"] = 4
    return yaml.safe_dump(p, sort_keys=False)


def _dvc(args, cwd, env):
    r = subprocess.run(DVC + args, cwd=cwd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, f"dvc {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


def _param_keys(stage) -> set[str]:
    """The params keys a DVC stage declares (over all its params files)."""
    keys: set[str] = set()
    for dep in stage.params:
        keys |= set(dep.params) if isinstance(dep.params, (list, tuple)) else set(dep.params or [])
    return keys


def test_dataset_params_invalidate_prepare_and_downstream_only():
    """Static check on the real dvc.yaml: what a change of `dataset.*` makes stale."""
    import networkx as nx
    from dvc.repo import Repo

    with contextlib.chdir(ROOT), Repo(str(ROOT)) as repo:
        graph = repo.index.graph
        direct = set()
        for st in repo.index.stages:
            if any(k == "dataset" or k.startswith("dataset.") for k in _param_keys(st)):
                direct.add(st)
        stale = set(direct)
        for st in direct:
            stale |= nx.ancestors(graph, st)  # edges point dependent -> dependency: ancestors are downstream
        names = {s.addressing for s in stale}
        all_names = {s.addressing for s in repo.index.stages}
    # prepare reads it to make the data; score to fit its texture judge on the target's own shapes settings;
    # prepare_classify@<dataset> merges its column's overrides over it; classify@<config>-<dataset> for the dataset's
    # label in its results (the report's column; downstream of prepare_classify anyway); extra_target@<name> merges
    # its target's overrides over it by design (the derived params of its inner prepare / score)
    readers = {s.addressing for s in direct
               if not s.addressing.startswith(("classify@", "prepare_classify@", "extra_target@"))}
    assert readers == {"prepare", "score"}, ("only prepare, score, the classification stages and the extra targets "
                                             "read the dataset block")
    assert any(n.startswith("extra_target@") for n in names), "a dataset change reruns the extra targets"
    upstream_only = {n for n in all_names if n.startswith(("prepare_source", "prepare_tokenizer", "pretrain"))}
    assert not names & upstream_only, f"a dataset change would rerun {sorted(names & upstream_only)}"


def test_sample_stages_rerun_when_their_backbones_sampling_defaults_change():
    """Each report row is drawn with its backbone's sampling defaults (`generator.<family>.sample`), so every
    sample@ / sample_frozen@ instance must declare that block, and the instances come from the same lists as the
    adapt@ instances and the frozen backbones (nothing hand-kept)."""
    from dvc.repo import Repo

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    configs = params["adaptation"]["configs"]
    with contextlib.chdir(ROOT), Repo(str(ROOT)) as repo:
        stages = {s.addressing: s for s in repo.index.stages}
        for name, cfg in configs.items():
            assert f"adapt@{name}" in stages, f"no adapt stage for configuration {name}"
            keys = _param_keys(stages[f"sample@{name}"])
            assert f"generator.{cfg['backbone']}.sample" in keys, name
            deps = {str(d.def_path) for d in stages[f"adapt@{name}"].deps}
            assert f"data/generators/{cfg['backbone']}/model.pt" in deps
            assert f"data/tokens/{cfg['tokenizer']}/target" in deps
        frozen = sorted(n.split("@", 1)[1] for n in stages if n.startswith("sample_frozen@"))
        gens = sorted(n.split("@", 1)[1] for n in stages if n.startswith("pretrain_generator@"))
        assert frozen == gens == ["ar", "maskgit", "var"]
        for fam in frozen:
            assert f"generator.{fam}.sample" in _param_keys(stages[f"sample_frozen@{fam}"])


def test_dvc_repro_and_exp_run_rerun_prepare_only(tmp_path, venv_path_env):
    repo = make_repo_copy(tmp_path / "repo", tiny_params())
    out = _dvc(["repro", "prepare_source", "prepare"], repo, venv_path_env)
    assert "Running stage 'prepare_source'" in out and "Running stage 'prepare'" in out
    assert (repo / "data/prepared/target/manifest.parquet").is_file()
    out = _dvc(["repro", "prepare_source", "prepare"], repo, venv_path_env)
    assert "Running stage" not in out
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "lock"], cwd=repo, check=True)
    out = _dvc(["exp", "run", "-S", "dataset.name=digits", "prepare_source", "prepare"], repo, venv_path_env)
    assert "Running stage 'prepare'" in out
    assert "Running stage 'prepare_source'" not in out
    classes = (repo / "data/prepared/target/classes.json").read_text()
    assert "seven" in classes
    status = _dvc(["status", "prepare_source", "prepare"], repo, venv_path_env)
    assert "up to date" in status


def test_prefect_flow_runs_dvc_stages_and_agrees_with_dvc(tmp_path, prefect_harness, monkeypatch):
    from dvc.repo import Repo

    from flows.pipeline import pipeline, stage_order

    repo = make_repo_copy(tmp_path / "repo", tiny_params())
    order = stage_order(repo)
    assert order.index("prepare_source") < len(order) and set(order) >= {"prepare", "prepare_source"}
    assert stage_order(repo, ["prepare"]) == ["prepare"]
    first = pipeline(stages=["prepare_source", "prepare"], root=str(repo))
    assert [(r["stage"], r["ran"]) for r in first] == [("prepare_source", True), ("prepare", True)]
    with contextlib.chdir(repo), Repo(str(repo)) as r:
        assert r.status(targets=["prepare_source", "prepare"]) == {}  # dvc agrees: nothing stale
    second = pipeline(stages=["prepare_source", "prepare"], root=str(repo))
    assert [r["ran"] for r in second] == [False, False]


def test_stage_order_rejects_unknown_stage():
    from flows.pipeline import stage_order

    with pytest.raises(ValueError, match="no stage named 'nope'"):
        stage_order(ROOT, ["nope"])
