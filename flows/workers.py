"""GPU workers: training stages run on a Prefect process work pool, one worker per GPU.

Design (docs/architecture.md, "GPU workers"):

* a Prefect work pool of type ``process`` (default name ``gpu``) holds the training work. Each of its workers is
  started with ``--limit 1`` and ``CUDA_VISIBLE_DEVICES=<its GPU>`` in its environment, so every flow run it starts
  (and every stage command that run starts) sees only that device; ``GENVPT_DEVICE`` names the device
  (``<host>-gpu<id>``);
* one global concurrency limit per device, ``genvpt-device-<host>-gpu<id>`` with limit 1: the flow that runs a stage
  holds it for the whole stage, so two trainings never share a GPU even when two workers (or a hand-started one)
  point at the same device;
* the deployment ``genvpt-train-stage/<pool>`` of :func:`train_stage` runs one DVC stage through
  :func:`flows.dvc_stages.run_if_stale` in the given checkout: DVC decides staleness and records the result
  (``dvc commit``) under DVC's repository lock, the command runs with no lock held. Its entrypoint is the module
  path ``flows.workers.train_stage``, so a worker needs this package installed (``pip install -e .``), no copy of
  the flow code;
* flows/pipeline.py sends the stages that ``params.prefect.training_stages`` names there with
  :func:`run_on_pool` (``run_deployment``) when ``params.prefect.training_pool`` is set, and runs the rest itself.

    python -m flows.workers --gpus 0,1              # pool "gpu", its limits and deployment, one worker per GPU
    python -m flows.workers --pool gpu --gpus 0     # one GPU

Every worker and the flow talk to the server at ``PREFECT_API_URL``; a stage's checkout (``root``) must be the same
path on every machine whose workers run it (one machine, or a shared filesystem).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from prefect import flow, get_run_logger

log = logging.getLogger(__name__)

TRAIN_FLOW = "genvpt-train-stage"  # flow name; its deployment on pool P is "genvpt-train-stage/P"
LIMIT_PREFIX = "genvpt-device-"    # global concurrency limit of one device: genvpt-device-<device label>
DEFAULT_POOL = "gpu"


def device_label(gpu: str, host: Optional[str] = None) -> str:
    """``<host>-gpu<id>``: a device's name across machines (device ids repeat on every machine)."""
    host = re.sub(r"[^A-Za-z0-9-]+", "-", (host or socket.gethostname()).split(".")[0]).strip("-").lower() or "host"
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", str(gpu)).strip("-")
    return f"{host}-gpu{gpu}"


def device_limit(label: str) -> str:
    """The global concurrency limit (limit 1) that keeps two stages off the device ``label``."""
    return LIMIT_PREFIX + label


def deployment_name(pool: str) -> str:
    return f"{TRAIN_FLOW}/{pool}"


@flow(name=TRAIN_FLOW, log_prints=False, persist_result=False)
def train_stage(stage: str, root: str, threads: Optional[int] = None) -> dict:
    """Run DVC stage ``stage`` of the checkout ``root`` if DVC finds it stale, holding this worker's device limit.

    Runs on a GPU worker (``GENVPT_DEVICE`` and ``CUDA_VISIBLE_DEVICES`` come from the worker's environment). The
    result (:func:`flows.dvc_stages.run_if_stale`'s, plus where it ran) is also published as a table artifact of
    this flow run, which is how the pipeline flow reads it back (:func:`run_on_pool`)."""
    from prefect.artifacts import create_table_artifact
    from prefect.concurrency.sync import concurrency

    from flows.dvc_stages import run_if_stale

    logger = get_run_logger()
    label = os.environ.get("GENVPT_DEVICE")
    if not label:
        raise RuntimeError("GENVPT_DEVICE is not set: start GPU workers with `python -m flows.workers --gpus ...`, "
                           "which gives each worker its device (CUDA_VISIBLE_DEVICES) and device limit")
    limit = device_limit(label)
    with concurrency(limit, occupy=1, strict=True):  # strict: a missing limit is an error, not "no limit"
        logger.info("stage %s on %s (CUDA_VISIBLE_DEVICES=%s)", stage, label, os.environ.get("CUDA_VISIBLE_DEVICES"))
        r = run_if_stale(root, stage, threads=threads, remote=_remote_params(root))
    r = {**r, "device": label, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
         "host": socket.gethostname(), "pid": os.getpid()}
    logger.info("stage %s: %s (%.1fs) on %s", stage, "ran" if r["ran"] else "up to date, skipped", r["seconds"], label)
    create_table_artifact(table=[r], description=f"genvpt training stage {stage} on {label}")
    return r


def _remote_params(root: str):
    """params ``remote`` of the checkout ``root`` (the shared DVC remote the stage pulls from and pushes to)."""
    from genvpt.config import load_params

    return load_params(Path(root) / "params.yaml").remote


def run_on_pool(pool: str, stage: str, root: str, *, threads: Optional[int] = None,
                poll_seconds: float = 2.0) -> dict:
    """Run ``stage`` as a flow run of ``genvpt-train-stage/<pool>`` (from a flow or task: a subflow) and wait for it
    -> :func:`train_stage`'s result. Raises when the run does not complete."""
    from prefect.deployments import run_deployment

    fr = run_deployment(deployment_name(pool), parameters={"stage": stage, "root": str(root), "threads": threads},
                        flow_run_name=stage, timeout=None, poll_interval=poll_seconds)
    state = fr.state
    if state is None or not state.is_completed():
        raise RuntimeError(f"stage {stage!r} on work pool {pool!r}: flow run {fr.name} ended "
                           f"{state.name if state else 'without a state'}: {state.message if state else ''}")
    return _flow_run_result(fr.id)


def _flow_run_result(flow_run_id) -> dict:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]), type=ArtifactFilterType(any_=["table"])))
    if len(arts) != 1:
        raise RuntimeError(f"flow run {flow_run_id}: expected one result artifact, found {len(arts)}")
    data = arts[0].data
    rows = json.loads(data) if isinstance(data, str) else data
    return rows[0]


def ensure_train_deployment(pool: str):
    """Register (or update) the deployment ``genvpt-train-stage/<pool>``; the work pool must exist. -> its id."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.types.entrypoint import EntrypointType

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            raise RuntimeError(f"params prefect.training_pool names work pool {pool!r}, which the Prefect server at "
                               f"{_api_url()} does not have: start it and its workers with "
                               f"`python -m flows.workers --pool {pool} --gpus 0[,1,...]`") from None
    dep = train_stage.to_deployment(name=pool, entrypoint_type=EntrypointType.MODULE_PATH,
                                    description="one genvpt DVC training stage on a GPU worker (flows/workers.py)")
    return dep.apply(work_pool_name=pool)


def _api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or "(none: PREFECT_API_URL is not set)"


def ensure_pool(pool: str) -> None:
    """Create the process work pool ``pool`` unless it exists."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            wp = client.read_work_pool(pool)
        except ObjectNotFound:
            wp = None
        if wp is not None:
            if wp.type != "process":
                raise RuntimeError(f"work pool {pool!r} exists with type {wp.type!r}; GPU workers need a 'process' pool")
            return
        with contextlib.suppress(ObjectAlreadyExists):  # another process created it in between: same pool
            client.create_work_pool(WorkPoolCreate(name=pool, type="process",
                                                   base_job_template=ProcessWorker.get_default_base_job_template()))
            log.info("created process work pool %s", pool)


def ensure_device_limits(labels: Sequence[str]) -> list[str]:
    """A global concurrency limit of 1 per device (created, or set back to 1) -> their names."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    names = [device_limit(x) for x in labels]
    with get_client(sync_client=True) as client:
        for name in names:
            try:
                gcl = client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                with contextlib.suppress(ObjectAlreadyExists):  # created in between by another process: same limit
                    client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
                continue
            if gcl.limit != 1 or not gcl.active:
                client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=1, active=True))
    return names


def worker_env(gpu: str, label: str, base: Optional[dict] = None) -> dict[str, str]:
    """A worker's environment: ``CUDA_VISIBLE_DEVICES`` pins it (and what it starts) to ``gpu``, ``GENVPT_DEVICE``
    names the device; this interpreter first on PATH."""
    env = dict(os.environ if base is None else base)
    env.update(CUDA_VISIBLE_DEVICES=str(gpu), GENVPT_DEVICE=label)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def worker_command(pool: str, name: str) -> list[str]:
    return [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process", "--limit", "1",
            "--name", name]


def start_workers(pool: str, gpus: Sequence[str], *, host: Optional[str] = None, env: Optional[dict] = None,
                  log_dir: Optional[Path] = None) -> list[subprocess.Popen]:
    """Create the pool, the device limits and the training deployment, then start one ``prefect worker`` process
    per GPU id in ``gpus`` (``CUDA_VISIBLE_DEVICES`` = that id). Returns the worker processes (the caller stops
    them). ``log_dir``: each worker's output goes to ``<log_dir>/<worker name>.log`` (default: inherited)."""
    labels = [device_label(g, host) for g in gpus]
    if len(set(labels)) != len(labels):
        raise ValueError(f"GPU ids repeat: {list(gpus)}")
    ensure_pool(pool)
    ensure_device_limits(labels)
    ensure_train_deployment(pool)
    procs = []
    for gpu, label in zip(gpus, labels):
        name = f"{pool}-{label}"
        out = None
        if log_dir is not None:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            out = open(Path(log_dir) / f"{name}.log", "ab")
        procs.append(subprocess.Popen(worker_command(pool, name), env=worker_env(gpu, label, env), stdout=out,
                                      stderr=subprocess.STDOUT if out else None))
        if out is not None:
            out.close()  # the child holds its own descriptor
        log.info("worker %s: CUDA_VISIBLE_DEVICES=%s, limit %s (pid %d)", name, gpu, device_limit(label),
                 procs[-1].pid)
    return procs


def stop_workers(procs: Sequence[subprocess.Popen], timeout: float = 15.0) -> None:
    """Stop worker processes: SIGTERM (Prefect workers shut down on it), SIGKILL after ``timeout``."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _gpu_ids(text: str) -> list[str]:
    ids = [x.strip() for x in text.split(",") if x.strip()]
    if not ids:
        raise argparse.ArgumentTypeError("--gpus: a comma-separated list of device ids, e.g. 0,1")
    return ids


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description="Start the GPU work pool's workers: one Prefect process worker per GPU.")
    ap.add_argument("--gpus", type=_gpu_ids, required=True, help="device ids on this machine, e.g. 0,1")
    ap.add_argument("--pool", default=DEFAULT_POOL, help="work pool (params prefect.training_pool); default gpu")
    ap.add_argument("--host", default=None, help="this machine's name in device labels (default: its hostname)")
    args = ap.parse_args(argv)
    handler = logging.StreamHandler()  # this module's messages on stderr (Prefect configures its own loggers)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise SystemExit("flows.workers needs a Prefect server that the pipeline flow also uses: start one with "
                         "`prefect server start` and set PREFECT_API_URL (e.g. "
                         "`prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api`)")
    procs = start_workers(args.pool, args.gpus, host=args.host)
    stop = {"now": False}

    def _stop(signum, frame):
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stop["now"] and all(p.poll() is None for p in procs):
            time.sleep(1.0)
    finally:
        dead = [p.pid for p in procs if p.poll() is not None]
        stop_workers(procs)
    if dead and not stop["now"]:
        raise SystemExit(f"worker process(es) {dead} exited; stopped the others")


if __name__ == "__main__":
    main()
