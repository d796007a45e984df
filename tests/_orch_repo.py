"""A tiny DVC repository for the orchestration tests (GPU workers, Dask): stages are ``python step.py ...`` commands
that sleep a little, write a deterministic output (their name and their inputs' text) and record when and where
they ran (start / end time, CUDA_VISIBLE_DEVICES, GENVPT_DEVICE, pid) under ``../timing`` -- outside the repository,
so the outputs and dvc.lock of two runs can be compared byte for byte."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

STEP = '''\
import json, os, sys, time
name, sleep, timing, out, *deps = sys.argv[1:]
start = time.time()
time.sleep(float(sleep))
text = name + "\\n" + "".join(open(d).read() for d in deps)
os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
with open(out + ".tmp", "w") as f:
    f.write(text)
os.replace(out + ".tmp", out)
end = time.time()
os.makedirs(timing, exist_ok=True)
with open(os.path.join(timing, name + ".json"), "w") as f:
    json.dump({"stage": name, "start": start, "end": end, "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
               "device": os.environ.get("GENVPT_DEVICE"), "pid": os.getpid()}, f)
'''

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def step_cmd(name: str, sleep: float, out: str, deps: list[str]) -> str:
    """``python step.py NAME SLEEP ../timing OUT DEPS...`` (the timing record goes to ``<repo>/../timing/NAME.json``)."""
    return " ".join(["python", "step.py", name, str(sleep), "../timing", out, *deps])


def make_tiny_dvc_repo(dest: Path, stages: dict, prefect: dict | None = None) -> Path:
    """``dest``/repo: git + DVC repository with ``step.py``, ``dvc.yaml`` (``stages`` as given) and a params.yaml
    holding only a ``prefect:`` block (every other block takes its defaults). Timing records go to ``dest``/timing."""
    repo = Path(dest) / "repo"
    repo.mkdir(parents=True)
    (repo / "step.py").write_text(STEP)
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    (repo / "params.yaml").write_text(yaml.safe_dump({"prefect": prefect or {}}, sort_keys=False))
    env = {**os.environ, **GIT_ENV}
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"],
                ["git", "add", "-A"], ["git", "commit", "-qm", "tiny"]):
        subprocess.run(cmd, cwd=repo, check=True, env=env, capture_output=True)
    return repo


def dvc_repro(repo: Path) -> None:
    """A serial ``dvc repro`` of the whole repository (the reference run)."""
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}
    r = subprocess.run([sys.executable, "-m", "dvc", "repro", "-q"], cwd=repo, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def outputs(repo: Path) -> dict[str, bytes]:
    """Every file under ``repo``/data by relative path; a .gitignore (DVC's, listing the outputs in the order they were
    recorded) as its set of lines."""
    return {str(p.relative_to(repo)): set(p.read_text().splitlines()) if p.name == ".gitignore" else p.read_bytes()
            for p in sorted((repo / "data").rglob("*")) if p.is_file()}


def lock(repo: Path) -> dict:
    return yaml.safe_load((repo / "dvc.lock").read_text())["stages"]


def timings(repo: Path) -> dict[str, dict]:
    """The timing records of the stage commands that ran, by the name they were given."""
    d = repo.parent / "timing"
    return {r["stage"]: r for r in (json.loads(p.read_text()) for p in sorted(d.glob("*.json")))}


def dvc_status(repo: Path) -> dict:
    from flows.dvc_stages import dvc_repo

    with dvc_repo(repo) as r:
        return r.status()
