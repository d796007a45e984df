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

Where the concurrent stages run (docs/architecture.md, "GPU workers" and "Dask"):

* ``prefect.task_runner``: ``thread`` runs the stage tasks in threads of this process; ``dask`` runs them on a Dask
  cluster through prefect-dask's ``DaskTaskRunner`` (a ``LocalCluster`` of ``max_parallel`` one-thread workers, or
  the scheduler at ``prefect.dask_address``, whose workers must see this checkout at the same path);
* ``prefect.training_pool``: when set, the stages that ``prefect.training_stages`` names (:func:`stage_routes`) run
  as flow runs of the deployment ``genvpt-train-stage/<pool>`` on that work pool's GPU workers (flows/workers.py,
  one worker per GPU, a concurrency limit per device); the other stages run here. Either way DVC decides
  staleness and records results through :func:`flows.dvc_stages.run_if_stale`.

    python -m flows.pipeline                      # whole pipeline
    python -m flows.pipeline --stages prepare     # a stage and everything upstream of it
    python -m flows.pipeline --max-parallel 2     # independent stages two at a time (params prefect.max_parallel)
    python -m flows.pipeline --training-pool gpu  # training stages on the GPU workers (params prefect.training_pool)
    python -m flows.pipeline --serve --cron "0 3 * * *" --timezone Europe/Berlin   # scheduled; needs a server
"""
from __future__ import annotations

import argparse
import contextlib
import logging
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
log = logging.getLogger(__name__)


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
def run_stage(name: str, root: str, remote=None) -> dict:
    """Reproduce one DVC stage (only if DVC finds it stale). With ``remote`` (params ``remote``, given only when it
    resolves to a DVC remote: its name, or DVC's default remote) the stage goes through :func:`flows.dvc_stages.run_if_stale`, which pulls its outputs before
    deciding and pushes them after."""
    from dvc.repo import Repo

    from flows.dvc_stages import run_if_stale

    logger = get_run_logger()
    _ensure_python_on_path()
    if remote is not None:  # the flow resolved a DVC remote (params remote) once for every stage
        r = run_if_stale(root, name, remote=remote)
        logger.info("stage %s: %s (%.1fs; remote)", name,
                    "ran" if r["ran"] else ("pulled" if r["pulled"] else "up to date, skipped"), r["seconds"])
        return r
    t0 = time.perf_counter()
    with contextlib.chdir(root), Repo(root) as repo:  # tasks run one at a time, so chdir is safe here
        ran = repo.reproduce(name, single_item=True)
    seconds = time.perf_counter() - t0
    did_work = bool(ran)
    logger.info("stage %s: %s (%.1fs)", name, "ran" if did_work else "up to date, skipped", seconds)
    return {"stage": name, "ran": did_work, "seconds": round(seconds, 3)}


@task(name="dvc-stage-concurrent", cache_policy=NO_CACHE, task_run_name="{name}")
def run_stage_concurrent(name: str, root: str, threads: Optional[int], slots: threading.Semaphore,
                         remote=None) -> dict:
    """Run one DVC stage if stale, beside others (flows/dvc_stages.py; ``remote``: params ``remote``, pulled from
    before deciding and pushed to after); its upstream stages are recorded already."""
    from flows.dvc_stages import run_if_stale

    logger = get_run_logger()
    r = run_if_stale(root, name, threads=threads, slots=slots, remote=remote)
    logger.info("stage %s: %s (%.1fs)", name, "ran" if r["ran"] else "up to date, skipped", r["seconds"])
    fault_point(f"flow:after:{name}")  # crash-recovery tests stop the flow after a stage here
    return r


def stage_routes(order: list[str], training_stages: list[str], training_pool: Optional[str],
                 known: Optional[set[str]] = None) -> dict[str, Optional[str]]:
    """Where each stage of ``order`` runs: the work pool ``training_pool`` for the stages ``training_stages`` names
    (a dvc.yaml stage name covers all its foreach instances; ``adapt@vpt-ar`` names one), None (here) for the rest
    and for every stage when ``training_pool`` is None. ``known``: dvc.yaml's stage names, to reject an entry that
    names none (the error names the params key; checked only with a pool, when the list decides anything)."""
    if training_pool is None:
        return {name: None for name in order}
    wanted = set(training_stages)
    if known is not None:
        unknown = sorted(t for t in wanted if t.split("@", 1)[0] not in known)
        if unknown:
            raise ValueError(f"params prefect.training_stages: {unknown} name no stage of dvc.yaml; "
                             f"stages: {', '.join(sorted(known))}")
    return {name: training_pool if (name in wanted or name.split("@", 1)[0] in wanted) else None for name in order}


def dvc_yaml_stage_names(root: str | os.PathLike) -> set[str]:
    """The stage names (foreach / matrix base names) of ``root``/dvc.yaml."""
    import yaml

    data = yaml.safe_load((Path(root) / "dvc.yaml").read_text(encoding="utf-8")) or {}
    return set(data.get("stages") or {})


@flow(name="genvpt-pipeline", log_prints=False)
def pipeline(stages: Optional[list[str]] = None, root: str = str(ROOT), max_parallel: Optional[int] = None,
             training_pool: Optional[str] = None) -> list[dict]:
    """Run the dvc.yaml pipeline (or ``stages`` and their upstream) with retries; ``max_parallel`` (default
    ``params.prefect.max_parallel``) independent stages at a time; training stages on ``training_pool``'s GPU
    workers (default ``params.prefect.training_pool``; null: here)."""
    from genvpt.config import load_params

    logger = get_run_logger()
    root = str(Path(root).resolve())  # GPU workers and Dask workers run in other directories
    params = load_params(Path(root) / "params.yaml")  # validated before anything runs
    order, upstream = stage_plan(root, stages)
    parallel = int(max_parallel or params.prefect.max_parallel)
    pool = training_pool or params.prefect.training_pool
    routes = stage_routes(order, params.prefect.training_stages, pool,
                          known=dvc_yaml_stage_names(root) if pool else None)
    logger.info("stages in order: %s (at most %d at a time here)", ", ".join(order), parallel)
    if pool:
        from flows.workers import ensure_train_deployment

        ensure_train_deployment(pool)
        logger.info("on work pool %s: %s", pool, ", ".join(n for n in order if routes[n]) or "none")
    progress = create_progress_artifact(progress=0.0, key="genvpt-pipeline-progress", description="stages done (%)")
    if parallel > 1 or pool or params.prefect.task_runner != "thread":
        results = _run_concurrently(order, upstream, root, parallel, params.prefect, progress, routes,
                                    remote=params.remote)
    else:
        from flows.dvc_stages import dvc_repo, remote_name

        with dvc_repo(root) as repo:  # which DVC remote params name (or none): one read for every stage
            shared = params.remote if remote_name(repo, params.remote) else None
        runner = run_stage.with_options(
            retries=params.prefect.retries, retry_delay_seconds=params.prefect.retry_delay_seconds
        )
        results = []
        for i, name in enumerate(order):
            results.append(runner(name, root, shared))
            fault_point(f"flow:after:{name}")  # crash-recovery tests stop the flow between stages here
            update_progress_artifact(progress, progress=100.0 * (i + 1) / len(order))
    _publish_report(root, results, logger)
    ran = [r["stage"] for r in results if r["ran"]]
    logger.info("done: %d stage(s) ran (%s), %d up to date", len(ran), ", ".join(ran) or "none", len(results) - len(ran))
    return results


@task(name="dvc-stage-on-pool", cache_policy=NO_CACHE, task_run_name="{name}")
def run_stage_on_pool(name: str, root: str, pool: str, threads: Optional[int]) -> dict:
    """Run one DVC stage if stale as a flow run on the GPU work pool ``pool`` (flows/workers.py) and wait for it."""
    from flows.workers import run_on_pool

    logger = get_run_logger()
    r = run_on_pool(pool, name, root, threads=threads)
    logger.info("stage %s: %s (%.1fs) on %s", name, "ran" if r["ran"] else "up to date, skipped", r["seconds"],
                r.get("device"))
    fault_point(f"flow:after:{name}")
    return r


def make_task_runner(prefect_params, parallel: int, n_tasks: int):
    """The Prefect task runner of the concurrent path: ``prefect.task_runner`` ``thread`` -> a thread pool with a
    thread per stage task (commands are bounded by ``parallel`` slots, not by threads); ``dask`` -> prefect-dask's
    ``DaskTaskRunner`` on the cluster at ``prefect.dask_address``, or on a ``LocalCluster`` of ``parallel``
    one-thread workers (processes or threads: ``prefect.dask_processes``)."""
    if prefect_params.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if prefect_params.dask_address:
            return DaskTaskRunner(address=prefect_params.dask_address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": parallel, "threads_per_worker": 1,
                                             "processes": prefect_params.dask_processes, "dashboard_address": None})
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=max(1, n_tasks))


def _run_concurrently(order: list[str], upstream: dict[str, set[str]], root: str, parallel: int, prefect_params,
                      progress, routes: Optional[dict[str, Optional[str]]] = None, remote=None) -> list[dict]:
    """Submit every stage at once, each waiting for the stages it depends on; at most ``parallel`` commands run here
    (thread runner: a semaphore; Dask: the cluster's worker threads), stages routed to a work pool run there."""
    from prefect.futures import wait

    routes = routes or {}
    opts = dict(retries=prefect_params.retries, retry_delay_seconds=prefect_params.retry_delay_seconds)
    local, on_pool = run_stage_concurrent.with_options(**opts), run_stage_on_pool.with_options(**opts)
    threads = prefect_params.threads_per_stage
    task_runner = make_task_runner(prefect_params, parallel, len(order))
    # a semaphore cannot travel to Dask workers: there the cluster's one-thread workers bound the commands
    slots = threading.Semaphore(parallel) if prefect_params.task_runner == "thread" else None
    with task_runner:
        futures: dict = {}
        for name in order:  # dependency order: every upstream future exists already
            after = [futures[u] for u in sorted(upstream[name])]
            if routes.get(name):
                params = {"name": name, "root": root, "pool": routes[name], "threads": threads}
                futures[name] = task_runner.submit(on_pool, params, wait_for=after)
            else:
                params = {"name": name, "root": root, "threads": threads, "slots": slots, "remote": remote}
                futures[name] = task_runner.submit(local, params, wait_for=after)
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


METRICS_FILE = "scores/metrics.parquet"  # the score stage's table, which the report artifact shows


def stages_writing(root: str | os.PathLike, path: str) -> set[str]:
    """Names of the dvc.yaml stages with an output at ``path`` (relative to ``root``) or a directory above it."""
    from dvc.repo import Repo

    target = (Path(root) / path).resolve()
    with contextlib.chdir(root), Repo(str(root)) as repo:
        return {s.name for s in repo.index.stages for o in s.outs
                if target == Path(o.fs_path).resolve() or Path(o.fs_path).resolve() in target.parents}


def _publish_report(root: str, results: list[dict], logger) -> bool:
    """Publish the metrics table as Prefect artifacts when this run produced it (a stage writing scores/metrics.parquet
    ran). A table already in the checkout, committed by an earlier run, is not this run's result: it is not
    published. -> whether it was published."""
    if not (Path(root) / METRICS_FILE).is_file():
        return False
    ran = {r["stage"] for r in results if r["ran"]}
    producers = stages_writing(root, METRICS_FILE)
    if not producers & ran:
        logger.info("%s not produced by this run (%s did not run): no metrics artifact published; the table in the "
                    "checkout is an earlier run's", METRICS_FILE, ", ".join(sorted(producers)) or "no stage writes it")
        return False
    from genvpt.report import load_table_rows, publish_report_artifact

    publish_report_artifact(load_table_rows(Path(root) / "scores"))
    logger.info("published the metrics table this run produced as Prefect artifacts (genvpt-metrics, genvpt-report)")
    return True


def nightly_deployment(cron: str, *, timezone: str = "UTC", stages: Optional[list[str]] = None,
                       max_parallel: Optional[int] = None):
    """The scheduled deployment ``--serve`` serves: this flow, named ``genvpt-nightly``, on ``cron`` read in the IANA
    time zone ``timezone`` (default UTC), with the given stages and parallelism as its parameters (``.apply()``
    registers it with the Prefect API)."""
    from prefect.schedules import Cron

    return pipeline.to_deployment(name="genvpt-nightly", schedule=Cron(cron, timezone=timezone),
                                  parameters={"stages": stages, "max_parallel": max_parallel})


def require_api_server() -> str:
    """The URL of the Prefect server ``--serve`` registers with, or SystemExit saying what to do: without
    ``PREFECT_API_URL`` Prefect would use a temporary (ephemeral) server that runs no schedules."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise SystemExit(
            "--serve needs a running Prefect server: without PREFECT_API_URL the flow would register its schedule "
            "on a temporary local server that never runs it. Start one with `prefect server start` (its UI "
            "and API: http://127.0.0.1:4200), then point the flow at it: "
            "`prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api` (or export PREFECT_API_URL) and rerun.")
    with get_client(sync_client=True) as client:
        err = client.api_healthcheck()
    if err is not None:
        raise SystemExit(f"--serve: the Prefect server at PREFECT_API_URL={url} does not answer ({err}); start it "
                         f"with `prefect server start` or fix PREFECT_API_URL")
    return url


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description="Run the genvpt DVC pipeline as a Prefect flow.")
    ap.add_argument("--stages", nargs="*", default=None, help="stages to run (with their upstream); default all")
    ap.add_argument("--max-parallel", type=int, default=None,
                    help="independent stages run at once (default: params prefect.max_parallel)")
    ap.add_argument("--training-pool", default=None,
                    help="work pool of the GPU workers for the training stages (default: params prefect.training_pool)")
    ap.add_argument("--serve", action="store_true",
                    help="serve the flow as a scheduled deployment (needs PREFECT_API_URL pointing at a server)")
    ap.add_argument("--cron", default="0 3 * * *", help="schedule for --serve")
    ap.add_argument("--timezone", default="UTC", help="IANA time zone the --cron schedule is read in (default UTC)")
    args = ap.parse_args(argv)
    _ensure_python_on_path()
    if args.serve:
        from prefect import serve

        url = require_api_server()
        log.info("serving genvpt-nightly on %s (%s) with the Prefect server at %s", args.cron, args.timezone, url)
        serve(nightly_deployment(args.cron, timezone=args.timezone, stages=args.stages,
                                 max_parallel=args.max_parallel))
    else:
        pipeline(stages=args.stages, max_parallel=args.max_parallel, training_pool=args.training_pool)


if __name__ == "__main__":
    main()
