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

**A shared DVC remote** (``remote=`` :class:`genvpt.remote_params.RemoteParams`, params ``remote:``). Before step 1,
a stage that is stale only because its outputs are missing (deps, params and command match dvc.lock) has them
pulled from the remote (``Repo.pull`` of the stage; objects the remote lacks are not an error: the stage then
runs); after step 3, and for an up-to-date stage too, its cached outputs are pushed (``Repo.push``: objects already
in the remote are not sent again, so a push that failed once is retried by the next run). A second clone of the
same commit, dvc.lock included, thus restores every stage the first one pushed and runs none of them.
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


class RemoteError(RuntimeError):
    """The DVC remote params name is not configured, or pushing to it failed; the message says which and what to do."""


@contextlib.contextmanager
def dvc_repo(root: str | os.PathLike) -> Iterator:
    """The DVC repository at ``root``, opened under the process-wide lock and holding DVC's repository lock (DVC
    resolves paths against the cwd). Across processes (GPU workers, Dask workers) DVC's lock is waited for, not
    given up after DVC's default 3 s."""
    from dvc.repo import Repo, lock_repo

    with _DVC_LOCK, contextlib.chdir(root), Repo(str(root), _wait_for_lock=True) as repo, lock_repo(repo):
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


def remote_name(repo, remote) -> Optional[str]:
    """The DVC remote ``remote`` (:class:`genvpt.remote_params.RemoteParams`, or None) selects in ``repo``: its
    ``name``, or DVC's default remote (``core.remote``) when ``name`` is null; None when there is none. A name that
    is not configured is a :class:`RemoteError` naming the params key."""
    if remote is None:
        return None
    configured = sorted(repo.config.get("remote", {}))
    if remote.name is None:
        default = repo.config.get("core", {}).get("remote")
        return default or None
    if remote.name not in configured:
        raise RemoteError(f"params remote.name: no DVC remote named {remote.name!r} (configured: "
                          f"{', '.join(configured) or 'none'}); add it with `dvc remote add {remote.name} URL` "
                          f"(credentials in .dvc/config.local: `dvc remote modify --local ...`) or set remote.name: null")
    return remote.name


def _pull_outputs(repo, stage, name: str, remote: str) -> bool:
    """Pull the outputs of ``stage`` from ``remote`` when they are all that makes it stale (as ``dvc repro --pull``
    decides); True when the stage is up to date afterwards. Missing objects are logged, not raised: the stage runs."""
    from dvc.exceptions import DvcException

    if stage.changed(allow_missing=True):  # deps, params or the command differ from dvc.lock: it must run
        return False
    try:
        log.info("stage %s: pulling its outputs from DVC remote %r", name, remote)
        repo.pull(targets=[stage.addressing], remote=remote)
    except DvcException as err:
        log.info("stage %s: not restored from remote %r (%s); running it", name, remote,
                 str(err).splitlines()[0] if str(err) else type(err).__name__)
        return False
    return not stage.changed()


def _push_outputs(repo, name: str, remote: str) -> None:
    from dvc.exceptions import DvcException

    try:
        n = repo.push(targets=[name], remote=remote)
    except DvcException as err:
        raise RemoteError(f"stage {name!r}: pushing its outputs to DVC remote {remote!r} failed: {err}") from err
    if n:
        log.info("stage %s: pushed %d file(s) to DVC remote %r", name, n, remote)


def run_if_stale(root: str | os.PathLike, name: str, *, threads: Optional[int] = None,
                 slots: Optional[threading.Semaphore] = None, remote=None) -> dict:
    """Run stage ``name`` when DVC finds it stale (see the module docstring) -> ``{"stage", "ran", "pulled",
    "seconds", "started", "finished"}`` (``started`` / ``finished``: time.time() of the command, None when it did not
    run; ``pulled``: its outputs came from the remote). ``slots`` bounds how many commands run at once. ``remote``:
    params ``remote`` (:class:`genvpt.remote_params.RemoteParams`); None (or a remote that resolves to none) = no
    remote, as before."""
    t0 = time.perf_counter()
    with dvc_repo(root) as repo:
        stage = _stage(repo, name)
        rname = remote_name(repo, remote)
        changed = stage.changed()
        pulled = bool(changed and rname and remote.pull and _pull_outputs(repo, stage, name, rname))
        if pulled or not changed:
            if rname and remote.push and not pulled:
                _push_outputs(repo, name, rname)
            return {"stage": name, "ran": False, "pulled": pulled, "seconds": round(time.perf_counter() - t0, 3),
                    "started": None, "finished": None}
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
        if rname and remote.push:
            _push_outputs(repo, name, rname)
    return {"stage": name, "ran": True, "pulled": False, "seconds": round(time.perf_counter() - t0, 3),
            "started": started, "finished": finished}
