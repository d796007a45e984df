"""Wall time of a `dvc repro` with nothing to do (issue #16: under 10 s), and of `dvc status`, in this checkout.

The pipeline must be up to date first (`dvc status` clean; the benchmark refuses otherwise, naming the stale
stages): it then runs `dvc repro` (every stage of dvc.yaml, as `make run` does) ``--repeats`` times and `dvc status`
as often, and records each run's seconds, their median and the number of stages DVC checked (dvc.yaml's stages with
their foreach / matrix instances, which params.yaml's lists set: the adaptation configurations, the classification
configurations x datasets, the extra targets). Every run must leave `dvc status` clean (a no-op must do nothing).

    python benchmarks/noop_repro.py            # about a minute once the pipeline is built
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT, save_results

declared_overrides = {  # settings params.yaml does not give (benchmarks/_common.py; tests/test_benchmarks_params.py)
    "benchmark.repeats": "timed runs of each command (--repeats); the median is reported",
    "benchmark.commands": "dvc repro (every stage, nothing stale) and dvc status, in this checkout",
}


def settings(params, args=None) -> dict:
    """Every setting this benchmark runs with (see benchmarks/_common.py): the params lists that set how many stage
    instances dvc.yaml has, and the repeats."""
    return {
        "adaptation.configs": {k: dict(v) for k, v in params.adaptation.configs.items()},
        "classify.configs": {k: dict(v) for k, v in params.classify.configs.items()},
        "classify.datasets": dict(params.classify.datasets),
        "tokenizer.data": {k: dict(v) for k, v in params.tokenizer.data.items()},
        "benchmark.repeats": int(getattr(args, "repeats", 3) if args is not None else 3),
        "benchmark.commands": ["dvc repro", "dvc status"],
    }


def _dvc(*args: str) -> tuple[float, subprocess.CompletedProcess]:
    exe = Path(sys.executable).parent / "dvc"
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
           "DVC_NO_ANALYTICS": "1"}
    t0 = time.perf_counter()
    r = subprocess.run([str(exe), *args], cwd=ROOT, capture_output=True, text=True, env=env)
    return time.perf_counter() - t0, r


def _stale(status: subprocess.CompletedProcess) -> list[str]:
    return [ln.rstrip(":") for ln in status.stdout.splitlines() if ln and not ln[0].isspace() and ln.endswith(":")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from genvpt.config import load_params

    params = load_params(ROOT / "params.yaml")
    _, status = _dvc("status")
    if status.returncode != 0 or _stale(status):
        sys.exit(f"the pipeline is not up to date (stale: {_stale(status) or status.stderr[-500:]}); run dvc repro "
                 "first, then time the no-op")
    _, listing = _dvc("stage", "list")
    stages = [ln.split()[0] for ln in listing.stdout.splitlines() if ln.strip()]
    rows = {}
    for cmd in (("repro",), ("status",)):
        secs = []
        for _ in range(args.repeats):
            s, r = _dvc(*cmd)
            if r.returncode != 0:
                sys.exit(f"dvc {' '.join(cmd)} failed: {r.stderr[-2000:]}")
            secs.append(round(s, 2))
            _, after = _dvc("status")
            if _stale(after):
                sys.exit(f"dvc {' '.join(cmd)} left stale stages: {_stale(after)}")
        rows[f"dvc {' '.join(cmd)}"] = {"seconds_all": secs, "seconds_median": statistics.median(secs)}
        print(f"dvc {' '.join(cmd)}: median {statistics.median(secs):.2f} s of {secs}", flush=True)
    save_results("noop_repro", {"stages": len(stages), "rows": rows, "limit_seconds": 10.0,
                                "within_limit": rows["dvc repro"]["seconds_median"] < 10.0},
                 settings=settings(params, args), declared=declared_overrides, params=params)


if __name__ == "__main__":
    main()
