"""Crash recovery, proven by causing the crashes (genvpt/faults.py).

The whole dvc.yaml pipeline runs once at toy size (tests/_tiny_pipeline.py) as the uninterrupted reference, each
stage recording the fail points it passes. Then, for every stage of dvc.yaml, a copy of that workspace loses the
stage's outputs and the stage is run the way DVC runs it (outputs removed first) and stopped, one run after the
other: SIGKILL at its first write (early), SIGKILL just after its first training checkpoint (mid-training), SIGTERM
(a pre-emption) and SIGKILL at its last write (its outputs computed, the final rename pending); finally it runs to
the end. After every stop nothing in a final output location may hold partial content (each file there equals the
reference's); after a SIGTERM the exit is clean (status 143, no traceback, no temporary file); after the last run
every output equals the uninterrupted run's (tensors bit for bit; only fields that describe the run itself, such as
seconds and peak memory, may differ: _same_outputs.py) and no temporary file is left behind.

Also: SIGTERM mid-training keeps the last checkpoint and the rerun resumes from it; the Prefect flow killed
between stages picks up where it stopped; two `dvc repro` in one checkout do not both run.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from _same_outputs import differences
from _tiny_pipeline import stage_commands, tiny_params
from conftest import ROOT, make_repo_copy

from genvpt.faults import PREEMPTED_EXIT_CODE

STAGES = list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])  # every stage definition of dvc.yaml
OUTPUT_ROOTS = ("data", "scores", "report")


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENVPT_FAULT")}
    env.update(PATH=str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""), GENVPT_LOG_LEVEL="WARNING",
               OMP_NUM_THREADS="1")
    env.update(extra)
    return env


def _run(ws: Path, cmd: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(shlex.split(cmd), cwd=ws, env=_env(**extra), capture_output=True, text=True)


def _remove_outs(ws: Path, outs: list[str]) -> None:
    """What `dvc repro` does before it runs a stage: delete its (non-persistent) outputs."""
    for o in outs:
        p = ws / o
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def _forget_resume_state(ws: Path, outs: list[str]) -> None:
    """Start the stage from nothing: drop the resumable state the reference run left beside its outputs."""
    for o in outs:
        parent = (ws / o).parent
        (parent / "train_state.pt").unlink(missing_ok=True)
        partial = parent / f"{Path(o).name}.partial"
        if partial.is_dir():
            shutil.rmtree(partial)


def _leftovers(ws: Path) -> list[str]:
    """Temporary files of interrupted atomic writes (hidden ``.<name>.tmp-<pid>-*`` / ``.old-<pid>-*`` siblings)."""
    found = []
    for top in OUTPUT_ROOTS:
        for p in (ws / top).rglob(".*"):
            if ".tmp-" in p.name or ".old-" in p.name:
                found.append(str(p.relative_to(ws)))
    return found


def _points(trace: Path) -> list[str]:
    return [line.split()[0] for line in trace.read_text().splitlines()] if trace.exists() else []


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The whole pipeline at toy size, uninterrupted; every stage's fail points in the order it passed them. Built
    once per test run: under pytest-xdist the first worker to need it builds it in a folder the workers share (the
    others wait on its lock and read it; every test copies it before changing anything)."""
    uid = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if not uid:
        return _build_reference(tmp_path_factory.mktemp("faults"))
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent / f"faults-reference-{uid}"
    built = shared / "stages.json"  # written last: the stage commands DVC resolved (no worker opens the repo again)
    with FileLock(f"{shared}.lock"):
        if not built.is_file():
            if shared.exists():  # a worker that failed while building it
                shutil.rmtree(shared)
            shared.mkdir()
            _, cmds, _ = _build_reference(shared)
            built.write_text(json.dumps({n: {**c, "upstream": sorted(c["upstream"])} for n, c in cmds.items()}))
    cmds = {n: {**c, "upstream": set(c["upstream"])} for n, c in json.loads(built.read_text()).items()}
    return shared / "reference", cmds, {n: _points(shared / f"{n}.trace") for n in cmds}


def _build_reference(base: Path) -> tuple[Path, dict, dict]:
    ws = make_repo_copy(base / "reference", yaml.safe_dump(tiny_params(), sort_keys=False))
    cmds = stage_commands(ws)

    def run(name: str) -> str:
        r = _run(ws, cmds[name]["cmd"], GENVPT_FAULT_LOG=str(base / f"{name}.trace"))
        assert r.returncode == 0, f"{name} failed in the reference run:\n{r.stderr[-3000:]}"
        return name

    # two single-threaded stages at a time (two cores), each as soon as the stages writing its inputs are done
    done: set[str] = set()
    running: dict = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        while len(done) < len(cmds):
            for n in cmds:
                if n not in done and n not in running and cmds[n]["upstream"] <= done and len(running) < 2:
                    running[n] = pool.submit(run, n)
            finished, _ = concurrent.futures.wait(running.values(), return_when=concurrent.futures.FIRST_COMPLETED)
            for n in [n for n, f in running.items() if f in finished]:
                running.pop(n).result()
                done.add(n)
    return ws, cmds, {n: _points(base / f"{n}.trace") for n in cmds}



def _instance(cmds: dict, stage: str) -> str:
    names = [n for n in cmds if n == stage or n.startswith(stage + "@")]
    assert names, f"dvc.yaml stage {stage!r} has no instance in the toy pipeline"
    return names[0]


def kill_plan(points: list[str]) -> list[str]:
    """GENVPT_FAULT specs, in turn: SIGKILL at the first write (early), SIGKILL just after the first training
    checkpoint (mid-training), SIGTERM (pre-emption) and then SIGKILL at the last write (outputs computed, the final
    rename pending). Each run resumes what the previous one left, so each point is one a resumed run still reaches
    (mid-training SIGTERM has its own test below)."""
    writes = [p for p in points if p.startswith("write")]
    assert writes, f"the stage passes no write point: {points}"
    plan = [f"{writes[0]}@1"]
    if any(p.startswith("checkpoint:") for p in points):
        plan.append("checkpoint:*@1")
    last = f"{writes[-1]}@{writes.count(writes[-1])}"
    plan.append(f"{last}:TERM")
    if last not in plan:
        plan.append(last)
    return plan


def _workspace(reference, tmp_path: Path) -> Path:
    ws, _, _ = reference
    copy = tmp_path / "ws"
    shutil.copytree(ws, copy, symlinks=True)
    return copy


def _assert_nothing_partial(ws: Path, ref: Path, outs: list[str], when: str) -> None:
    for o in outs:
        p = ws / o
        if not p.exists():
            continue
        files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
        for f in files:
            rel = f.relative_to(ws)
            if any(part.startswith(".") for part in rel.parts):
                continue  # a hidden temporary sibling: not in a final location
            assert (ref / rel).is_file(), f"{when}: {rel} is in a final output location but not in the reference"
            assert not differences(f, ref / rel), f"{when}: {rel} is in its final location with partial content"


@pytest.mark.parametrize("stage", STAGES)
def test_stage_killed_repeatedly_then_rerun_gives_the_uninterrupted_outputs(reference, stage, tmp_path):
    ref, cmds, points = reference
    name = _instance(cmds, stage)
    cmd, outs = cmds[name]["cmd"], cmds[name]["outs"]
    ws = _workspace(reference, tmp_path)
    _forget_resume_state(ws, outs)
    plan = kill_plan(points[name])
    for spec in plan:
        _remove_outs(ws, outs)
        r = _run(ws, cmd, GENVPT_FAULT=spec)
        term = spec.endswith(":TERM")
        assert r.returncode == (PREEMPTED_EXIT_CODE if term else -signal.SIGKILL), (
            f"{name} was not stopped at {spec} (rc {r.returncode}); points {points[name]}\n{r.stderr[-2000:]}")
        _assert_nothing_partial(ws, ref, outs, f"{name} stopped at {spec}")
        if term:
            assert "Traceback" not in r.stderr and not _leftovers(ws), f"{name}: SIGTERM must exit cleanly"
    _remove_outs(ws, outs)
    r = _run(ws, cmd)
    assert r.returncode == 0, f"{name} rerun after {plan} failed:\n{r.stderr[-3000:]}"
    for o in outs:
        assert not differences(ws / o, ref / o), f"{name}: {o} differs from the uninterrupted run's"
    assert not _leftovers(ws), f"{name}: temporary files left behind: {_leftovers(ws)}"


# adapt: pre-empted at seed 1's checkpoint (seed 0 finished: the rerun keeps it); the generator at its first one
@pytest.mark.parametrize("stage,spec", [("adapt", "checkpoint:*@2:TERM"),
                                        ("pretrain_generator", "checkpoint:*@1:TERM")])
def test_sigterm_exits_cleanly_with_the_checkpoint_kept_and_the_rerun_resumes(reference, stage, spec, tmp_path):
    ref, cmds, points = reference
    name = _instance(cmds, stage)
    cmd, outs = cmds[name]["cmd"], cmds[name]["outs"]
    ws = _workspace(reference, tmp_path)
    _forget_resume_state(ws, outs)
    _remove_outs(ws, outs)
    trace = tmp_path / "trace"
    r = _run(ws, cmd, GENVPT_FAULT=spec, GENVPT_FAULT_LOG=str(trace))
    assert r.returncode == PREEMPTED_EXIT_CODE, f"rc {r.returncode}\n{r.stderr[-2000:]}"
    assert "pre-empted (SIGTERM)" in r.stderr and "Traceback" not in r.stderr
    states = [p for p in ws.joinpath("data").rglob("train_state.pt")]
    assert states, "no training checkpoint kept after SIGTERM"
    _assert_nothing_partial(ws, ref, outs, f"{name} after SIGTERM")
    assert not _leftovers(ws), "SIGTERM must clean up its temporary files itself"
    _remove_outs(ws, outs)
    trace2 = tmp_path / "trace2"
    r = _run(ws, cmd, GENVPT_FAULT_LOG=str(trace2))
    assert r.returncode == 0, r.stderr[-3000:]
    # it resumed: fewer training checkpoints than an uninterrupted run writes
    assert _points(trace2).count("checkpoint:train_state.pt") < points[name].count("checkpoint:train_state.pt")
    for o in outs:
        assert not differences(ws / o, ref / o), f"{name}: {o} differs from the uninterrupted run's"


def test_sweep_restores_a_directory_whose_replacement_was_interrupted(tmp_path):
    """atomic_dir killed between moving the old output aside and renaming the new one in: the old one comes back."""
    from genvpt.io import sweep_stale

    out = tmp_path / "out"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    old = tmp_path / f".out.old-{pid}-"
    old.mkdir()
    (old / "a.txt").write_text("good")
    tmp = tmp_path / f".out.tmp-{pid}-xyz"
    tmp.mkdir()
    (tmp / "a.txt").write_text("half")
    sweep_stale(out)
    assert (out / "a.txt").read_text() == "good" and not old.exists() and not tmp.exists()
    mine = tmp_path / f".out.tmp-{os.getpid()}-abc"
    mine.mkdir()
    sweep_stale(out)
    assert mine.exists(), "a live writer's temporary folder must be left alone"


def test_flow_killed_between_stages_picks_up_where_it_stopped(prefect_harness, tmp_path):
    from dvc.repo import Repo
    from prefect.settings import PREFECT_API_URL

    from flows.pipeline import pipeline

    params = tiny_params()
    params["prefect"]["retries"] = 0  # a killed stage fails the flow at once
    ws = make_repo_copy(tmp_path / "repo", yaml.safe_dump(params, sort_keys=False))
    target = "pretrain_tokenizer@vqgan"
    r = subprocess.run([sys.executable, "-m", "flows.pipeline", "--stages", target], cwd=ws,
                       env=_env(GENVPT_FAULT="flow:after:prepare_source",
                                PREFECT_API_URL=str(PREFECT_API_URL.value())),
                       capture_output=True, text=True)
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    with contextlib.chdir(ws), Repo(str(ws)) as repo:
        stale = repo.status(targets=["prepare_source", target])
    assert "prepare_source" not in stale and target in stale, stale  # DVC: the first stage done, the second not
    # the flow again, its stage (run by DVC) killed while writing model.pt: DVC still sees the stage as not done and
    # nothing sits in its final location
    r = subprocess.run([sys.executable, "-m", "flows.pipeline", "--stages", target], cwd=ws,
                       env=_env(GENVPT_FAULT="write:model.pt@1", PREFECT_API_URL=str(PREFECT_API_URL.value())),
                       capture_output=True, text=True)
    assert r.returncode != 0
    with contextlib.chdir(ws), Repo(str(ws)) as repo:
        assert target in repo.status(targets=[target])
    assert not (ws / "data/tokenizers/vqgan/model.pt").exists()
    results = pipeline(stages=[target], root=str(ws))
    # the upstream stages (the source and the tokenizers' broad data) finished in the earlier runs: only the killed
    # stage runs again
    assert results[-1]["stage"] == target
    assert {x["stage"]: x["ran"] for x in results} == {"prepare_source": False, "prepare_tokenizer": False, target: True}
    with contextlib.chdir(ws), Repo(str(ws)) as repo:
        assert repo.status(targets=[target]) == {}


def test_second_dvc_repro_in_one_checkout_fails_clearly_and_corrupts_nothing(reference, tmp_path):
    ref, cmds, _ = reference
    ws = make_repo_copy(tmp_path / "repo", yaml.safe_dump(tiny_params(), sort_keys=False))
    env_path = _env()
    first_trace = tmp_path / "first.trace"
    dvc = [sys.executable, "-m", "dvc"]
    # the first repro holds DVC's lock while its stage is frozen at its first write
    first = subprocess.Popen(dvc + ["repro", "prepare_source"], cwd=ws, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             env={**env_path, "GENVPT_FAULT": "write*@1:STOP", "GENVPT_FAULT_LOG": str(first_trace)})
    try:
        deadline = time.time() + 120
        while not (first_trace.exists() and "write" in first_trace.read_text()):
            assert first.poll() is None, first.communicate()
            assert time.time() < deadline, "the first repro never reached its first write"
            time.sleep(0.2)
        stage_pid = int(first_trace.read_text().splitlines()[-1].split()[1])
        second = subprocess.run(dvc + ["repro", "prepare_source"], cwd=ws, env=env_path, capture_output=True,
                                text=True, timeout=300)
        assert second.returncode != 0
        assert "lock" in (second.stdout + second.stderr).lower(), second.stderr[-2000:]
        os.kill(stage_pid, signal.SIGCONT)
        out, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err[-3000:]
    assert not differences(ws / "data/prepared/source", ref / "data/prepared/source")
    with contextlib.chdir(ws):
        from dvc.repo import Repo

        with Repo(str(ws)) as repo:
            assert repo.status(targets=["prepare_source"]) == {}


def test_parallel_experiments_leave_complete_cache_entries(tmp_path):
    """Two `dvc exp run --temp` at once write into one DVC cache; afterwards a run with either's params is a cache
    hit, and what the cache holds equals a forced recomputation byte for byte."""
    ws = make_repo_copy(tmp_path / "repo", yaml.safe_dump(tiny_params(), sort_keys=False))
    dvc = [sys.executable, "-m", "dvc"]
    env = _env()
    runs = [subprocess.Popen(dvc + ["exp", "run", "--temp", "-S", f"dataset.seed={s}", "-n", f"seed{s}", "prepare"],
                             cwd=ws, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for s in (1, 2)]
    for p in runs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, out[-3000:]
    for seed in (1, 2):
        r = subprocess.run(dvc + ["exp", "run", "-S", f"dataset.seed={seed}", "prepare"], cwd=ws, env=env,
                           capture_output=True, text=True)
        assert r.returncode == 0 and "is cached" in r.stdout + r.stderr, r.stdout + r.stderr
        cached = tmp_path / f"cached-{seed}"
        shutil.copytree(ws / "data/prepared/target", cached)
        r = subprocess.run(dvc + ["repro", "--force", "prepare"], cwd=ws, env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]
        assert not differences(ws / "data/prepared/target", cached), f"seed {seed}: the cache entry differs"
