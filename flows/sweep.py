"""Sweeps: a grid (or a list) of params sets run as DVC experiments, N at a time, ending in one table.

    python -m flows.sweep sweeps/example.yaml              # run it, then write results/sweeps/<name>/
    python -m flows.sweep sweeps/example.yaml --jobs 4     # four experiments at a time
    python -m flows.sweep sweeps/example.yaml --collect    # only rebuild the table from the finished experiments
    python -m flows.sweep sweeps/example.yaml --dry-run    # check the sets, print the dvc commands, run nothing

A sweep spec (YAML, :class:`SweepSpec`) names params.yaml keys and the values to try::

    name: lr                          # experiments lr-1, lr-2, ...; results in results/sweeps/lr/
    targets: [adapt@mvp]              # stages to reproduce (default: the whole pipeline)
    jobs: 2                           # experiments at a time
    set: {adaptation.seeds: [0]}      # applied to every experiment
    grid:                             # every combination of these ...
      adaptation.train.lr: [0.001, 0.01]
      adaptation.configs.mvp.tau: [12, 20]
    experiments:                      # ... and each of these sets as well
      - {dataset.name: digits}
    metrics: ["data/adapted/mvp.json:*"]  # the report table's metric columns (default: every metric that differs)

Every experiment is ``dvc exp run --temp -n <name> -S key=value ... <targets>``: DVC copies the workspace (HEAD plus
uncommitted changes to tracked files, and an untracked dvc.lock) into its own temporary folder under
``.dvc/tmp/exps``, reproduces what the changed params make stale there, stores the outputs in the one shared DVC
cache and records the experiment as a git ref (``dvc exp show``, ``dvc exp apply <name>``). ``--temp`` runs need no
Celery worker (``dvc queue start``), whose queue hung on this machine (iterative/dvc#10427, #10398); N of them run at
once as N processes. DVC writes cache objects to a temporary name and renames them, so concurrent experiments share
the cache safely (tests/test_sweep.py checks every cached file's md5 and ``dvc status`` in each experiment after a
garbage collection).

Every params set is checked before anything runs: its keys must exist in params.yaml (``-S`` does not add keys) and,
for this project, the merged params must pass genvpt's validation (an error names the experiment and the key).
Afterwards ``dvc exp show --json`` is read into ``results/sweeps/<name>/``: ``table.csv`` (every experiment's swept
params and every scalar metric), ``sweep.json`` (the spec, commands, exit codes, times, full params and metrics) and
``report.md`` (a report section: the spec and the table). Failed experiments are listed with their log
(``logs/<name>.log``) and the command exits with status 1.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import copy
import csv
import datetime
import fnmatch
import io
import itertools
import json
import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import yaml
from pydantic import Field, ValidationError, field_validator

from genvpt.schema import StrictModel, error_items

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_KEY = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$-]*(\.[A-Za-z0-9_$][A-Za-z0-9_$-]*)*$")  # what DVC's -S (Hydra) addresses


class SweepError(ValueError):
    """A bad sweep spec or params set; the message names the spec key or the experiment and params key."""


class SweepSpec(StrictModel):
    """A sweep: the experiments are every combination of ``grid`` plus each set of ``experiments``, all with ``set``."""

    name: str                                     # experiment names <name>-1, <name>-2, ...; results/sweeps/<name>/
    targets: list[str] = Field(default_factory=list)  # dvc.yaml stages to reproduce ([]: the whole pipeline)
    jobs: int = Field(default=1, ge=1)            # experiments at a time (--jobs overrides)
    threads: Optional[int] = Field(default=None, ge=1)  # OMP/MKL threads of each experiment's commands (null: inherit)
    set: dict[str, Any] = Field(default_factory=dict)   # params.yaml key -> value, in every experiment
    grid: dict[str, list[Any]] = Field(default_factory=dict)  # params.yaml key -> values; every combination
    experiments: list[dict[str, Any]] = Field(default_factory=list)  # explicit params sets, after the grid's
    metrics: list[str] = Field(default_factory=list)    # report.md metric columns: patterns on "<file>:<key>"
    copy_paths: list[str] = Field(default_factory=list)  # untracked paths each experiment needs (dvc exp run -C)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("must be letters, digits, '_', '.', '-' (it names the experiments and a folder)")
        return v

    @field_validator("set", "grid")
    @classmethod
    def _keys(cls, v: dict) -> dict:
        bad = [k for k in v if not _KEY.match(str(k))]
        if bad:
            raise ValueError(f"not a params.yaml key path (dotted, as in dvc exp run -S): {', '.join(map(str, bad))}")
        return v

    @field_validator("grid")
    @classmethod
    def _non_empty(cls, v: dict) -> dict:
        empty = [k for k, vals in v.items() if not vals]
        if empty:
            raise ValueError(f"every grid key needs at least one value: {', '.join(empty)}")
        return v

    @field_validator("experiments")
    @classmethod
    def _sets(cls, v: list) -> list:
        for i, s in enumerate(v):
            bad = [k for k in s if not _KEY.match(str(k))]
            if bad or not s:
                raise ValueError(f"entry {i}: a non-empty mapping of params.yaml key paths to values"
                                 + (f" (bad keys: {', '.join(map(str, bad))})" if bad else ""))
        return v


@dataclass
class Experiment:
    name: str
    overrides: dict[str, Any]  # params.yaml key -> value (the spec's ``set`` included)


@dataclass
class Outcome:
    name: str
    command: list[str]
    returncode: Optional[int] = None
    seconds: Optional[float] = None
    log: Optional[str] = None
    started: Optional[float] = None   # time.time() of the command
    finished: Optional[float] = None


def load_spec(path: str | os.PathLike) -> SweepSpec:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise SweepError(f"sweep spec {path}: {err}") from None
    if not isinstance(data, dict):
        raise SweepError(f"sweep spec {path}: must be a mapping (name, grid, ...)")
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as err:
        lines = [f"  {k}: {m}" for k, m in error_items(err, list(SweepSpec.model_fields))]
        raise SweepError(f"invalid sweep spec {path}:\n" + "\n".join(lines)) from None


def expand(spec: SweepSpec) -> list[Experiment]:
    """The experiments of ``spec``, in order: the grid's combinations (last key varying fastest), then
    ``experiments``; each with ``set`` underneath. Names ``<name>-<i>`` from 1."""
    sets: list[dict[str, Any]] = []
    if spec.grid:
        keys = list(spec.grid)
        sets += [dict(zip(keys, combo)) for combo in itertools.product(*(spec.grid[k] for k in keys))]
    sets += [dict(s) for s in spec.experiments]
    if not sets and spec.set:
        sets = [{}]
    if not sets:
        raise SweepError(f"sweep {spec.name!r}: no experiments (give grid, experiments or set)")
    width = len(str(len(sets)))
    return [Experiment(f"{spec.name}-{i + 1:0{width}d}", {**spec.set, **s}) for i, s in enumerate(sets)]


def hydra_value(value: Any) -> str:
    """``value`` in the override grammar ``dvc exp run -S key=value`` parses (Hydra's): strings always quoted, so
    ``"1"`` or ``"null"`` stay strings; floats in positional notation."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise SweepError(f"{value!r} cannot be a params value")
        text = format(Decimal(repr(value)), "f")
        return text if "." in text else text + ".0"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        bad = [k for k in value if not re.match(r"^[A-Za-z_][A-Za-z0-9_-]*$", str(k))]
        if bad:
            raise SweepError(f"mapping keys {bad} cannot be written as a dvc exp run -S value; set their keys one by one")
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    raise SweepError(f"{value!r} ({type(value).__name__}) cannot be a params value")


def apply_overrides(params: dict, overrides: dict[str, Any]) -> dict:
    """A copy of ``params`` with each dotted key set; a key params.yaml does not have is a :class:`SweepError`
    naming it (``dvc exp run -S`` sets existing keys only)."""
    out = copy.deepcopy(params)
    for key, value in overrides.items():
        cur: Any = out
        parts = key.split(".")
        for i, part in enumerate(parts):
            if not isinstance(cur, dict) or part not in cur:
                where = ".".join(parts[:i]) or "the top level"
                have = ", ".join(map(str, cur)) if isinstance(cur, dict) else f"a {type(cur).__name__}, not a mapping"
                raise SweepError(f"{key}: params.yaml has no key {part!r} under {where} (it has: {have})")
            if i == len(parts) - 1:
                cur[part] = value
            else:
                cur = cur[part]
    return out


def check_experiments(params: dict, experiments: Sequence[Experiment],
                      validate: Optional[Callable[[dict], Any]] = None) -> None:
    """Every experiment's overrides apply to ``params`` (params.yaml) and, with ``validate``, the result validates."""
    errors = []
    for e in experiments:
        try:
            merged = apply_overrides(params, e.overrides)
            for v in e.overrides.values():
                hydra_value(v)
            if validate is not None:
                validate(merged)
        except (SweepError, ValueError) as err:
            text = str(err).replace("invalid params in <params>:\n", "").strip()
            errors.append(f"  experiment {e.name} ({_describe(e.overrides)}): " + "; ".join(
                line.strip() for line in text.splitlines()))
    if errors:
        raise SweepError("the sweep's params sets are not valid (nothing was run):\n" + "\n".join(errors))


def _describe(overrides: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in overrides.items()) or "no changes"


# ---------------------------------------------------------------------------------------------------------------
# running

def _dvc() -> list[str]:
    return [sys.executable, "-m", "dvc"]


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)


def experiment_command(exp: Experiment, targets: Sequence[str], copy_paths: Sequence[str] = ()) -> list[str]:
    # --wait-for-lock: experiments starting or finishing together wait for the workspace's DVC lock, not fail on it
    cmd = [*_dvc(), "--wait-for-lock", "exp", "run", "--temp", "-n", exp.name]
    for p in copy_paths:
        cmd += ["-C", p]
    for k, v in exp.overrides.items():
        cmd += ["-S", f"{k}={hydra_value(v)}"]
    return cmd + list(targets)


def existing_experiments(root: Path) -> set[str]:
    r = subprocess.run([*_dvc(), "exp", "list", "--name-only", "--all-commits"], cwd=root, capture_output=True,
                       text=True)
    if r.returncode != 0:
        raise SweepError(f"dvc exp list failed in {root}: {r.stderr.strip()}")
    return {line.strip() for line in r.stdout.splitlines() if line.strip() and not line.startswith(" ")}


def _untracked(root: Path) -> list[str]:
    r = _git(root, "ls-files", "--others", "--exclude-standard")
    return [line for line in r.stdout.splitlines() if line] if r.returncode == 0 else []


def run_experiments(root: Path, experiments: Sequence[Experiment], targets: Sequence[str], jobs: int,
                    logs: Path, *, threads: Optional[int] = None, copy_paths: Sequence[str] = ()) -> list[Outcome]:
    """Run every experiment as ``dvc exp run --temp``, ``jobs`` at a time; one log file each."""
    from flows.dvc_stages import stage_env

    logs.mkdir(parents=True, exist_ok=True)
    env = stage_env(threads)  # this interpreter first on PATH: stage commands say `python`

    def one(exp: Experiment) -> Outcome:
        cmd = experiment_command(exp, targets, copy_paths)
        logfile = logs / f"{exp.name}.log"
        log.info("experiment %s: %s", exp.name, _describe(exp.overrides))
        t0, started = time.perf_counter(), time.time()
        with open(logfile, "w", encoding="utf-8") as fh:
            fh.write("$ " + " ".join(cmd) + "\n")
            fh.flush()
            rc = subprocess.run(cmd, cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
        seconds = round(time.perf_counter() - t0, 3)
        (log.info if rc == 0 else log.error)("experiment %s: %s after %.1f s (log %s)", exp.name,
                                             "done" if rc == 0 else f"failed, exit {rc}", seconds, logfile)
        return Outcome(exp.name, cmd, rc, seconds, str(logfile), started, time.time())

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, experiments))


# ---------------------------------------------------------------------------------------------------------------
# collecting

def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(d, (int, float, str, bool)) or d is None:
        out[prefix] = d
    return out  # lists (per-seed values) are left to sweep.json


def show_experiments(root: Path) -> dict[str, dict]:
    """``dvc exp show --json`` of every commit, by experiment name: ``{"rev", "baseline", "params", "metrics"}``
    (params: params.yaml's data; metrics: file -> data)."""
    r = subprocess.run([*_dvc(), "exp", "show", "--json", "--all-commits"], cwd=root, capture_output=True, text=True)
    if r.returncode != 0:
        raise SweepError(f"dvc exp show failed in {root}: {r.stderr.strip()}")
    found: dict[str, dict] = {}
    for base in json.loads(r.stdout or "[]"):
        for group in base.get("experiments") or []:
            for rev in group.get("revs") or []:
                name, data = rev.get("name"), rev.get("data") or {}
                if not name:
                    continue
                params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
                metrics = {f: (m or {}).get("data") or {} for f, m in (data.get("metrics") or {}).items()}
                found[name] = {"rev": rev.get("rev"), "baseline": base.get("rev"), "params": params, "metrics": metrics}
    return found


def _get(d: dict, dotted: str) -> Any:
    cur: Any = d
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def table_rows(experiments: Sequence[Experiment], shown: dict[str, dict],
               outcomes: Optional[dict[str, Outcome]] = None) -> tuple[list[str], list[str], list[dict]]:
    """(params columns, metric columns, rows): one row per experiment, its swept params as DVC recorded them and
    every scalar metric as ``<file>:<key>``."""
    pcols = list(dict.fromkeys(k for e in experiments for k in e.overrides))
    rows, mcols = [], {}
    for e in experiments:
        s = shown.get(e.name)
        o = (outcomes or {}).get(e.name)
        status = "ok" if s is not None else ("failed" if o is not None and o.returncode not in (None, 0) else "missing")
        row = {"experiment": e.name, "status": status, "rev": (s or {}).get("rev", "")[:7],
               "seconds": o.seconds if o is not None else None}
        for k in pcols:
            row[k] = _get(s["params"], k) if s else e.overrides.get(k)
        for f, data in (s or {}).get("metrics", {}).items():
            for k, v in _flatten(data).items():
                mcols[f"{f}:{k}"] = True
                row[f"{f}:{k}"] = v
        rows.append(row)
    return pcols, list(mcols), rows


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def markdown_section(spec: SweepSpec, pcols: list[str], mcols: list[str], rows: list[dict], *,
                     baseline: str = "", jobs: int = 1, command: str = "") -> str:
    """The sweep as a report section: what ran and one table (metric columns: ``spec.metrics`` patterns, else
    those that differ between experiments)."""
    if spec.metrics:
        shown = [c for c in mcols if any(fnmatch.fnmatchcase(c, p) for p in spec.metrics)]
    else:
        ok = [r for r in rows if r["status"] == "ok"]
        shown = [c for c in mcols if len({json.dumps(r.get(c)) for r in ok}) > 1] if len(ok) > 1 else list(mcols)
    head = ["experiment", "status", *pcols, *shown]
    lines = [f"## Sweep `{spec.name}`", "",
             f"{len(rows)} experiments, {jobs} at a time, as DVC experiments (`dvc exp run --temp`) on commit "
             f"{baseline[:7] or '?'}; stages: {', '.join(spec.targets) or 'the whole pipeline'}."
             + (f" Command: `{command}`." if command else ""), ""]
    if spec.set:
        lines += [f"Every experiment: {_describe(spec.set)}.", ""]
    hidden = len(mcols) - len(shown)
    if hidden:
        lines += [f"{hidden} more metric columns (equal in every experiment, or not selected) are in table.csv.", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in head) + " |" for r in rows]
    bad = [r for r in rows if r["status"] != "ok"]
    if bad:
        lines += ["", "Not finished: " + ", ".join(f"{r['experiment']} ({r['status']}; logs/{r['experiment']}.log)"
                                                  for r in bad) + "."]
    return "\n".join(lines) + "\n"


def write_results(out_dir: Path, spec: SweepSpec, experiments: Sequence[Experiment], shown: dict[str, dict],
                  outcomes: dict[str, Outcome], *, baseline: str = "", jobs: int = 1, command: str = "") -> list[dict]:
    from genvpt.io import atomic_path, write_json, write_text

    pcols, mcols, rows = table_rows(experiments, shown, outcomes)
    out_dir.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["experiment", "status", "rev", "seconds", *pcols, *mcols],
                       extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in r.items()})
    with atomic_path(out_dir / "table.csv") as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")
    write_text(out_dir / "report.md", markdown_section(spec, pcols, mcols, rows, baseline=baseline, jobs=jobs,
                                                       command=command))
    write_json(out_dir / "sweep.json", {
        "spec": spec.model_dump(mode="json"), "baseline": baseline, "jobs": jobs,
        "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "experiments": [{"name": e.name, "overrides": e.overrides,
                         "command": outcomes[e.name].command if e.name in outcomes else None,
                         "returncode": outcomes[e.name].returncode if e.name in outcomes else None,
                         "seconds": outcomes[e.name].seconds if e.name in outcomes else None,
                         "rev": shown.get(e.name, {}).get("rev"), "params": shown.get(e.name, {}).get("params"),
                         "metrics": shown.get(e.name, {}).get("metrics")} for e in experiments],
    })
    return rows


# ---------------------------------------------------------------------------------------------------------------

@dataclass
class SweepResult:
    out_dir: Path
    rows: list[dict]
    outcomes: list[Outcome]

    @property
    def failed(self) -> list[str]:
        return [r["experiment"] for r in self.rows if r["status"] != "ok"]


def run_sweep(root: str | os.PathLike, spec: SweepSpec, *, jobs: Optional[int] = None,
              out_dir: Optional[str | os.PathLike] = None, replace: bool = False, collect_only: bool = False,
              validate: Optional[Callable[[dict], Any]] = None, command: str = "") -> SweepResult:
    """Run ``spec``'s experiments in the DVC repository ``root`` (``jobs`` at a time, default ``spec.jobs``) and
    write the table to ``out_dir`` (default ``<root>/results/sweeps/<name>``). ``validate``: called with each
    experiment's merged params (e.g. genvpt's :func:`genvpt.config.validate_params`) before anything runs.
    ``replace``: remove experiments of the same names first (else they are an error). ``collect_only``: run
    nothing, only rebuild the table from existing experiments."""
    root = Path(root).resolve()
    jobs = int(jobs or spec.jobs)
    out = Path(out_dir) if out_dir else root / "results" / "sweeps" / spec.name
    experiments = expand(spec)
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8")) or {}
    check_experiments(params, experiments, validate)
    head = _git(root, "rev-parse", "HEAD")
    if head.returncode != 0:
        raise SweepError(f"{root} has no git commit: DVC experiments start from one (git add -A && git commit)")
    baseline = head.stdout.strip()
    outcomes: dict[str, Outcome] = {}
    if not collect_only:
        names = [e.name for e in experiments]
        clash = sorted(existing_experiments(root) & set(names))
        if clash and not replace:
            raise SweepError(f"experiments {', '.join(clash)} exist already: rename the sweep, rerun with --replace, "
                             f"or --collect to only rebuild the table")
        if clash:
            subprocess.run([*_dvc(), "exp", "remove", *clash], cwd=root, check=True, capture_output=True)
        untracked = _untracked(root)
        copy_paths = list(spec.copy_paths) + (["dvc.lock"] if "dvc.lock" in untracked else [])
        skip = [*copy_paths, os.path.relpath(out.parent, root)]  # the sweep results folders
        others = [u for u in untracked if not any(u == p or u.startswith(p.rstrip("/") + "/") for p in skip)]
        if others:
            log.warning("untracked files are not part of the experiments (git add them, or name them in "
                        "copy_paths): %s", ", ".join(others[:10]) + (" ..." if len(others) > 10 else ""))
        log.info("sweep %s: %d experiments, %d at a time, from commit %s", spec.name, len(experiments), jobs,
                 baseline[:7])
        done = run_experiments(root, experiments, spec.targets, jobs, out / "logs", threads=spec.threads,
                               copy_paths=copy_paths)
        outcomes = {o.name: o for o in done}
    shown = show_experiments(root)
    rows = write_results(out, spec, experiments, shown, outcomes, baseline=baseline, jobs=jobs, command=command)
    return SweepResult(out, rows, list(outcomes.values()))


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Run a params sweep as DVC experiments, N at a time; one table at the end.")
    ap.add_argument("spec", help="sweep spec (YAML: name, grid / experiments, targets, jobs, ...)")
    ap.add_argument("--jobs", "-j", type=int, default=None, help="experiments at a time (default: the spec's jobs)")
    ap.add_argument("--root", default=str(ROOT), help="the DVC repository (default: this checkout)")
    ap.add_argument("--out", default=None, help="results folder (default: <root>/results/sweeps/<name>)")
    ap.add_argument("--replace", action="store_true", help="remove existing experiments of the same names first")
    ap.add_argument("--collect", action="store_true", help="run nothing; rebuild the table from the experiments")
    ap.add_argument("--no-validate", action="store_true", help="skip genvpt's params validation of each set")
    ap.add_argument("--dry-run", action="store_true", help="check every params set, print the commands, run nothing")
    args = ap.parse_args(argv)
    from genvpt.logs import setup_logging

    setup_logging()
    validate = None
    if not args.no_validate:
        from genvpt.config import validate_params

        validate = validate_params
    try:
        spec = load_spec(args.spec)
        if args.dry_run:
            root = Path(args.root)
            experiments = expand(spec)
            check_experiments(yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8")) or {}, experiments,
                              validate)
            for e in experiments:
                print(" ".join(experiment_command(e, spec.targets, spec.copy_paths)[2:]))  # from `dvc exp run`
            return 0
        result = run_sweep(args.root, spec, jobs=args.jobs, out_dir=args.out, replace=args.replace,
                           collect_only=args.collect, validate=validate,
                           command="python -m flows.sweep " + " ".join(argv if argv is not None else sys.argv[1:]))
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    log.info("sweep %s: table in %s (table.csv, report.md, sweep.json); `dvc exp show` lists the experiments",
             spec.name, result.out_dir)
    if result.failed:
        log.error("not finished: %s", ", ".join(result.failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
