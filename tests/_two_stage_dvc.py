"""A two-stage DVC repository in a temporary folder, for tests of how the flow drives DVC (remotes, sweeps).

``make`` writes ``data/values/`` (a cached folder) from params ``make.n`` / ``make.scale``; ``fit`` reads it and
writes ``data/model.txt`` (cached) and ``metrics.json`` (``cache: false``, git-tracked) from params ``fit.lr`` /
``fit.width``. Every command appends its stage name to the file ``$TINY_COUNTER`` (outside the repository), so a
test can tell which commands ran; the metrics depend only on the params, so a direct run gives the same numbers.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

MAKE = """\
import os, yaml
p = yaml.safe_load(open("params.yaml"))["make"]
open(os.environ["TINY_COUNTER"], "a").write("make\\n")
os.makedirs("data/values", exist_ok=True)
for i in range(p["n"]):
    open(f"data/values/{i}.txt", "w").write(f"{i * p['scale']}\\n")
"""

FIT = """\
import json, os, yaml
p = yaml.safe_load(open("params.yaml"))["fit"]
open(os.environ["TINY_COUNTER"], "a").write("fit\\n")
values = [float(open(os.path.join("data/values", f)).read()) for f in sorted(os.listdir("data/values"))]
loss = round(sum(values) * p["lr"] / p["width"], 6)
open("data/model.txt", "w").write(f"{p['lr']} {p['width']} {loss}\\n")
json.dump({"loss": loss, "n_values": len(values)}, open("metrics.json", "w"))
"""

DVC_YAML = """\
stages:
  make:
    cmd: python make.py
    deps: [make.py]
    params: [make]
    outs: [data/values]
  fit:
    cmd: python fit.py
    deps: [fit.py, data/values]
    params: [fit]
    outs: [data/model.txt]
    metrics:
      - metrics.json:
          cache: false
"""

PARAMS = """\
make:
  n: 3        # values written
  scale: 2
fit:
  lr: 0.1     # a comment DVC's -S keeps
  width: 1
"""

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def env() -> dict[str, str]:
    """This interpreter first on PATH (stage commands say ``python``), DVC analytics off, git identity set."""
    return {**os.environ, **GIT_ENV, "DVC_NO_ANALYTICS": "1",
            "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}


def run(cwd: Path, *cmd: str) -> str:
    r = subprocess.run(list(cmd), cwd=cwd, env=env(), capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)} failed in {cwd}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def dvc(cwd: Path, *args: str) -> str:
    return run(cwd, sys.executable, "-m", "dvc", *args)


def make_repo(root: Path) -> Path:
    """git init + dvc init + the two stages, committed."""
    root.mkdir(parents=True)
    (root / "make.py").write_text(MAKE)
    (root / "fit.py").write_text(FIT)
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / "params.yaml").write_text(PARAMS)
    run(root, "git", "init", "-q")
    dvc(root, "init", "-q")
    dvc(root, "config", "core.autostage", "false")
    commit(root, "tiny pipeline")
    return root


def commit(root: Path, message: str) -> None:
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", message)


def counts(counter: Path) -> dict[str, int]:
    lines = counter.read_text().split() if counter.is_file() else []
    return {name: lines.count(name) for name in sorted(set(lines))}


def dvc_status(root: Path) -> dict:
    return json.loads(dvc(root, "status", "--json") or "{}")


def corrupt_cache_files(cache: Path) -> list[str]:
    """Files of a DVC 3 cache (``files/md5/xx/yyyy``) whose md5 is not their name ([] = consistent)."""
    bad = []
    for f in (cache / "files" / "md5").glob("*/*"):
        name = f.parent.name + f.name.removesuffix(".dir")
        if hashlib.md5(f.read_bytes()).hexdigest() != name:
            bad.append(str(f))
    return bad

