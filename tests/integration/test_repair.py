"""repair_on_retry: a new try repairs its earlier try's failed run instead of starting another."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from airflow_dbx import errors, models
from airflow_dbx.emulator import Emulator
from airflow_dbx.operators import DatabricksRunNowOperator, DatabricksSubmitRunOperator
from airflow_dbx.trigger import DatabricksRunTrigger
from tests.integration.conftest import TaskDeferred, TryContext, final_state

CLUSTER = "emulator-cluster"


def three_tasks(*, fail_attempts: int = 1, middle_seconds: float = 1) -> list[dict[str, Any]]:
    """extract -> transform -> load; transform fails its first ``fail_attempts`` attempts."""
    def notebook(path: str, **params: Any) -> dict[str, Any]:
        return {"notebook_path": path, "base_parameters": {"emulator_duration": 1, **params}}

    return [
        {"task_key": "extract", "existing_cluster_id": CLUSTER, "notebook_task": notebook("/extract")},
        {"task_key": "transform", "existing_cluster_id": CLUSTER, "depends_on": [{"task_key": "extract"}],
         "notebook_task": notebook("/transform", emulator_fail_attempts=fail_attempts,
                                   emulator_duration=middle_seconds, emulator_error="ValueError: bad rows")},
        {"task_key": "load", "existing_cluster_id": CLUSTER, "depends_on": [{"task_key": "transform"}],
         "notebook_task": notebook("/load")},
    ]


@pytest.fixture(params=["submit", "run_now"])
def make(request, emulator) -> Any:
    """An operator factory for the three-task run, by runs/submit or by run-now of a job."""
    def factory(tasks: list[dict[str, Any]] | None = None, **kwargs: Any) -> Any:
        kwargs.setdefault("task_id", "t")
        kwargs.setdefault("polling_period_seconds", 0.2)
        tasks = tasks or three_tasks()
        if request.param == "submit":
            return DatabricksSubmitRunOperator(tasks=tasks, **kwargs)
        job_id = emulator.create_job({"name": f"job-{len(emulator.runs())}", "tasks": tasks})
        return DatabricksRunNowOperator(job_id=job_id, notebook_params={"day": "2026-01-01"}, **kwargs)

    return factory


def attempts(emulator, run_id: int) -> dict[str, int]:
    """How many times each task of the run ran."""
    return {task["task_key"]: task["attempt_number"] + 1 for task in emulator.run(run_id)["tasks"]}


def repair_posts(emulator) -> int:
    return sum(1 for r in emulator.requests if r.method == "POST" and r.path.endswith("jobs/runs/repair"))


def fail_first_try(op: Any, ctx: Any) -> None:
    with pytest.raises(errors.DatabricksRunFailed, match=r"- task transform \(FAILED\): ValueError: bad rows"):
        op.execute(ctx)


class TestRepairOnRetry:
    def test_the_next_try_reruns_only_the_failed_task_and_its_downstream(self, emulator, try_context, make) -> None:
        op = make(repair_on_retry=True)
        fail_first_try(op, try_context(1))
        [run] = emulator.runs()
        assert attempts(emulator, run["run_id"]) == {"extract": 1, "transform": 1, "load": 1}

        ctx = try_context(2)
        assert op.execute(ctx) == run["run_id"]
        [repaired] = emulator.runs()
        assert models.RunState.from_dict(repaired).is_successful()
        assert attempts(emulator, run["run_id"]) == {"extract": 1, "transform": 2, "load": 2}
        assert [item["type"] for item in repaired["repair_history"]] == ["ORIGINAL", "REPAIR"]
        assert repair_posts(emulator) == 1
        assert ctx.xcom["run_id"] == run["run_id"]

    def test_without_repair_the_next_try_starts_a_fresh_run(self, emulator, try_context, make) -> None:
        op = make()
        fail_first_try(op, try_context(1))
        # A fresh run is attempt 0 of every task again, so the flaky task fails again.
        fail_first_try(op, try_context(2))
        runs = emulator.runs()
        assert len(runs) == 2
        assert [attempts(emulator, run["run_id"]) for run in runs] == [{"extract": 1, "transform": 1, "load": 1}] * 2
        assert repair_posts(emulator) == 0

    def test_a_repair_that_fails_again_is_reported_and_repaired_again_by_the_next_try(
        self, emulator, try_context, make
    ) -> None:
        op = make(tasks=three_tasks(fail_attempts=2), repair_on_retry=True)
        fail_first_try(op, try_context(1))
        fail_first_try(op, try_context(2))
        run_id = op.execute(try_context(3))
        assert len(emulator.runs()) == 1
        # load was skipped (UPSTREAM_FAILED) after each failure, and rerun by each repair.
        assert attempts(emulator, run_id) == {"extract": 1, "transform": 3, "load": 3}
        history = emulator.run(run_id)["repair_history"]
        assert [item["type"] for item in history] == ["ORIGINAL", "REPAIR", "REPAIR"]
        assert repair_posts(emulator) == 2

    def test_a_cancelled_run_is_replaced_not_repaired(self, emulator, try_context, make) -> None:
        op = make(tasks=three_tasks(fail_attempts=0), repair_on_retry=True, wait_for_termination=False)
        first = op.execute(try_context(1))
        op.on_kill()
        assert final_state(emulator, first).result_state == "CANCELED"
        op.wait_for_termination = True
        second = op.execute(try_context(2))
        assert second != first
        assert len(emulator.runs()) == 2
        assert repair_posts(emulator) == 0


class TestRepairBookkeeping:
    @pytest.mark.parametrize("repair_ended", [False, True], ids=["repair_running", "repair_succeeded"])
    def test_a_repair_whose_worker_died_is_not_requested_again(
        self, emulator, try_context, make, repair_ended: bool
    ) -> None:
        op = make(tasks=three_tasks(middle_seconds=20), repair_on_retry=True)
        fail_first_try(op, try_context(1))
        # Try 2 requests the repair and defers; its worker dies before the trigger fires.
        op.deferrable = True
        with pytest.raises(TaskDeferred):
            op.execute(try_context(2))
        [run] = emulator.runs()
        assert not models.RunState.from_dict(run).is_terminal
        if repair_ended:
            assert final_state(emulator, run["run_id"]).is_successful()
        # Try 3 waits for the repair still running, or reports the one that succeeded.
        op.deferrable = False
        assert op.execute(try_context(3)) == run["run_id"]
        assert repair_posts(emulator) == 1
        assert attempts(emulator, run["run_id"]) == {"extract": 1, "transform": 2, "load": 2}

    def test_a_lost_repair_answer_is_retried_into_the_same_repair(self, emulator, try_context, make) -> None:
        op = make(repair_on_retry=True)
        fail_first_try(op, try_context(1))
        emulator.lose_response_next("POST", "jobs/runs/repair")
        run_id = op.execute(try_context(2))
        # The retried POST is refused (the run is under repair already); one repair ran.
        assert repair_posts(emulator) == 2
        assert emulator.counters["repairs"] == 1
        assert attempts(emulator, run_id) == {"extract": 1, "transform": 2, "load": 2}

    def test_deferrable_repair_waits_in_the_trigger_on_the_same_run(self, emulator, try_context, make) -> None:
        op = make(repair_on_retry=True, deferrable=True)
        ctx1 = try_context(1)
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(ctx1)
        event = first_event(deferred.value.trigger)
        with pytest.raises(errors.DatabricksRunFailed):
            op.execute_complete(ctx1, event)

        ctx2 = try_context(2)
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(ctx2)
        trigger = deferred.value.trigger
        assert isinstance(trigger, DatabricksRunTrigger)
        assert trigger.run_id == event["run_id"]
        history = emulator.run(trigger.run_id)["repair_history"]
        # The polling schedule starts from the repair, not from the run's first start.
        assert trigger.waiting_since == pytest.approx(history[-1]["start_time"] / 1000)
        event = first_event(trigger)
        assert op.execute_complete(ctx2, event) == trigger.run_id
        assert len(emulator.runs()) == 1
        assert attempts(emulator, trigger.run_id) == {"extract": 1, "transform": 2, "load": 2}


def first_event(trigger: DatabricksRunTrigger) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("no event")

    return asyncio.run(run())


class TestRepairParameters:
    """What each operator applies again when it repairs."""

    def test_run_now_reapplies_its_parameters_and_submit_has_none(self) -> None:
        payload = {"job_id": 1, "notebook_params": {"day": "1"}, "job_parameters": {"env": "prod"}, "idempotency_token": "x"}
        op = DatabricksRunNowOperator(task_id="r", job_id=1)
        assert op.repair_parameters(payload) == {"notebook_params": {"day": "1"}, "job_parameters": {"env": "prod"}}
        submit = DatabricksSubmitRunOperator(task_id="s", notebook_task={"notebook_path": "/x"},
                                             existing_cluster_id=CLUSTER)
        assert submit.repair_parameters({"notebook_params": {"day": "1"}}) == {}


class TestClocksApart:
    """A retry tells its earlier try's run from its own on the workspace's clock, read from the
    Date headers of the answers, so a workspace clock far from Airflow's changes nothing."""

    @pytest.mark.parametrize("skew", [5.0, -20.0], ids=["workspace-ahead", "workspace-behind"])
    def test_a_retry_after_a_failed_run_starts_a_fresh_one(self, monkeypatch, skew) -> None:
        with Emulator(time_scale=0.1, clock=lambda: time.time() + skew) as emu:
            monkeypatch.setenv("AIRFLOW_CONN_DATABRICKS_DEFAULT", emu.conn_json())
            op = DatabricksSubmitRunOperator(task_id="t", tasks=three_tasks(), polling_period_seconds=0.1)
            fail_first_try(op, TryContext(1))
            time.sleep(1.5)  # the retry delay: more than the margin the comparison allows
            ctx = TryContext(2, started_now=True)
            fail_first_try(op, ctx)
            first, second = sorted(emu.runs(), key=lambda run: run["run_id"])
            assert second["start_time"] > first["end_time"]
            assert ctx.xcom["run_id"] == second["run_id"]
