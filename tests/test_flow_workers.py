"""Issue #18 section 2: training stages on a Prefect process work pool, one worker per GPU (flows/workers.py).

For real, on this machine: the session's local Prefect server (SQLite, conftest.prefect_harness), a process work
pool, two `prefect worker start` processes with fake device ids (CUDA_VISIBLE_DEVICES 7 and 9), and the pipeline flow
on a tiny DVC repository whose four training stages (`train@a..d`, one dvc.yaml foreach) go to the pool while `prep`
and `collect` run in the flow's process. Asserted: the training stages were spread over both workers, no two ran on
one device at the same time, each ran with its worker's device, and outputs, dvc.lock and `dvc status` equal a
serial `dvc repro`'s."""
from __future__ import annotations

import time

import pytest

from _orch_repo import dvc_repro, dvc_status, lock, make_tiny_dvc_repo, outputs, step_cmd, timings

ITEMS = ["a", "b", "c", "d"]
STAGES = {
    "prep": {"cmd": step_cmd("prep", 0, "data/prep.txt", []), "deps": ["step.py"], "outs": ["data/prep.txt"]},
    "train": {"foreach": ITEMS, "do": {
        "cmd": step_cmd("train-${item}", 1.5, "data/train/${item}.txt", ["data/prep.txt"]),
        "deps": ["step.py", "data/prep.txt"], "outs": ["data/train/${item}.txt"]}},
    "collect": {"cmd": step_cmd("collect", 0, "data/collect.txt", [f"data/train/{i}.txt" for i in ITEMS]),
                "deps": ["step.py", *[f"data/train/{i}.txt" for i in ITEMS]], "outs": ["data/collect.txt"]},
}
POOL = "gpu-test"
GPUS = ["7", "9"]
HOST = "testhost"


def _online_workers(pool: str) -> list[str]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return [w.name for w in client.read_workers_for_work_pool(pool) if str(w.status).upper().endswith("ONLINE")]


@pytest.fixture
def gpu_workers(prefect_harness, tmp_path):
    """Two real `prefect worker start` processes on the pool POOL with fake GPU ids, polling every second."""
    import os

    from prefect.settings import PREFECT_API_URL

    from flows.workers import start_workers, stop_workers

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_WORKER_QUERY_SECONDS": "1",
           "PREFECT_WORKER_PREFETCH_SECONDS": "2"}
    procs = start_workers(POOL, GPUS, host=HOST, env=env, log_dir=tmp_path / "worker-logs")
    try:
        deadline = time.monotonic() + 90
        while len(_online_workers(POOL)) < len(GPUS):
            dead = [p.pid for p in procs if p.poll() is not None]
            assert not dead, f"worker(s) {dead} exited; logs in {tmp_path / 'worker-logs'}"
            assert time.monotonic() < deadline, f"workers not online after 90 s; logs in {tmp_path / 'worker-logs'}"
            time.sleep(0.5)
        yield procs
    finally:
        stop_workers(procs)


def test_the_pipeline_routes_training_stages_by_params():
    from flows.pipeline import stage_routes

    order = ["prep", "train@a", "train@b", "collect"]
    assert stage_routes(order, ["train"], None) == dict.fromkeys(order)
    assert stage_routes(order, ["train"], "gpu") == {"prep": None, "train@a": "gpu", "train@b": "gpu", "collect": None}
    assert stage_routes(order, ["train@b"], "gpu")["train@a"] is None
    with pytest.raises(ValueError, match=r"prefect.training_stages: \['tran'\] name no stage"):
        stage_routes(order, ["tran"], "gpu", known={"prep", "train", "collect"})


def test_training_stages_spread_over_one_worker_per_gpu(tmp_path, gpu_workers):
    from prefect.client.orchestration import get_client

    from flows.pipeline import pipeline
    from flows.workers import device_label, device_limit

    serial = make_tiny_dvc_repo(tmp_path / "serial", STAGES)
    dvc_repro(serial)
    prefect = {"retries": 0, "max_parallel": 2, "training_pool": POOL, "training_stages": ["train"]}
    repo = make_tiny_dvc_repo(tmp_path / "pool", STAGES, prefect)

    results = {r["stage"]: r for r in pipeline(root=str(repo))}
    assert set(results) == {"prep", "collect", *(f"train@{i}" for i in ITEMS)} and all(r["ran"] for r in results.values())
    labels = {g: device_label(g, HOST) for g in GPUS}
    for i in ITEMS:  # ran on the pool, on the device its worker pins
        r = results[f"train@{i}"]
        assert r["device"] == labels[r["cuda_visible_devices"]], r
    assert "device" not in results["prep"] and "device" not in results["collect"]  # ran in the flow's process

    t = timings(repo)
    train = [t[f"train-{i}"] for i in ITEMS]
    assert {x["cuda"] for x in train} == set(GPUS), f"not spread over both workers: {[x['cuda'] for x in train]}"
    assert all(x["device"] == labels[x["cuda"]] for x in train)
    for gpu in GPUS:  # one training at a time per device
        runs = sorted((x["start"], x["end"]) for x in train if x["cuda"] == gpu)
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(runs, runs[1:])), (gpu, runs)
    assert t["prep"]["cuda"] not in GPUS and t["collect"]["start"] >= max(x["end"] for x in train)

    assert outputs(repo) == outputs(serial)
    assert lock(repo) == lock(serial)
    assert dvc_status(repo) == {}
    again = pipeline(root=str(repo))  # nothing changed: every stage, on the pool or here, is up to date
    assert sorted(r["stage"] for r in again if r["ran"]) == []

    with get_client(sync_client=True) as client:  # the per-device limits exist, limit 1, no slot left taken
        for g in GPUS:
            gcl = client.read_global_concurrency_limit_by_name(device_limit(labels[g]))
            assert (gcl.limit, gcl.active_slots) == (1, 0)


PAIR = {n: {"cmd": step_cmd(n, 1.5, f"data/{n}.txt", []), "deps": ["step.py"], "outs": [f"data/{n}.txt"]}
        for n in ("one", "two")}


def test_the_device_limit_keeps_two_stages_off_one_device(tmp_path, prefect_harness, monkeypatch):
    """Two stage flows on one device (as two workers pointed at the same GPU would run them) take turns: the device's
    global concurrency limit, not the worker's own limit, keeps them apart. A device without a limit is an error."""
    import threading

    from flows.workers import device_label, ensure_device_limits, train_stage

    label = device_label("3", HOST)
    ensure_device_limits([label])
    monkeypatch.setenv("GENVPT_DEVICE", label)
    repo = make_tiny_dvc_repo(tmp_path, PAIR)
    out, errors = {}, []

    def run(name):
        try:
            out[name] = train_stage(stage=name, root=str(repo))
        except Exception as e:  # noqa: BLE001 - reported by the assert below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(n,)) for n in PAIR]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and all(out[n]["ran"] and out[n]["device"] == label for n in PAIR), (errors, out)
    a, b = sorted((r["start"], r["end"]) for r in timings(repo).values())
    assert a[1] <= b[0], f"two stages ran on {label} at the same time: {a}, {b}"

    monkeypatch.setenv("GENVPT_DEVICE", device_label("99", HOST))  # no limit for this device
    (repo / "data/one.txt").unlink()
    with pytest.raises(Exception, match="genvpt-device-testhost-gpu99"):
        train_stage(stage="one", root=str(repo))


@pytest.mark.parametrize("block, key, allowed", [
    ({"task_runner": "ray"}, "prefect.task_runner", "'thread' or 'dask'"),
    ({"training_pool": "gpu pool"}, "prefect.training_pool", "work-pool name"),
    ({"dask_address": "host:8786"}, "prefect.dask_address", "tcp://host:8786"),
    ({"training_stages": ["adapt vpt"]}, "prefect.training_stages", "dvc.yaml stage names"),
    ({"dask_processes": "some"}, "prefect.dask_processes", "boolean"),
    ({"gpus": 2}, "prefect.gpus", "training_pool"),
])
def test_prefect_params_errors_name_the_key_and_what_is_allowed(block, key, allowed):
    from genvpt.config import ConfigError, validate_params

    with pytest.raises(ConfigError) as err:
        validate_params({"prefect": block})
    line = next(x for x in str(err.value).splitlines() if x.strip().startswith(key + ":"))
    assert allowed in line, line
