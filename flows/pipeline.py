"""The genvpt pipeline as a Prefect flow, derived from dvc.yaml so the two can never disagree.

Design (docs/architecture.md, "DVC and Prefect"): dvc.yaml is the single definition of the stages. This flow reads
the stage graph from DVC, orders it topologically (ties broken by dvc.yaml order), and runs each stage as a Prefect
task that calls DVC's own ``reproduce(stage, single_item=True)``. So

* the stage code that runs is exactly the ``cmd`` in dvc.yaml (the same ``python -m stages.<name>`` entry points);
* DVC decides whether a stage is stale (deps, params, outs), writes dvc.lock, and after a Prefect run
  ``dvc status`` shows every stage it ran as up to date;
* a second run with nothing changed does no stage work: every task reports "up to date";
* Prefect adds retries (count and delay from ``params.prefect``), logs, a progress artifact, scheduling (``--serve``)
  and the report table as an artifact. Prefect's own result cache is off (DVC owns caching).

With ``prefect.max_parallel`` 1 stages run one at a time through ``reproduce``. Above 1, stages that do not depend on
each other run at the same time (at most that many commands at once, ``prefect.threads_per_stage`` threads each):
DVC holds one repository lock, so parallel ``reproduce`` calls in one checkout would fail; instead DVC decides
staleness and records results (``dvc commit``) one stage at a time while the stage commands run side by side
(flows/dvc_stages.py). Outputs, dvc.lock and ``dvc status`` are those of a serial run with the same thread settings.

    python -m flows.pipeline                      # whole pipeline
    python -m flows.pipeline --stages prepare     # a stage and everything upstream of it
    python -m flows.pipeline --max-parallel 2     # independent stages two at a time (params prefect.max_parallel)
    python -m flows.pipeline --serve --cron "0 3 * * *"   # scheduled (needs `prefect server start`)
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
from pathlib import Path
from typing import Optional

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE

from genvpt.faults import fault_point

ROOT = Path(__file__).resolve().parents[1]


def _ensure_python_on_path() -> None:
    """Stage commands say ``python -m stages.x``: make that the interpreter running this flow."""
    bindir = str(Path(sys.executable).parent)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bindir:
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


def stage_order(root: str | os.PathLike = ROOT, targets: Optional[list[str]] = None) -> list[str]:
    """Names of dvc.yaml's stages (expanded foreach/matrix names included), dependencies first.

    With ``targets``, only those stages and everything upstream of them.
    """
    return stage_plan(root, targets)[0]


def stage_plan(root: str | os.PathLike = ROOT,
               targets: Optional[list[str]] = None) -> tuple[list[str], dict[str, set[str]]]:
    """:func:`stage_order`, and for each of those stages the ones among them whose outputs it reads."""
    import networkx as nx
    from dvc.repo import Repo

    with contextlib.chdir(root), Repo(str(root)) as repo:  # DVC resolves stage paths against the cwd
        graph = repo.index.graph  # edge: stage -> a stage it depends on
        stages = list(repo.index.stages)
        position = {s: i for i, s in enumerate(stages)}
        names = {s: s.name for s in stages}
        if targets:
            wanted = set()
            by_name = {n: s for s, n in names.items()}
            for t in targets:
                matches = [s for n, s in by_name.items() if n == t or n.startswith(t + "@")]
                if not matches:
                    raise ValueError(f"no stage named {t!r} in dvc.yaml; stages: {', '.join(sorted(by_name))}")
                for s in matches:
                    wanted |= {s} | nx.descendants(graph, s)
            graph = graph.subgraph(wanted)
        order = nx.lexicographical_topological_sort(graph.reverse(copy=True), key=lambda s: position[s])
        return [names[s] for s in order], {names[s]: {names[u] for u in graph.successors(s)} for s in graph.nodes}


@task(name="dvc-stage", cache_policy=NO_CACHE, task_run_name="{name}")
def run_stage(name: str, root: str) -> dict:
    """Reproduce one DVC stage (only if DVC finds it stale)."""
    from dvc.repo import Repo

    logger = get_run_logger()
    _ensure_python_on_path()
    t0 = time.perf_counter()
    with contextlib.chdir(root), Repo(root) as repo:  # tasks run one at a time, so chdir is safe here
        ran = repo.reproduce(name, single_item=True)
    seconds = time.perf_counter() - t0
    did_work = bool(ran)
    logger.info("stage %s: %s (%.1fs)", name, "ran" if did_work else "up to date, skipped", seconds)
    return {"stage": name, "ran": did_work, "seconds": round(seconds, 3)}


@task(name="dvc-stage-concurrent", cache_policy=NO_CACHE, task_run_name="{name}")
def run_stage_concurrent(name: str, root: str, threads: Optional[int], slots: threading.Semaphore) -> dict:
    """Run one DVC stage if stale, beside others (flows/dvc_stages.py); its upstream stages are recorded already."""
    from flows.dvc_stages import run_if_stale

    logger = get_run_logger()
    r = run_if_stale(root, name, threads=threads, slots=slots)
    logger.info("stage %s: %s (%.1fs)", name, "ran" if r["ran"] else "up to date, skipped", r["seconds"])
    fault_point(f"flow:after:{name}")  # crash-recovery tests stop the flow after a stage here
    return r


@flow(name="genvpt-pipeline", log_prints=False)
def pipeline(stages: Optional[list[str]] = None, root: str = str(ROOT), max_parallel: Optional[int] = None) -> list[dict]:
    """Run the dvc.yaml pipeline (or ``stages`` and their upstream) with retries; ``max_parallel`` (default
    ``params.prefect.max_parallel``) independent stages at a time."""
    from genvpt.config import load_params

    logger = get_run_logger()
    params = load_params(Path(root) / "params.yaml")  # validated before anything runs
    order, upstream = stage_plan(root, stages)
    parallel = int(max_parallel or params.prefect.max_parallel)
    logger.info("stages in order: %s (at most %d at a time)", ", ".join(order), parallel)
    progress = create_progress_artifact(progress=0.0, key="genvpt-pipeline-progress", description="stages done (%)")
    if parallel > 1:
        results = _run_concurrently(order, upstream, root, parallel, params.prefect, progress)
    else:
        runner = run_stage.with_options(
            retries=params.prefect.retries, retry_delay_seconds=params.prefect.retry_delay_seconds
        )
        results = []
        for i, name in enumerate(order):
            results.append(runner(name, root))
            fault_point(f"flow:after:{name}")  # crash-recovery tests stop the flow between stages here
            update_progress_artifact(progress, progress=100.0 * (i + 1) / len(order))
    _publish_report(root, logger)
    ran = [r["stage"] for r in results if r["ran"]]
    logger.info("done: %d stage(s) ran (%s), %d up to date", len(ran), ", ".join(ran) or "none", len(results) - len(ran))
    return results


def _run_concurrently(order: list[str], upstream: dict[str, set[str]], root: str, parallel: int, prefect_params,
                      progress) -> list[dict]:
    """Submit every stage at once, each waiting for the stages it depends on; at most ``parallel`` commands run."""
    from prefect.futures import wait

    slots = threading.Semaphore(parallel)
    runner = run_stage_concurrent.with_options(
        retries=prefect_params.retries, retry_delay_seconds=prefect_params.retry_delay_seconds
    )
    futures: dict = {}
    for name in order:  # dependency order: every upstream future exists already
        futures[name] = runner.submit(name, root, prefect_params.threads_per_stage, slots,
                                      wait_for=[futures[u] for u in sorted(upstream[name])])
    wait(list(futures.values()))
    results, failed = [], []
    for i, name in enumerate(order):
        state = futures[name].state
        if state.is_completed():
            results.append(futures[name].result())
        else:
            failed.append(f"{name} ({state.name})")
        update_progress_artifact(progress, progress=100.0 * (i + 1) / len(order))
    if failed:
        raise RuntimeError(f"stages did not complete: {', '.join(failed)} (a stage after a failed one does not run)")
    return results


def _publish_report(root: str, logger) -> None:
    """Publish the report table as a Prefect artifact when the score stage has produced one."""
    scores = Path(root) / "scores"
    if not (scores / "metrics.parquet").is_file():
        return
    from genvpt.report import load_table_rows, publish_report_artifact

    publish_report_artifact(load_table_rows(scores))
    logger.info("published the metrics table as Prefect artifacts (genvpt-metrics, genvpt-report)")


def nightly_deployment(cron: str, *, stages: Optional[list[str]] = None, max_parallel: Optional[int] = None):
    """The scheduled deployment ``--serve`` serves: this flow, named ``genvpt-nightly``, on ``cron``, with the
    given stages and parallelism as its parameters (``.apply()`` registers it with the Prefect API)."""
    return pipeline.to_deployment(name="genvpt-nightly", cron=cron,
                                  parameters={"stages": stages, "max_parallel": max_parallel})


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description="Run the genvpt DVC pipeline as a Prefect flow.")
    ap.add_argument("--stages", nargs="*", default=None, help="stages to run (with their upstream); default all")
    ap.add_argument("--max-parallel", type=int, default=None,
                    help="independent stages run at once (default: params prefect.max_parallel)")
    ap.add_argument("--serve", action="store_true", help="serve the flow as a scheduled deployment")
    ap.add_argument("--cron", default="0 3 * * *", help="schedule for --serve")
    args = ap.parse_args(argv)
    _ensure_python_on_path()
    if args.serve:
        from prefect import serve

        serve(nightly_deployment(args.cron, stages=args.stages, max_parallel=args.max_parallel))
    else:
        pipeline(stages=args.stages, max_parallel=args.max_parallel)


if __name__ == "__main__":
    main()
