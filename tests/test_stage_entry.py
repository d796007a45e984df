"""Issue #18 section 7: the stage entry points (stages/__init__.py) from a fresh shell and with bad params.

* dvc.yaml's commands say ``python``; from a shell where that is the system interpreter (no torch, .venv not
  activated) a stage re-runs itself with the checkout's ``.venv/bin/python``: ``python3 -m stages.<x> --help`` and
  ``.venv/bin/dvc repro prepare`` both work;
* without a venv anywhere the stage stops with one line saying what to do;
* a bad value in a nested adaptation configuration is one short message naming the key path, no traceback.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, make_repo_copy

SYSTEM_PYTHON = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")


def _lacks_torch(python: str | None) -> bool:
    return python is not None and subprocess.run([python, "-c", "import torch"], capture_output=True).returncode != 0


needs_bare_python = pytest.mark.skipif(not _lacks_torch(SYSTEM_PYTHON) or sys.version_info < (3, 10),
                                       reason="needs a system python3 (3.10+) without torch")


def _fresh_env(path: str) -> dict[str, str]:
    """A new login's environment: no venv activated, nothing of this test process."""
    return {"HOME": os.environ.get("HOME", "/root"), "PATH": path, "LANG": "C.UTF-8", "DVC_NO_ANALYTICS": "1",
            **{k: v for k, v in os.environ.items() if k.startswith("GIT_")}}


@needs_bare_python
def test_a_stage_started_by_the_system_python_runs_in_the_venv():
    r = subprocess.run([SYSTEM_PYTHON, "-m", "stages.caption", "--help"], cwd=ROOT, capture_output=True, text=True,
                       env=_fresh_env("/usr/local/bin:/usr/bin:/bin"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: caption.py") and "--prepared" in r.stdout


@needs_bare_python
def test_without_a_venv_the_stage_says_what_to_do_in_one_line(tmp_path):
    (tmp_path / "stages").mkdir()
    shutil.copy(ROOT / "stages" / "__init__.py", tmp_path / "stages" / "__init__.py")
    (tmp_path / "stages" / "hello.py").write_text("print('ran')\n")
    r = subprocess.run([SYSTEM_PYTHON, "-m", "stages.hello"], cwd=tmp_path, capture_output=True, text=True,
                       env=_fresh_env("/usr/local/bin:/usr/bin:/bin"))
    assert r.returncode == 1 and "ran" not in r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "lacks torch" in lines[0] and "make venv" in lines[0] and "Traceback" not in r.stderr


@needs_bare_python
def test_dvc_repro_from_a_fresh_shell(tmp_path):
    """`.venv/bin/dvc repro prepare` with the system interpreter as `python` on PATH (not the venv's)."""
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["dataset"]["image_size"] = 16
    p["dataset"]["shapes"].update(images_per_class=3, classes=["circle", "square"])
    repo = make_repo_copy(tmp_path / "repo", yaml.safe_dump(p, sort_keys=False))
    (repo / ".venv").symlink_to(Path(sys.executable).parent.parent)  # the checkout's venv, as `make venv` leaves it
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python").symlink_to(SYSTEM_PYTHON)  # `python` = the system's, without torch
    dvc = str(repo / ".venv" / "bin" / "dvc")
    r = subprocess.run([dvc, "repro", "prepare"], cwd=repo, capture_output=True, text=True,
                       env=_fresh_env(f"{bindir}:/usr/local/bin:/usr/bin:/bin"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (repo / "data" / "prepared" / "target" / "manifest.parquet").is_file()


def test_a_bad_nested_adaptation_value_is_one_short_line_naming_the_key(tmp_path):
    from genvpt.config import ConfigError, load_params

    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["adaptation"]["configs"]["mvp"]["tau"] = -1
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(p, sort_keys=False))
    with pytest.raises(ConfigError) as err:
        load_params(bad)
    lines = str(err.value).splitlines()
    assert lines[0] == f"invalid params in {bad}:" and len(lines) == 2
    assert lines[1].strip().startswith("adaptation.configs.mvp.tau: Input should be greater than or equal to 4")
    assert len(lines[1]) < 160

    # a whole mapping where a value belongs is named by its keys, not printed
    p["adaptation"]["configs"]["mvp"]["tau"] = {f"key{i}": list(range(20)) for i in range(30)}
    bad.write_text(yaml.safe_dump(p, sort_keys=False))
    with pytest.raises(ConfigError) as err:
        load_params(bad)
    assert len(str(err.value)) < 400 and "adaptation.configs.mvp.tau" in str(err.value)

    # the stage prints the message, not a traceback
    p["adaptation"]["configs"]["mvp"]["tau"] = -1
    bad.write_text(yaml.safe_dump(p, sort_keys=False))
    r = subprocess.run([sys.executable, "-m", "stages.caption", "--prepared", "x", "--out", str(tmp_path / "c.parquet"),
                        "--params", str(bad)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines() == [f"error: invalid params in {bad}:",
                                             "  adaptation.configs.mvp.tau: Input should be greater than or equal to "
                                             "4 (got -1) [method mvp]"]
