"""Issue #18 section 7 (flow side): `--serve` without a Prefect server fails fast and says what to do (instead of
registering a schedule on the ephemeral server that never runs it); the schedule's time zone is what --timezone
says; a flow run publishes the metrics table only when it produced it (not the committed reference scores/)."""
from __future__ import annotations

import logging

import pytest

from _orch_repo import make_tiny_dvc_repo, step_cmd


@pytest.fixture
def no_serve(monkeypatch):
    import prefect

    def fail(*a, **k):
        raise AssertionError("prefect.serve was called")

    monkeypatch.setattr(prefect, "serve", fail)


def test_serve_without_prefect_api_url_fails_fast(no_serve):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.pipeline import main

    with temporary_settings(restore_defaults={PREFECT_API_URL}), pytest.raises(SystemExit) as err:
        main(["--serve", "--cron", "0 3 * * *"])
    msg = str(err.value)
    assert "PREFECT_API_URL" in msg and "prefect server start" in msg and "prefect config set" in msg


def test_serve_with_an_unreachable_server_fails_fast(no_serve):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.pipeline import main

    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}), pytest.raises(SystemExit) as err:
        main(["--serve"])
    assert "does not answer" in str(err.value) and "127.0.0.1:9" in str(err.value)


def test_the_schedule_is_read_in_the_given_time_zone(prefect_harness):
    import asyncio

    from prefect.client.orchestration import get_client

    from flows.pipeline import nightly_deployment

    async def schedules(dep_id):
        async with get_client() as client:
            return (await client.read_deployment(dep_id)).schedules

    berlin = asyncio.run(schedules(nightly_deployment("0 3 * * *", timezone="Europe/Berlin").apply()))
    assert [(s.schedule.cron, s.schedule.timezone) for s in berlin] == [("0 3 * * *", "Europe/Berlin")]
    utc = asyncio.run(schedules(nightly_deployment("0 3 * * *").apply()))
    assert [s.schedule.timezone for s in utc] == ["UTC"]


STAGES = {
    "other": {"cmd": step_cmd("other", 0, "data/other.txt", []), "deps": ["step.py"], "outs": ["data/other.txt"]},
    "score": {"cmd": step_cmd("score", 0, "scores/metrics.parquet", []), "deps": ["step.py"],
              "outs": ["scores/metrics.parquet"]},
}


def test_only_a_metrics_table_this_run_produced_is_published(tmp_path, monkeypatch):
    import genvpt.report

    from flows.pipeline import _publish_report, stages_writing

    repo = make_tiny_dvc_repo(tmp_path, STAGES)
    published = []
    monkeypatch.setattr(genvpt.report, "load_table_rows", lambda d: [{"row": str(d)}])
    monkeypatch.setattr(genvpt.report, "publish_report_artifact", lambda rows: published.append(rows))
    log = logging.getLogger("test")

    assert not _publish_report(str(repo), [{"stage": "score", "ran": True}], log)  # no table: nothing to publish
    (repo / "scores").mkdir()
    (repo / "scores/metrics.parquet").write_text("the committed reference")
    assert stages_writing(repo, "scores/metrics.parquet") == {"score"}

    assert not _publish_report(str(repo), [{"stage": "score", "ran": False}, {"stage": "other", "ran": True}], log)
    assert not _publish_report(str(repo), [], log)
    assert published == []
    assert _publish_report(str(repo), [{"stage": "score", "ran": True}], log)
    assert published == [[{"row": str(repo / "scores")}]]
