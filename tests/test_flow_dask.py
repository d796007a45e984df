"""Issue #18 section 6: the pipeline flow with Dask as its task runner (params prefect.task_runner: dask; prefect-dask's
DaskTaskRunner on a LocalCluster here, prefect.dask_address for a real cluster). On a tiny DVC repository, the two
independent stages run at the same time on the cluster, outputs and dvc.lock equal a serial `dvc repro`'s,
`dvc status` is clean and a second run does no work."""
from __future__ import annotations

import pytest

from _orch_repo import dvc_repro, dvc_status, lock, make_tiny_dvc_repo, outputs, step_cmd, timings

STAGES = {
    "prep": {"cmd": step_cmd("prep", 0, "data/prep.txt", []), "deps": ["step.py"], "outs": ["data/prep.txt"]},
    "left": {"cmd": step_cmd("left", 4, "data/left.txt", ["data/prep.txt"]),
             "deps": ["step.py", "data/prep.txt"], "outs": ["data/left.txt"]},
    "right": {"cmd": step_cmd("right", 4, "data/right.txt", ["data/prep.txt"]),
              "deps": ["step.py", "data/prep.txt"], "outs": ["data/right.txt"]},
    "join": {"cmd": step_cmd("join", 0, "data/join.txt", ["data/left.txt", "data/right.txt"]),
             "deps": ["step.py", "data/left.txt", "data/right.txt"], "outs": ["data/join.txt"]},
}


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "processes"])
def test_dask_runner_equals_a_serial_dvc_repro(tmp_path, prefect_harness, processes):
    from flows.pipeline import pipeline

    serial = make_tiny_dvc_repo(tmp_path / "serial", STAGES)
    dvc_repro(serial)

    prefect = {"retries": 0, "max_parallel": 2, "task_runner": "dask", "dask_processes": processes}
    repo = make_tiny_dvc_repo(tmp_path / "dask", STAGES, prefect)
    results = pipeline(root=str(repo))
    assert [r["stage"] for r in results] == ["prep", "left", "right", "join"] and all(r["ran"] for r in results)
    t = timings(repo)
    # the commands sleep 4 s: the second starts while the first runs unless one waited for the other (DVC decides
    # and records one stage at a time, which takes well under 4 s even on a busy machine)
    assert t["left"]["start"] < t["right"]["end"] and t["right"]["start"] < t["left"]["end"], \
        f"the independent stages did not run at the same time on the cluster: {t['left']}, {t['right']}"
    assert t["join"]["start"] >= max(t["left"]["end"], t["right"]["end"])

    assert outputs(repo) == outputs(serial)
    assert lock(repo) == lock(serial)
    assert dvc_status(repo) == {}
    again = pipeline(root=str(repo))
    assert [r["ran"] for r in again] == [False] * 4
