"""Wall time of the adaptation stages run one at a time against two at a time by the Prefect flow (issue #18 s1).

Every VAR configuration of ``adaptation.configs`` (the prompt methods, their ablations and the VAR baselines) is an
``adapt@<config>`` stage; none depends on another. This benchmark builds a copy of the repository whose params are
the test suite's toy sizes (tests/_tiny_pipeline.py: 16 px shapes, one-layer backbones) with the VAR configurations
of params.yaml and ``--steps`` training steps, runs their upstream once (untimed), copies that workspace, and then
times in one copy ``python -m flows.pipeline --stages adapt@... --max-parallel 1`` (DVC's own reproduce, one stage
after another) and in the other ``--max-parallel 2`` with one thread per stage (``prefect.threads_per_stage: 1``).
Afterwards it checks that ``dvc status`` is clean in both and that the two copies' ``data/adapted`` agree (the
measured seconds masked), and writes both wall times with the machine's load.

    python benchmarks/flow_concurrency.py            # ~10 minutes on a 2-core machine
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from _common import ROOT, save_results

TESTS = ROOT / "tests"
DEFAULT_STEPS = 40
declared_overrides = {  # settings params.yaml does not give (benchmarks/_common.py; tests/test_benchmarks_params.py)
    "benchmark.sizes": "the test suite's toy pipeline (tests/_tiny_pipeline.py: 16 px, 3 classes, one-layer backbones, "
                       "2 seeds): the upstream stages run in seconds; only the adaptation stages are timed",
    "benchmark.steps": "adaptation.train.steps of every timed stage (--steps)",
    "benchmark.parallel": "the two runs compared: prefect.max_parallel 1 (serial) and 2, threads_per_stage 1",
}


def var_configs(params) -> list[str]:
    return [n for n in params.adaptation.configs if params.adaptation.config(n).backbone == "var"]


def settings(params, args=None) -> dict:
    """Every setting this benchmark runs with (see benchmarks/_common.py)."""
    names = var_configs(params)
    st = {f"adaptation.configs.{n}": dict(params.adaptation.configs[n]) for n in names}
    st["benchmark.sizes"] = "tests/_tiny_pipeline.py"
    st["benchmark.steps"] = int(getattr(args, "steps", DEFAULT_STEPS) if args is not None else DEFAULT_STEPS)
    st["benchmark.parallel"] = {"serial": 1, "concurrent": 2, "threads_per_stage": 1}
    return st


def _env() -> dict:
    # stage commands say `python`: this interpreter's bin dir first on PATH
    return {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
            "PYTHONWARNINGS": "ignore"}


def _run(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return dt


def _dvc_status(cwd: Path, targets: list[str]) -> str:
    r = subprocess.run([sys.executable, "-m", "dvc", "status", *targets], cwd=cwd, env=_env(), capture_output=True,
                       text=True)
    return (r.stdout + r.stderr).strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="adaptation.train.steps of each timed stage")
    ap.add_argument("--keep", default=None, help="keep the two workspaces under this folder")
    args = ap.parse_args()
    sys.path.insert(0, str(TESTS))
    from _same_outputs import differences
    from _tiny_pipeline import tiny_params
    from conftest import make_repo_copy

    from genvpt.config import load_params, validate_params
    from flows.pipeline import stage_plan

    params = load_params(ROOT / "params.yaml")
    names = var_configs(params)
    raw = tiny_params(configs=tuple(names))
    raw["adaptation"]["train"]["steps"] = args.steps
    raw["adaptation"]["train"]["checkpoint_every"] = max(1, args.steps // 2)
    raw["prefect"]["threads_per_stage"] = 1
    validate_params(raw, "<benchmark params>")
    targets = [f"adapt@{n}" for n in names]
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="genvpt-flow-bench-"))
    serial = make_repo_copy(base / "serial", yaml.safe_dump(raw, sort_keys=False))
    order, _ = stage_plan(serial, targets)
    upstream = [s for s in order if s not in targets]
    print(f"upstream (untimed): {len(upstream)} stages", flush=True)
    _run([sys.executable, "-m", "dvc", "repro", *upstream], serial)
    conc = base / "concurrent"
    shutil.copytree(serial, conc, symlinks=True)

    load_before = os.getloadavg()
    print(f"serial: {len(targets)} stages", flush=True)
    t_serial = _run([sys.executable, "-m", "flows.pipeline", "--stages", *targets, "--max-parallel", "1"], serial)
    print(f"serial {t_serial:.1f} s; concurrent", flush=True)
    t_conc = _run([sys.executable, "-m", "flows.pipeline", "--stages", *targets, "--max-parallel", "2"], conc)
    load_after = os.getloadavg()
    print(f"concurrent {t_conc:.1f} s", flush=True)
    status = {"serial": _dvc_status(serial, targets), "concurrent": _dvc_status(conc, targets)}
    diffs = differences(serial / "data" / "adapted", conc / "data" / "adapted")
    t_again = _run([sys.executable, "-m", "flows.pipeline", "--stages", *targets, "--max-parallel", "2"], conc)
    results = {
        "stages": targets, "n_stages": len(targets), "upstream_stages": upstream,
        "wall_s": {"serial": round(t_serial, 1), "concurrent_2": round(t_conc, 1)},
        "speedup": round(t_serial / t_conc, 3),
        "second_run_no_work_s": round(t_again, 1),
        "dvc_status": status,
        "dvc_status_clean": {k: ("up to date" in v.lower() or v == "") for k, v in status.items()},
        "outputs_equal": not diffs, "output_differences": diffs[:20],
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in load_after],
        "cpus": os.cpu_count(),
    }
    print(results, flush=True)
    save_results("flow_concurrency", results, settings=settings(params, args), declared=declared_overrides,
                 params=params)
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
