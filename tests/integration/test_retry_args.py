"""databricks_retry_args in deferrable mode: tenacity strategies cross Airflow's serialization of
the trigger and are the policy the triggerer's requests follow."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import tenacity
from airflow.models.trigger import Trigger

from airflow_dbx import errors
from airflow_dbx.operators import DatabricksSubmitRunOperator
from airflow_dbx.trigger import DatabricksRunTrigger
from tests.integration.conftest import TaskDeferred

CLUSTER = "emulator-cluster"
NOTEBOOK = {"notebook_path": "/nb", "base_parameters": {"emulator_duration": 2, "emulator_output": "ok"}}


def through_airflow(trigger: DatabricksRunTrigger) -> DatabricksRunTrigger:
    """The trigger as the triggerer rebuilds it: kwargs encrypted and stored by Airflow, read back."""
    classpath, kwargs = trigger.serialize()
    stored = Trigger(classpath=classpath, kwargs=kwargs)
    return DatabricksRunTrigger(**stored.kwargs)


def deferred_trigger(emulator: Any, try_context: Any, retry_args: dict[str, Any]) -> DatabricksRunTrigger:
    op = DatabricksSubmitRunOperator(
        task_id="t", notebook_task=NOTEBOOK, existing_cluster_id=CLUSTER, deferrable=True,
        polling_period_seconds=0.2, databricks_retry_args=retry_args,
    )
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(try_context())
    trigger = deferred.value.trigger
    assert isinstance(trigger, DatabricksRunTrigger)
    return through_airflow(trigger)


def test_tenacity_strategies_are_rebuilt_in_the_triggerer_and_drive_its_retries(emulator, try_context) -> None:
    retry_args = {
        "stop": tenacity.stop_after_attempt(4) | tenacity.stop_after_delay(60),
        "wait": tenacity.wait_fixed(0.05) + tenacity.wait_random(0, 0.01),
        "retry": tenacity.retry_if_exception_type(errors.TransientApiError),
        "reraise": True,
    }
    trigger = deferred_trigger(emulator, try_context, retry_args)
    policy = trigger._hook()._api.policy.overrides
    assert policy is not None
    assert [type(s).__name__ for s in policy["stop"].stops] == ["stop_after_attempt", "stop_after_delay"]
    assert policy["stop"].stops[0].max_attempt_number == 4
    assert policy["retry"].exception_types is errors.TransientApiError
    emulator.fail_next("GET", "jobs/runs/get", count=3, status=503)

    async def first_event() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("no event")

    event = asyncio.run(first_event())
    assert event["successful"] is True, event
    statuses = [r.status for r in emulator.requests if r.path.endswith("jobs/runs/get")]
    # The task's own read at submission, then the trigger's first check: three retries within the user's stop.
    assert statuses[:5] == [200, 503, 503, 503, 200]


def test_a_strategy_that_cannot_reach_the_triggerer_is_refused_when_the_dag_is_parsed() -> None:
    with pytest.raises(errors.PayloadError, match=r"databricks_retry_args\['before_sleep'\]: .* cannot reach the triggerer"):
        DatabricksSubmitRunOperator(
            task_id="t", notebook_task=NOTEBOOK, existing_cluster_id=CLUSTER, deferrable=True,
            databricks_retry_args={"before_sleep": lambda state: None},
        )


def test_the_same_strategy_is_fine_when_the_worker_waits() -> None:
    op = DatabricksSubmitRunOperator(
        task_id="t", notebook_task=NOTEBOOK, existing_cluster_id=CLUSTER, deferrable=False,
        databricks_retry_args={"before_sleep": lambda state: None},
    )
    assert callable(op.databricks_retry_args["before_sleep"])


def test_a_trigger_stored_before_encoding_drops_what_it_cannot_rebuild(emulator, caplog) -> None:
    legacy = {"stop": "<tenacity.stop.stop_after_attempt object at 0x7f>", "reraise": True}
    trigger = DatabricksRunTrigger(run_id=1, retry_args=legacy)
    assert trigger._hook()._api.policy.overrides == {"reraise": True}
    assert "cannot be rebuilt" in caplog.text
