"""Shared pytest fixtures.

``prefect_harness``: one temporary Prefect API server (SQLite) for the whole session, started on first use
(starting it costs ~10-20 s, so it is session-scoped and not autouse).
``repo_copy``: a throw-away copy of this repository (tracked and untracked-not-ignored files) as a fresh git repo,
for tests that run DVC or the flow without touching the working tree.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("GENVPT_LOG_LEVEL", "WARNING")


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _project_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    return [f for f in out if (ROOT / f).is_file()]


def make_repo_copy(dest: Path, params_text: str | None = None) -> Path:
    """Copy the project into ``dest`` as a fresh git repo with one commit; optionally replace params.yaml."""
    for rel in _project_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    if params_text is not None:
        (dest / "params.yaml").write_text(params_text)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dest, check=True, env=env, capture_output=True)
    return dest


@pytest.fixture
def repo_copy(tmp_path):
    return make_repo_copy


@pytest.fixture
def venv_path_env():
    """Environment whose PATH starts with this interpreter's bin dir (stage cmds say `python -m ...`)."""
    return {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread (and do not fight the rest of the suite for the two cores).
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
