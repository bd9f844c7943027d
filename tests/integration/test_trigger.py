"""DatabricksRunTrigger against the emulator: events, deadline, restart and user kills."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import tenacity

from airflow_dbx import compat
from airflow_dbx._http.retry_args import encode as encode_retry_args
from airflow_dbx.hook import DatabricksHook
from airflow_dbx.trigger import DatabricksRunTrigger
from tests.integration.conftest import final_state

CLUSTER = "emulator-cluster"


def start_run(duration: float = 1, **params: Any) -> int:
    return DatabricksHook().submit_run({
        "run_name": "trigger test",
        "tasks": [{"task_key": "only", "existing_cluster_id": CLUSTER, "notebook_task": {
            "notebook_path": "/nb", "base_parameters": {"emulator_duration": duration, **params}}}],
    })


async def events(trigger: DatabricksRunTrigger) -> list[dict[str, Any]]:
    return [event.payload async for event in trigger.run()]


class _DeferredTaskInstance:
    dag_id, task_id, run_id, map_index = "d", "t", "r", -1


def test_serialises_to_plain_kwargs_that_rebuild_it(emulator) -> None:
    retry_args = encode_retry_args({"stop": tenacity.stop_after_attempt(2), "reraise": True}, "retry_args")
    trigger = DatabricksRunTrigger(run_id=5, polling_period_seconds=7, deadline=123.0, run_page_url="u",
                                   retry_args=retry_args)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_dbx.trigger.DatabricksRunTrigger"
    assert json.loads(json.dumps(kwargs)) == kwargs  # plain JSON all through
    rebuilt = DatabricksRunTrigger(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    assert rebuilt._hook()._api.policy.overrides["stop"].max_attempt_number == 2


def test_one_event_with_the_outcome(emulator) -> None:
    run_id = start_run(emulator_output="done")
    (event,) = asyncio.run(events(DatabricksRunTrigger(run_id=run_id, polling_period_seconds=1)))
    assert event["successful"] is True
    assert event["run_id"] == run_id
    assert event["notebook_output"] == "done"


def test_a_failed_run_fires_its_report(emulator) -> None:
    run_id = start_run(emulator_result="FAILED", emulator_error="KeyError: 'day'")
    (event,) = asyncio.run(events(DatabricksRunTrigger(run_id=run_id, polling_period_seconds=1)))
    assert event["successful"] is False
    assert "- task only (FAILED): KeyError: 'day'" in event["report"]


def test_the_deadline_cancels_the_run(emulator) -> None:
    run_id = start_run(duration=600)
    trigger = DatabricksRunTrigger(run_id=run_id, polling_period_seconds=1, deadline=time.time() + 1.5)
    (event,) = asyncio.run(events(trigger))
    assert event["timed_out"] is True
    assert final_state(emulator, run_id).result_state == "CANCELED"


def test_a_restarted_triggerer_picks_up_the_run_and_cancels_nothing(emulator, monkeypatch) -> None:
    monkeypatch.setattr(compat, "task_instance_state", lambda *args: "deferred")
    run_id = start_run(duration=30)
    first = DatabricksRunTrigger(run_id=run_id, polling_period_seconds=1)
    first.task_instance = _DeferredTaskInstance()

    async def triggerer_restart() -> None:
        waiting = asyncio.ensure_future(events(first))
        await asyncio.sleep(1.5)  # at least one poll happened
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        if compat.TRIGGER_HAS_ON_KILL:
            return  # Airflow 3.3 calls on_kill only for a user's action, never on a restart

    asyncio.run(triggerer_restart())
    _, kwargs = first.serialize()
    second = DatabricksRunTrigger(**kwargs)
    (event,) = asyncio.run(events(second))
    assert event["successful"] is True
    assert not [r for r in emulator.requests if r.path.endswith("runs/cancel")]
    assert len(emulator.runs()) == 1


@pytest.mark.parametrize("state", ["failed", "success", None])
def test_a_user_stopping_the_task_cancels_the_run(emulator, monkeypatch, state) -> None:
    monkeypatch.setattr(compat, "task_instance_state", lambda *args: state)
    run_id = start_run(duration=60)
    trigger = DatabricksRunTrigger(run_id=run_id, polling_period_seconds=1)
    trigger.task_instance = _DeferredTaskInstance()

    async def user_kills() -> None:
        waiting = asyncio.ensure_future(events(trigger))
        await asyncio.sleep(0.5)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        if compat.TRIGGER_HAS_ON_KILL:
            await trigger.on_kill()  # what Airflow 3.3's triggerer does after a user's action

    asyncio.run(user_kills())
    assert final_state(emulator, run_id).result_state == "CANCELED"


def test_a_repeated_cancel_does_not_interrupt_cancelling_the_run(emulator, monkeypatch) -> None:
    """Airflow 3.3's triggerer re-sends a user's cancel on each sync until the trigger is gone."""
    monkeypatch.setattr(compat, "task_instance_state", lambda *args: "failed")
    emulator.delay_next("POST", "jobs/runs/cancel", seconds=1.0)
    run_id = start_run(duration=60)
    trigger = DatabricksRunTrigger(run_id=run_id, polling_period_seconds=1)
    trigger.task_instance = _DeferredTaskInstance()

    async def cancelled_twice() -> None:
        killing = asyncio.ensure_future(trigger.on_kill())
        await asyncio.sleep(0.3)  # on_kill is waiting for the runs/cancel answer
        killing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await killing
        await asyncio.sleep(2)  # the loop goes on, as the triggerer's does

    asyncio.run(cancelled_twice())
    assert final_state(emulator, run_id).result_state == "CANCELED"
