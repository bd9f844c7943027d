"""Hundreds of deferred runs waited on together under Databricks' documented limits: correctness only.

The workspace (an emulator process) enforces the ``databricks`` preset of per-endpoint limits
(runs/get 100/s, runs/list 30/s, ...). One asyncio loop, as one triggerer, waits on every run
with default trigger settings; a third of the triggers are stopped halfway and rebuilt from
``serialize()``, as when a trigger moves to another triggerer. Judged from the emulator's
records: its runs' end times and the requests it answered. No timing is asserted; the wait
is bounded in time.

    AIRFLOW_DBX_LOAD=1 pytest tests/load/test_shared_waiting.py -q
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from airflow_dbx.hook import DatabricksHook
from airflow_dbx.trigger import DatabricksRunTrigger

from .test_triggers_under_rate_limit import TOKEN, EmulatorProcess

pytestmark = pytest.mark.load

RUNS = int(os.environ.get("LOAD_SHARED_RUNS", "400"))
FAILING_SHARE = 0.15
BUDGET = 240.0  # seconds for the whole wait: runs last at most 60 s
MOVED_SHARE = 3  # every third trigger is moved to "another triggerer" halfway


def submit_runs(count: int) -> dict[int, bool]:
    """``count`` runs of 3 to 60 s; a share fail. Run id -> whether it should succeed."""
    rng = random.Random(400)
    plans = [(round(rng.uniform(3, 60), 1), rng.random() >= FAILING_SHARE) for _ in range(count)]
    hook = DatabricksHook(retry_limit=5, retry_delay=0.1)

    def submit(index: int) -> tuple[int, bool]:
        duration, succeeds = plans[index]
        params: dict[str, Any] = {"emulator_duration": duration}
        if not succeeds:
            params.update(emulator_result="FAILED", emulator_error=f"SharedLoadError: run {index} failed on purpose")
        run_id = hook.submit_run({"run_name": f"shared {index}", "idempotency_token": f"shared-{index}", "tasks": [
            {"task_key": "only", "existing_cluster_id": "emulator-load",
             "notebook_task": {"notebook_path": "/load", "base_parameters": params}}]})
        return run_id, succeeds

    with ThreadPoolExecutor(8) as pool:
        return dict(pool.map(submit, range(count)))


async def wait_all(run_ids: list[int]) -> tuple[dict[int, list[Any]], dict[int, float], set[int]]:
    """Every run's events (a list: exactly one is expected), when the last one fired, and the
    runs whose trigger was moved before its event."""
    events: dict[int, list[Any]] = defaultdict(list)
    fired: dict[int, float] = {}

    async def follow(trigger: DatabricksRunTrigger) -> None:
        try:
            async for event in trigger.run():
                events[trigger.run_id].append(event.payload)
                fired[trigger.run_id] = time.time()
        except Exception as exc:
            events[trigger.run_id].append(exc)

    triggers = {run_id: DatabricksRunTrigger(run_id=run_id) for run_id in run_ids}
    tasks = {run_id: asyncio.ensure_future(follow(t)) for run_id, t in triggers.items()}
    await asyncio.sleep(15)
    moved = set()
    # A triggerer hands a third of its triggers over: their coroutines are cancelled (as on
    # shutdown) and rebuilt from serialize() elsewhere, here in the same loop.
    for run_id in run_ids[::MOVED_SHARE]:
        if not tasks[run_id].done():
            tasks[run_id].cancel()
            moved.add(run_id)
            classpath, kwargs = triggers[run_id].serialize()
            assert classpath == "airflow_dbx.trigger.DatabricksRunTrigger"
            tasks[run_id] = asyncio.ensure_future(follow(DatabricksRunTrigger(**kwargs)))
    await asyncio.wait_for(asyncio.gather(*tasks.values(), return_exceptions=True), BUDGET)
    return events, fired, moved


@pytest.fixture(scope="module")
def outcome() -> Any:
    with pytest.MonkeyPatch.context() as patch:
        workspace = EmulatorProcess()  # its own process, submitted to before its limits apply
        patch.setenv("AIRFLOW_CONN_DATABRICKS_DEFAULT",
                     json.dumps({"conn_type": "dbx", "host": workspace.url, "password": TOKEN}))
        try:
            expected = submit_runs(RUNS)
            since = workspace.admin("GET", "requests?since=0")["next"]
            workspace.admin("POST", "rate_limit", preset="databricks")
            events, fired, moved = asyncio.run(wait_all(list(expected)))
            runs = {run["run_id"]: run for run in workspace.admin("GET", "runs")["runs"]}
            log = workspace.admin("GET", f"requests?since={since}")["requests"]
            counters = workspace.admin("GET", "counters")
            yield expected, events, fired, runs, log, counters, moved
        finally:
            workspace.stop()


def test_every_trigger_fires_once_with_the_run_as_runs_get_shows_it(outcome: Any) -> None:
    expected, events, _fired, runs, _log, counters, _moved = outcome
    failed = {r: e for r, evs in events.items() for e in evs if isinstance(e, BaseException)}
    assert not failed, f"{len(failed)} triggers failed, e.g. {next(iter(failed.values()))!r}"
    assert sorted(events) == sorted(expected), "a run had no event"
    assert all(len(evs) == 1 for evs in events.values()), "a run had more than one event"
    for run_id, (event,) in events.items():
        run = runs[run_id]
        assert event["successful"] is expected[run_id], (run_id, event)
        assert event["state"]["result_state"] == run["state"]["result_state"], (run_id, event)
        assert event["run_page_url"] == run["run_page_url"]
        if not expected[run_id]:  # the report quotes the error runs/get-output gave
            assert "SharedLoadError: run " in (event["report"] or ""), (run_id, event)
    assert counters["cancels"] == 0, "a moved trigger cancelled its run"


def test_no_event_fires_before_its_run_ended(outcome: Any) -> None:
    _expected, _events, fired, runs, _log, _counters, _moved = outcome
    early = {r: (when, runs[r]["end_time"]) for r, when in fired.items()
             if not runs[r]["end_time"] or when * 1000 < runs[r]["end_time"]}
    assert not early, f"{len(early)} events before the run's end, e.g. {next(iter(early.items()))}"


def test_each_end_is_confirmed_by_one_runs_get_before_its_event(outcome: Any) -> None:
    _expected, _events, fired, runs, log, _counters, moved = outcome
    answered: dict[int, list[float]] = defaultdict(list)
    for record in log:
        if record["path"].endswith("/jobs/runs/get") and record["status"] == 200:
            answered[int(record["query"]["run_id"])].append(record["time"])
    for run_id, when in fired.items():
        end = runs[run_id]["end_time"] / 1000
        # A request answered just before the end can be logged a moment after it.
        after_end = [t for t in answered[run_id] if t >= end - 0.005]
        assert after_end and min(after_end) <= when, f"run {run_id}: no runs/get after its end before the event"
        late = [round(t - end, 3) for t in after_end if t > end + 0.005]
        # A trigger moved after the end was read but before its event fired reads it once more.
        assert len(late) <= (2 if run_id in moved else 1), f"run {run_id}: its end was read more than once ({late} s after it, event at " \
            f"{round(when - end, 3)} s)"


def test_the_runs_list_pages_did_the_watching(outcome: Any) -> None:
    expected, _events, _fired, _runs, log, _counters, _moved = outcome
    listed = sum(1 for r in log if r["path"].endswith("/jobs/runs/list"))
    got = sum(1 for r in log if r["path"].endswith("/jobs/runs/get"))
    assert listed > 0
    assert got < 3 * len(expected), f"{got} runs/get for {len(expected)} runs: the runs were polled one by one"
