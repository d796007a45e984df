"""One thin entry point per DVC stage: ``python -m stages.<name>`` (see dvc.yaml).

Python imports this package before it runs any ``stages.<name>``, so two things hold for every stage:

* **A fresh shell works.** dvc.yaml's commands say ``python``: whichever is first on PATH, e.g. the system's, which
  lacks torch when ``.venv`` is not activated. When the running interpreter lacks the project's dependencies, the
  stage re-runs itself, same arguments and process, with the project's ``.venv/bin/python`` (looked for in this
  checkout and the folders above it, since DVC's temporary experiment workspaces live inside the checkout under
  ``.dvc/tmp/exps``). Without such a venv it stops with one line saying what to do.
* **A bad params.yaml is one message**, the key and what is allowed (:class:`genvpt.config.ConfigError`), without
  a traceback.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

# imported by every stage; find_spec only looks for them (importing torch here would cost every stage a second)
REQUIRED_MODULES = ("torch", "pydantic", "yaml", "pyarrow")
_REEXEC_MARK = "GENVPT_STAGE_PYTHON"  # set before re-running, so a venv that also lacks them cannot loop


def missing_modules() -> list[str]:
    return [m for m in REQUIRED_MODULES if importlib.util.find_spec(m) is None]


def project_python(start: Path = Path(__file__).resolve().parent.parent) -> Path | None:
    """``.venv/bin/python`` of this checkout, or of the closest folder above it that has one."""
    for d in (start, *start.parents):
        py = d / ".venv" / "bin" / "python"
        if py.is_file() and os.access(py, os.X_OK):
            return py
    return None


def ensure_project_python() -> None:
    """Re-run this process with the project's venv interpreter when the current one lacks the dependencies; exit
    with one line when there is none."""
    missing = missing_modules()
    if not missing:
        return
    py = project_python()
    in_that_venv = py is not None and Path(sys.prefix).resolve() == py.parent.parent.resolve()
    if py is not None and not in_that_venv and os.environ.get(_REEXEC_MARK) != str(py):
        os.environ[_REEXEC_MARK] = str(py)
        argv = [str(py), *sys.orig_argv[1:]]  # the same command line: `-m stages.<name> <args>`
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(argv[0], argv)
    root = Path(__file__).resolve().parent.parent
    where = f"{py} also lacks them: reinstall with `make venv`" if py is not None else (
        f"no .venv in {root} or above it: run `make venv` there (or activate an environment with genvpt installed)")
    sys.stderr.write(f"genvpt: {sys.executable} cannot run the stages, it lacks {', '.join(missing)}; {where}\n")
    raise SystemExit(1)


def _config_errors_without_traceback() -> None:
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        if getattr(exc_type, "__module__", "") == "genvpt.config" and exc_type.__name__ == "ConfigError":
            sys.stderr.write(f"error: {exc}\n")
            return
        previous(exc_type, exc, tb)

    sys.excepthook = hook


ensure_project_python()
_config_errors_without_traceback()
