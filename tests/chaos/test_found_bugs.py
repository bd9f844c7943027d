"""Bugs the chaos suite found, each replayed by a deterministic test so it stays fixed.

A newly found bug gets a strict-xfail test here and an entry in ``driver.KNOWN_BUGS``
until it is fixed; then both go and the chaos invariants hold the code to the fix.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from airflow_dbx import models
from airflow_dbx.hook import DatabricksHook
from airflow_dbx.trigger import DatabricksRunTrigger

if TYPE_CHECKING:
    from airflow_dbx.emulator import Emulator


async def _first_event(trigger: DatabricksRunTrigger) -> dict[str, Any]:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("no event")


def test_a_run_that_ended_before_the_deadline_is_not_reported_timed_out(emulator: Emulator, set_connection) -> None:
    set_connection(host=emulator.url, password=emulator.token)
    run_id = DatabricksHook().submit_run({"run_name": "quick", "tasks": [
        {"task_key": "only", "existing_cluster_id": "emulator-c",
         "notebook_task": {"notebook_path": "/nb", "base_parameters": {"emulator_duration": 1}}}]})
    ended = models.RunState.from_dict(emulator.run(run_id))
    deadline = time.monotonic() + 3
    while not ended.is_terminal and time.monotonic() < deadline:
        time.sleep(0.02)
        ended = models.RunState.from_dict(emulator.run(run_id))
    assert ended.is_successful()
    # The run ended; the deadline passes a moment later; only then does a triggerer get to the
    # trigger (it was restarting, or busy, or the submission itself took the whole timeout).
    trigger = DatabricksRunTrigger(run_id=run_id, polling_period_seconds=5, deadline=time.time() + 0.05)
    time.sleep(0.1)
    event = asyncio.run(_first_event(trigger))
    assert not event.get("timed_out"), event
    assert event["successful"] is True


def _long_run(emulator: Emulator) -> int:
    return DatabricksHook().submit_run({"run_name": "throttled", "tasks": [
        {"task_key": "only", "existing_cluster_id": "emulator-c",
         "notebook_task": {"notebook_path": "/nb", "base_parameters": {"emulator_duration": 4}}}]})


def test_a_throttled_poll_does_not_fail_a_deferred_task(emulator: Emulator, set_connection) -> None:
    set_connection(host=emulator.url, password=emulator.token)
    run_id = _long_run(emulator)
    emulator.fail_next("GET", "jobs/runs/get", count=3, status=429, retry_after=0.01)
    trigger = DatabricksRunTrigger(run_id=run_id, polling_period_seconds=0.05, retry_delay=0.01)
    assert asyncio.run(_first_event(trigger))["successful"] is True


def test_a_throttled_poll_does_not_fail_a_task_waiting_in_the_worker(emulator: Emulator, set_connection) -> None:
    from airflow_dbx.operators import DatabricksSubmitRunOperator
    from tests.integration.conftest import TryContext

    set_connection(host=emulator.url, password=emulator.token)
    op = DatabricksSubmitRunOperator(
        task_id="throttled", existing_cluster_id="emulator-c", polling_period_seconds=0.05,
        databricks_retry_delay=0.01,
        notebook_task={"notebook_path": "/nb", "base_parameters": {"emulator_duration": 4}})
    ctx = TryContext()
    emulator.fail_next("GET", "jobs/runs/get", count=1)  # the submit's own runs/get passes after one retry
    real_wait = op._wait

    def throttled_wait(hook: DatabricksHook, run: models.Run) -> models.Run:
        emulator.fail_next("GET", "jobs/runs/get", count=3, status=429, retry_after=0.01)
        return real_wait(hook, run)

    op._wait = throttled_wait
    assert op.execute(ctx) == ctx.xcom["run_id"]
