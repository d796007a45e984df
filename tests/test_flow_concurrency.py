"""Issue #18 section 1: independent stages run at the same time in one checkout (flows/dvc_stages.py): their
commands overlap, the outputs and dvc.lock equal a serial `dvc repro`'s, `dvc status` is clean afterwards, a second
run does no work, and a failing stage stops only what depends on it."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from _same_outputs import differences
from _tiny_pipeline import tiny_params
from conftest import make_repo_copy

# two stages that depend on the same upstream (prepare_source) and not on each other
STAGES = ["pretrain_tokenizer@vqgan", "pretrain_tokenizer@msvq"]
# two stages with no dependency between them (the quickest pair of the pipeline)
PREPARE = ["prepare_source", "prepare"]
OUTS = ["data/prepared/source", "data/prepared/target"]


def _lock_entries(repo, names):
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]

    def entry(name):
        # foreach instances are keyed "stage@item"; deps and params exactly, outs by path (their content is compared
        # with the measured fields such as seconds masked, so their hashes may differ between any two runs)
        e = lock[name]
        return (e["cmd"], sorted((x["path"], x.get("md5"), x.get("size")) for x in e.get("deps", [])),
                e.get("params"), sorted(x["path"] for x in e.get("outs", [])))

    return {n: entry(n) for n in names}


def test_concurrent_flow_equals_a_serial_dvc_repro(tmp_path, prefect_harness, venv_path_env):
    from flows.dvc_stages import dvc_repo
    from flows.pipeline import pipeline

    text = yaml.safe_dump(tiny_params(), sort_keys=False)
    serial = make_repo_copy(tmp_path / "serial", text)
    r = subprocess.run([sys.executable, "-m", "dvc", "repro", *PREPARE], cwd=serial, env=venv_path_env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

    conc = make_repo_copy(tmp_path / "concurrent", text)
    results = pipeline(stages=PREPARE, root=str(conc), max_parallel=2)
    by = {x["stage"]: x for x in results}
    assert set(by) == set(PREPARE) and all(x["ran"] for x in results)
    a, b = by[PREPARE[0]], by[PREPARE[1]]
    assert a["started"] < b["finished"] and b["started"] < a["finished"], "the two commands did not overlap"

    for out in OUTS:
        assert differences(serial / out, conc / out) == [], out
    assert _lock_entries(conc, PREPARE) == _lock_entries(serial, PREPARE)
    with dvc_repo(conc) as repo:
        assert repo.status(targets=PREPARE) == {}

    again = pipeline(stages=PREPARE, root=str(conc), max_parallel=2)
    assert [x["ran"] for x in again] == [False, False]


def test_a_failing_stage_stops_what_depends_on_it_only(tmp_path, prefect_harness):
    from flows.dvc_stages import dvc_repo
    from flows.pipeline import pipeline

    p = tiny_params()
    p["prefect"]["retries"] = 0
    p["tokenizer"]["msvq"]["checkpoint"] = "bad/msvq.pth"  # imported instead of trained: a file that is no checkpoint
    repo = make_repo_copy(tmp_path / "repo", yaml.safe_dump(p, sort_keys=False))
    (repo / "bad").mkdir()
    (repo / "bad/msvq.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(Exception, match="pretrain_tokenizer@msvq"):
        pipeline(stages=[*STAGES, "tokenize@msvq-source"], root=str(repo), max_parallel=2)
    assert (repo / "data/tokenizers/vqgan/model.pt").is_file()  # the independent stage finished
    assert not (repo / "data/tokens/msvq/source").exists()        # the dependent one never ran
    with dvc_repo(repo) as r:
        stale = set(r.status(targets=["prepare_source", *STAGES]))
    assert stale == {"pretrain_tokenizer@msvq"}


def test_the_served_deployment_registers_with_its_schedule(prefect_harness):
    """`python -m flows.pipeline --serve --cron ...` serves this deployment: registered on a real local server, it
    carries the cron schedule and the parameters."""
    import asyncio

    from prefect.client.orchestration import get_client

    from flows.pipeline import nightly_deployment

    dep_id = nightly_deployment("15 3 * * 1", stages=["prepare"], max_parallel=2).apply()

    async def read():
        async with get_client() as client:
            return await client.read_deployment(dep_id)

    dep = asyncio.run(read())
    assert dep.name == "genvpt-nightly"
    assert dep.parameters == {"stages": ["prepare"], "max_parallel": 2}
    crons = [s.schedule.cron for s in dep.schedules]
    assert crons == ["15 3 * * 1"] and all(s.active for s in dep.schedules)
