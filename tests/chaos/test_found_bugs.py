"""Bugs the chaos suite found, each pinned by a deterministic test (strict xfail until fixed).

When one of these starts passing, drop its xfail mark and the matching entry of
``driver.KNOWN_BUGS`` so the chaos invariants hold it to the fix.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import pytest

from airflow_dbx import api
from airflow_dbx.hook import DatabricksHook
from airflow_dbx.trigger import DatabricksRunTrigger

if TYPE_CHECKING:
    from airflow_dbx.emulator import Emulator


async def _first_event(trigger: DatabricksRunTrigger) -> dict[str, Any]:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("no event")


@pytest.mark.xfail(strict=True, reason=(
    "trigger.py DatabricksRunTrigger._wait: when the deadline has passed at the top of its loop (the trigger "
    "started late, or a poll with retries ran past it) it calls _time_out (cancel + timed_out event) without "
    "reading the run, so a run that ended SUCCESS before the deadline fails its task with AirflowTaskTimeout "
    "'Databricks run N was cancelled', which is untrue (the cancel was a no-op)"))
def test_a_run_that_ended_before_the_deadline_is_not_reported_timed_out(emulator: Emulator, set_connection) -> None:
    set_connection(host=emulator.url, password=emulator.token)
    run_id = DatabricksHook().submit_run({"run_name": "quick", "tasks": [
        {"task_key": "only", "existing_cluster_id": "emulator-c",
         "notebook_task": {"notebook_path": "/nb", "base_parameters": {"emulator_duration": 1}}}]})
    ended = api.RunState.from_dict(emulator.run(run_id))
    deadline = time.monotonic() + 3
    while not ended.is_terminal and time.monotonic() < deadline:
        time.sleep(0.02)
        ended = api.RunState.from_dict(emulator.run(run_id))
    assert ended.is_successful()
    # The run ended; the deadline passes a moment later; only then does a triggerer get to the
    # trigger (it was restarting, or busy, or the submission itself took the whole timeout).
    trigger = DatabricksRunTrigger(run_id=run_id, polling_period_seconds=5, deadline=time.time() + 0.05)
    time.sleep(0.1)
    event = asyncio.run(_first_event(trigger))
    assert not event.get("timed_out"), event
    assert event["successful"] is True
