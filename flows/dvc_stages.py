"""DVC stages run concurrently in one checkout: DVC decides, the commands run side by side, DVC records.

DVC holds one repository lock, so two ``dvc repro`` (or ``Repo.reproduce``) calls in one checkout cannot run at
once. What DVC needs the lock for is short, though: deciding whether a stage is stale and recording its result.
So a stage here is run in three steps, the first and last under one process-wide lock (and DVC's own):

1. ``Stage.changed()`` decides staleness (deps, params, outs against dvc.lock), exactly as ``dvc repro`` does; an
   up-to-date stage stops here. A stale one has its outputs removed the way ``dvc repro`` removes them;
2. the stage's ``cmd`` from dvc.yaml runs as a subprocess, with no lock held (the stages write only their own
   outputs, atomically), while other stages' commands run;
3. ``Repo.commit(stage, force=True)`` hashes its deps and outs, moves the outs into the cache and writes the stage's
   entry in dvc.lock (``dvc commit``), one stage at a time.

A stage starts only after every stage it depends on has been recorded (the caller's scheduling), so step 1 sees
upstream results as DVC would. Afterwards ``dvc status`` is clean and a second run does no work.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, Optional

log = logging.getLogger(__name__)

_DVC_LOCK = threading.Lock()  # one DVC operation at a time in this process (Repo objects and chdir are not shared)


class StageFailed(RuntimeError):
    def __init__(self, name: str, returncode: int, cmd: str):
        super().__init__(f"stage {name!r} failed with exit status {returncode}: {cmd}")
        self.name, self.returncode, self.cmd = name, returncode, cmd


@contextlib.contextmanager
def dvc_repo(root: str | os.PathLike) -> Iterator:
    """The DVC repository at ``root``, opened under the process-wide lock and holding DVC's repository lock (DVC
    resolves paths against the cwd)."""
    from dvc.repo import Repo, lock_repo

    with _DVC_LOCK, contextlib.chdir(root), Repo(str(root)) as repo, lock_repo(repo):
        yield repo


def _stage(repo, name: str):
    stages = repo.stage.collect(name)
    if len(stages) != 1:
        raise ValueError(f"{name!r} names {len(stages)} stages in dvc.yaml; expected one")
    return stages[0]


def stage_env(threads: Optional[int]) -> dict[str, str]:
    """The environment of a stage command: this interpreter first on PATH (commands say ``python -m ...``), and
    ``threads`` OMP / MKL threads when given."""
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def run_if_stale(root: str | os.PathLike, name: str, *, threads: Optional[int] = None,
                 slots: Optional[threading.Semaphore] = None) -> dict:
    """Run stage ``name`` when DVC finds it stale (see the module docstring) -> ``{"stage", "ran", "seconds",
    "started", "finished"}`` (``started`` / ``finished``: time.time() of the command, None when up to date).
    ``slots`` bounds how many commands run at once."""
    t0 = time.perf_counter()
    with dvc_repo(root) as repo:
        stage = _stage(repo, name)
        if not stage.changed():
            return {"stage": name, "ran": False, "seconds": round(time.perf_counter() - t0, 3), "started": None,
                    "finished": None}
        cmds = stage.cmd if isinstance(stage.cmd, list) else [stage.cmd]
        stage.remove_outs(ignore_remove=False, force=False)  # as dvc repro does before running a stage
    with slots or contextlib.nullcontext():
        started = time.time()
        log.info("stage %s: running %s", name, " && ".join(cmds))
        for cmd in cmds:
            argv = shlex.split(cmd)  # dvc.yaml's commands are plain argument lists: no shell needed
            r = subprocess.run(argv, cwd=str(root), env=stage_env(threads))
            if r.returncode != 0:
                raise StageFailed(name, r.returncode, cmd)
        finished = time.time()
    with dvc_repo(root) as repo:
        repo.commit(name, force=True)  # dvc commit: hashes, cache, dvc.lock
    return {"stage": name, "ran": True, "seconds": round(time.perf_counter() - t0, 3), "started": started,
            "finished": finished}
