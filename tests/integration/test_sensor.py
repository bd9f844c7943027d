"""DatabricksRunSensor against the emulator, in poke mode and deferred to its trigger."""

from __future__ import annotations

import asyncio
import datetime
import threading
from typing import Any

import pytest
from airflow.sdk import DAG
from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR, TriggerFailureReason

from airflow_dbx import errors, models
from airflow_dbx.hook import DatabricksHook
from airflow_dbx.operators import DatabricksSubmitRunOperator
from airflow_dbx.sensors import AirflowFailException, DatabricksRunSensor
from airflow_dbx.trigger import DatabricksRunTrigger
from tests.integration.conftest import TaskDeferred, final_state

try:
    from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException
except ImportError:  # Airflow 3.1 keeps them in airflow.exceptions
    from airflow.exceptions import AirflowSensorTimeout, AirflowSkipException  # type: ignore[no-redef]

CLUSTER = "emulator-cluster"


def start(emulator, try_context, seconds: float = 2, **params: Any) -> int:
    """A run started by an operator that does not wait for it; its id."""
    notebook = {"notebook_path": "/nb", "base_parameters": {"emulator_duration": seconds, **params}}
    op = DatabricksSubmitRunOperator(task_id="submit", notebook_task=notebook, existing_cluster_id=CLUSTER,
                                     wait_for_termination=False)
    return op.execute(try_context(task_id="submit"))


def sensor(run_id: Any, **kwargs: Any) -> DatabricksRunSensor:
    kwargs.setdefault("task_id", "sense")
    kwargs.setdefault("poke_interval", 0.2)
    return DatabricksRunSensor(run_id=run_id, **kwargs)


def first_event(trigger: DatabricksRunTrigger) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("no event")

    return asyncio.run(run())


def paths(emulator, since: int = 0) -> set[str]:
    return {f"{r.method} {r.path.split('/api/2.2/')[-1]}" for r in emulator.requests[since:]}


def cancel_soon(run_id: int, after: float = 0.5) -> threading.Timer:
    timer = threading.Timer(after, lambda: DatabricksHook().cancel_run(run_id))
    timer.start()
    return timer


FAILING = {"emulator_result": "FAILED", "emulator_error": "ValueError: bad rows"}


class TestPokeMode:
    def test_waits_for_the_run_and_returns_its_id_with_the_operators_xcom(self, emulator, try_context) -> None:
        run_id = start(emulator, try_context, emulator_output="42 rows")
        before = len(emulator.requests)
        ctx = try_context()
        assert sensor(run_id).execute(ctx) == run_id
        run = emulator.run(run_id)
        assert ctx.xcom == {"run_id": run_id, "job_id": run["job_id"], "run_page_url": run["run_page_url"],
                            "notebook_output": "42 rows"}
        # Only reads: nothing submitted, repaired or cancelled.
        assert paths(emulator, before) == {"GET jobs/runs/get", "GET jobs/runs/get-output"}

    def test_poke_is_false_until_the_run_ends(self, emulator, try_context) -> None:
        run_id = start(emulator, try_context)
        op = sensor(run_id)
        ctx = try_context()
        assert op.poke(ctx) is False
        final_state(emulator, run_id)
        done = op.poke(ctx)
        assert done and done.xcom_value == run_id

    def test_a_failed_run_fails_the_task_without_retries_with_the_report(self, emulator, try_context) -> None:
        run_id = start(emulator, try_context, seconds=0.5, **FAILING)
        with pytest.raises(AirflowFailException) as caught:
            sensor(run_id).execute(try_context())
        report = str(caught.value)
        assert report.startswith(f"Databricks run {run_id} ended FAILED")
        assert "(FAILED): ValueError: bad rows" in report
        assert report.endswith(f"Run page: {emulator.run(run_id)['run_page_url']}")
        assert isinstance(caught.value.__cause__, errors.DatabricksRunFailed)

    def test_soft_fail_skips_on_a_failed_run(self, emulator, try_context) -> None:
        run_id = start(emulator, try_context, seconds=0.5, **FAILING)
        with pytest.raises(AirflowSkipException):
            sensor(run_id, soft_fail=True).execute(try_context())

    @pytest.mark.parametrize("deferrable", [False, True])
    def test_soft_fail_skips_on_a_run_that_had_failed_before_the_sensor_started(
        self, emulator, try_context, deferrable: bool
    ) -> None:
        run_id = start(emulator, try_context, seconds=0.2, **FAILING)
        assert final_state(emulator, run_id).result_state == "FAILED"
        with pytest.raises(AirflowSkipException):
            sensor(run_id, soft_fail=True, deferrable=deferrable).execute(try_context())
        with pytest.raises(AirflowFailException, match="ValueError: bad rows"):
            sensor(run_id, deferrable=deferrable).execute(try_context())

    def test_allow_success_with_failures(self, emulator, try_context) -> None:
        tasks = [
            {"task_key": "flaky", "existing_cluster_id": CLUSTER,
             "notebook_task": {"notebook_path": "/f", "base_parameters": {"emulator_duration": 0.5, **FAILING}}},
            {"task_key": "after", "existing_cluster_id": CLUSTER, "depends_on": [{"task_key": "flaky"}],
             "run_if": "ALL_DONE", "notebook_task": {"notebook_path": "/a", "base_parameters": {"emulator_duration": 0.5}}},
        ]
        run_id = DatabricksSubmitRunOperator(task_id="submit", tasks=tasks, wait_for_termination=False).execute(
            try_context(task_id="submit"))
        assert final_state(emulator, run_id).result_state == "SUCCESS_WITH_FAILURES"
        with pytest.raises(AirflowFailException, match="SUCCESS_WITH_FAILURES"):
            sensor(run_id).execute(try_context())
        assert sensor(run_id, allow_success_with_failures=True).execute(try_context()) == run_id

    def test_a_run_cancelled_from_outside_fails_the_sensor(self, emulator, try_context) -> None:
        run_id = start(emulator, try_context, seconds=60)
        timer = cancel_soon(run_id)
        try:
            with pytest.raises(AirflowFailException, match=f"Databricks run {run_id} ended CANCELED"):
                sensor(run_id).execute(try_context())
        finally:
            timer.cancel()

    def test_the_sensor_timeout_leaves_the_run_running(self, emulator, try_context) -> None:
        run_id = start(emulator, try_context, seconds=60)
        with pytest.raises(AirflowSensorTimeout):
            sensor(run_id, timeout=0.5).execute(try_context())
        with pytest.raises(AirflowSkipException):
            sensor(run_id, timeout=0.5, soft_fail=True).execute(try_context())
        op = sensor(run_id)
        op.on_kill()
        assert not models.RunState.from_dict(emulator.run(run_id)).is_terminal
        assert "POST jobs/runs/cancel" not in paths(emulator)

    def test_a_retry_waits_again_and_never_resubmits(self, emulator, try_context) -> None:
        run_id = start(emulator, try_context, seconds=1)
        op = sensor(run_id)
        assert op.execute(try_context(1)) == run_id
        assert op.execute(try_context(2)) == run_id
        assert len(emulator.runs()) == 1


class TestDeferrable:
    def test_defers_then_resumes_from_the_event(self, emulator, try_context) -> None:
        run_id = start(emulator, try_context, emulator_output="42 rows")
        op = sensor(run_id, deferrable=True, timeout=600)
        ctx = try_context()
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(ctx)
        trigger = deferred.value.trigger
        assert isinstance(trigger, DatabricksRunTrigger)
        assert trigger.cancel_on_kill is False
        assert (trigger.run_id, trigger.deadline, trigger.polling_period_seconds) == (run_id, None, 0.2)
        assert deferred.value.timeout == datetime.timedelta(seconds=600)
        event = first_event(trigger)
        # The task runner resumes a deferred task through resume_execution.
        assert op.resume_execution("execute_complete", {"event": event}, ctx) == run_id
        assert ctx.xcom["notebook_output"] == "42 rows"

    def test_a_run_that_already_ended_does_not_defer(self, emulator, try_context) -> None:
        run_id = start(emulator, try_context, seconds=0.2)
        final_state(emulator, run_id)
        assert sensor(run_id, deferrable=True).execute(try_context()) == run_id

    @pytest.mark.parametrize("soft_fail", [False, True])
    def test_a_failed_run_fails_or_with_soft_fail_skips(self, emulator, try_context, soft_fail: bool) -> None:
        run_id = start(emulator, try_context, seconds=0.5, **FAILING)
        op = sensor(run_id, deferrable=True, soft_fail=soft_fail)
        ctx = try_context()
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(ctx)
        event = first_event(deferred.value.trigger)
        expected = AirflowSkipException if soft_fail else AirflowFailException
        with pytest.raises(expected) as caught:
            op.resume_execution("execute_complete", {"event": event}, ctx)
        cause = caught.value if not soft_fail else caught.value.__cause__
        assert "(FAILED): ValueError: bad rows" in str(cause)

    def test_a_run_cancelled_from_outside_while_deferred(self, emulator, try_context) -> None:
        run_id = start(emulator, try_context, seconds=60)
        op = sensor(run_id, deferrable=True)
        ctx = try_context()
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(ctx)
        timer = cancel_soon(run_id)
        try:
            event = first_event(deferred.value.trigger)
        finally:
            timer.cancel()
        assert event["state"]["result_state"] == "CANCELED"
        with pytest.raises(AirflowFailException, match=f"Databricks run {run_id} ended CANCELED"):
            op.execute_complete(ctx, event)

    @pytest.mark.parametrize("soft_fail", [False, True])
    def test_the_deferral_timeout_is_a_sensor_timeout(self, emulator, try_context, soft_fail: bool) -> None:
        op = sensor(1, deferrable=True, soft_fail=soft_fail)
        expected = AirflowSkipException if soft_fail else AirflowSensorTimeout
        with pytest.raises(expected):
            op.resume_execution(TRIGGER_FAIL_REPR, {"error": TriggerFailureReason.TRIGGER_TIMEOUT}, try_context())

    def test_stopping_the_trigger_never_cancels_the_run(self, emulator, try_context) -> None:
        run_id = start(emulator, try_context, seconds=60)
        with pytest.raises(TaskDeferred) as deferred:
            sensor(run_id, deferrable=True).execute(try_context())
        trigger = deferred.value.trigger

        async def stop_while_waiting() -> None:
            waiting = asyncio.ensure_future(first_event_async(trigger))
            await asyncio.sleep(0.5)
            waiting.cancel()  # what Airflow 3.1 does when the task is killed or times out
            with pytest.raises(asyncio.CancelledError):
                await waiting
            await trigger.on_kill()  # what Airflow 3.3 does on top

        asyncio.run(stop_while_waiting())
        assert not models.RunState.from_dict(emulator.run(run_id)).is_terminal
        assert "POST jobs/runs/cancel" not in paths(emulator)

    def test_the_watching_trigger_serialises_its_promise_not_to_cancel(self, emulator) -> None:
        path, kwargs = DatabricksRunTrigger(run_id=5, polling_period_seconds=3, cancel_on_kill=False).serialize()
        assert kwargs["cancel_on_kill"] is False
        assert DatabricksRunTrigger(**kwargs).serialize() == (path, kwargs)


async def first_event_async(trigger: DatabricksRunTrigger) -> dict[str, Any]:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("no event")


class TestArguments:
    @pytest.mark.parametrize("bad", ["abc", 1.5, True, None])
    def test_a_literal_run_id_must_be_an_integer(self, bad: Any) -> None:
        with pytest.raises(errors.PayloadError, match="run_id: expected a Databricks run id"):
            sensor(bad)

    def test_run_id_can_be_a_template_or_an_operators_output(self) -> None:
        with DAG("sense_output", schedule=None):
            submit = DatabricksSubmitRunOperator(task_id="submit", notebook_task={"notebook_path": "/nb"},
                                                 existing_cluster_id=CLUSTER, wait_for_termination=False)
            sense = sensor(submit.output)
            sensor("{{ params.run_id }}", task_id="templated")
        assert sense.upstream_task_ids == {"submit"}
        assert "run_id" in DatabricksRunSensor.template_fields

    def test_a_string_of_digits_is_a_run_id(self, emulator, try_context) -> None:
        run_id = start(emulator, try_context, seconds=0.2)
        assert sensor(str(run_id)).execute(try_context()) == run_id
