"""The operators' contract, driven against the emulator over real HTTP."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest
from airflow.sdk import DAG, task

from airflow_dbx import errors, models
from airflow_dbx.hook import DatabricksHook
from airflow_dbx.operators import DatabricksRunNowOperator, DatabricksSubmitRunOperator
from airflow_dbx.trigger import DatabricksRunTrigger
from tests import oracle
from tests.integration.conftest import TaskDeferred, final_state

NOTEBOOK = {"notebook_path": "/Shared/nb", "base_parameters": {"emulator_duration": 1}}
CLUSTER = "emulator-cluster"


def submit(**kwargs: Any) -> DatabricksSubmitRunOperator:
    kwargs.setdefault("task_id", "t")
    kwargs.setdefault("polling_period_seconds", 1)
    return DatabricksSubmitRunOperator(**kwargs)


def run_now(**kwargs: Any) -> DatabricksRunNowOperator:
    kwargs.setdefault("task_id", "t")
    kwargs.setdefault("polling_period_seconds", 1)
    return DatabricksRunNowOperator(**kwargs)


class TestParseTimeValidation:
    @pytest.mark.parametrize(
        ("make", "message"),
        [
            (lambda: submit(notebook_task=NOTEBOOK, new_cluster={"num_workers": 1}, existing_cluster_id=CLUSTER),
             "new_cluster: give either new_cluster or existing_cluster_id, not both"),
            (lambda: submit(run_name="nothing"), "tasks: nothing to run"),
            (lambda: submit(json={"notebook_task": NOTEBOOK}, spark_jar_task={"main_class_name": "M"}),
             "only one task type may be given, got notebook_task and spark_jar_task"),
            (lambda: submit(json="{not json"), "json: a string that is not JSON"),
            (lambda: submit(notebook_task={"notebook_path": "/x", "base_parameters": {"day": object()}}),
             r"json\.notebook_task\.base_parameters\.day: a object has no JSON form"),
            (lambda: run_now(job_id=1, job_name="n"), "job_id: give exactly one of job_id and job_name, not both"),
            (run_now, "job_id: give exactly one of job_id and job_name"),
            (lambda: run_now(job_id=1, notebook_params={"k": "v" * 10_001}), "notebook_params: 10010 bytes"),
            (lambda: submit(notebook_task=NOTEBOOK, polling_period_seconds=0),
             "polling_period_seconds: expected a positive number, got 0"),
            (lambda: submit(notebook_task=NOTEBOOK, databricks_retry_limit=0),
             "databricks_retry_limit: expected a positive integer, got 0"),
            (lambda: submit(notebook_task=NOTEBOOK, idempotency_token="x" * 65), "idempotency_token: expected a string"),
        ],
    )
    def test_literal_mistakes_fail_when_the_dag_is_parsed(self, make: Any, message: str) -> None:
        with pytest.raises(errors.PayloadError, match=message):
            make()

    def test_values_known_only_at_run_time_are_checked_then(self, emulator, try_context) -> None:
        with DAG("parse_time", schedule=None) as dag:
            run_now(task_id="a", job_id="{{ params.job }}", notebook_params="{{ params.nb }}")
            submit(task_id="b", json="{{ var.json.body }}")
            submit(task_id="c", json="body.json")

            @task
            def spec() -> dict[str, Any]:
                return NOTEBOOK

            submit(task_id="d", notebook_task=spec(), existing_cluster_id=CLUSTER)
        # Parsing accepted them as they are; once rendered, a bad value fails with its field named.
        assert sorted(dag.task_dict) == ["a", "b", "c", "d", "spec"]
        assert dag.task_dict["a"].job_id == "{{ params.job }}"
        rendered = run_now(task_id="a2", job_id="{{ params.job }}")
        rendered.job_id = "not-a-number"  # what Airflow's rendering put in its place
        with pytest.raises(errors.PayloadError, match="job_id: expected an integer job id, got 'not-a-number'"):
            rendered.execute(try_context())
        assert emulator.runs() == []


class TestPayload:
    def test_named_parameters_win_over_json_and_run_name_defaults_to_task_id(self, emulator, try_context) -> None:
        op = submit(
            task_id="merge",
            json={"run_name": "from json", "timeout_seconds": 600, "notebook_task": {"notebook_path": "/old"}},
            notebook_task=NOTEBOOK,
            existing_cluster_id=CLUSTER,
        )
        op.run_name = "named"
        run_id = op.execute(try_context())
        run = emulator.run(run_id)
        assert run["run_name"] == "named"
        assert run["timeout_seconds"] == 600
        (task_spec,) = run["tasks"]
        assert task_spec["notebook_task"]["notebook_path"] == "/Shared/nb"
        assert task_spec["existing_cluster_id"] == CLUSTER

        op = submit(task_id="default_name", notebook_task=NOTEBOOK, existing_cluster_id=CLUSTER)
        assert emulator.run(op.execute(try_context(task_id="default_name")))["run_name"] == "default_name"

    def test_parameters_are_sent_as_the_strings_the_api_types(self, emulator, try_context) -> None:
        job_id = emulator.create_job({"name": "typed", "tasks": [
            {"task_key": "only", "existing_cluster_id": CLUSTER, "notebook_task": {"notebook_path": "/nb"}}]})
        op = run_now(job_id=job_id, notebook_params={"flag": True, "limit": 5}, python_params=[1, 2.5, False])
        run = emulator.run(op.execute(try_context()))
        params = run["overriding_parameters"]
        assert params["notebook_params"] == {"flag": "true", "limit": "5"}
        assert params["python_params"] == ["1", "2.5", "false"]

    def test_job_name_resolves_to_its_id_and_errors_name_the_job(self, emulator, try_context) -> None:
        job_id = emulator.create_job({"name": "nightly", "tasks": [
            {"task_key": "only", "existing_cluster_id": CLUSTER, "notebook_task": {"notebook_path": "/nb"}}]})
        run = emulator.run(run_now(job_name="nightly").execute(try_context()))
        assert run["job_id"] == job_id
        with pytest.raises(errors.PayloadError, match="job_name: no Databricks job is named 'missing'"):
            run_now(job_name="missing").execute(try_context())


class TestCancelPreviousRuns:
    def test_the_first_try_cancels_the_jobs_active_runs_and_a_retry_keeps_its_own(
        self, emulator, try_context
    ) -> None:
        job_id = emulator.create_job({"name": "exclusive", "max_concurrent_runs": 5, "tasks": [
            {"task_key": "only", "existing_cluster_id": CLUSTER,
             "notebook_task": {"notebook_path": "/nb", "base_parameters": {"emulator_duration": 600}}}]})
        earlier = DatabricksHook().run_now({"job_id": job_id})
        op = run_now(job_id=job_id, cancel_previous_runs=True, wait_for_termination=False)
        mine = op.execute(try_context())
        assert mine != earlier
        assert oracle.result(oracle.finished(emulator, earlier)) == "CANCELED"
        assert oracle.life_cycle(emulator.run(mine)) in {"PENDING", "RUNNING", "QUEUED"}
        again = run_now(job_id=job_id, cancel_previous_runs=True, wait_for_termination=False)
        assert again.execute(try_context(2)) == mine  # the retry reattaches, and cancels nothing
        assert oracle.life_cycle(emulator.run(mine)) in {"PENDING", "RUNNING"}
        cancel_alls = [r for r in emulator.requests if r.path.endswith("jobs/runs/cancel-all")]
        assert len(cancel_alls) == 1


class TestExactlyOnce:
    def test_a_lost_submit_answer_is_retried_into_the_same_run(self, emulator, try_context) -> None:
        emulator.lose_response_next("POST", "jobs/runs/submit")
        run_id = submit(notebook_task=NOTEBOOK, existing_cluster_id=CLUSTER).execute(try_context())
        assert [run["run_id"] for run in emulator.runs()] == [run_id]
        posts = [r for r in emulator.requests if r.method == "POST" and r.path.endswith("jobs/runs/submit")]
        assert len(posts) == 2

    @pytest.mark.parametrize("operator", ["submit", "run_now"])
    def test_a_new_try_reattaches_to_the_run_its_dead_worker_started(self, emulator, try_context, operator) -> None:
        if operator == "submit":
            make = lambda **kw: submit(notebook_task={"notebook_path": "/nb", "base_parameters": {"emulator_duration": 20}},  # noqa: E731
                                       existing_cluster_id=CLUSTER, **kw)
        else:
            job_id = emulator.create_job({"name": "j", "tasks": [{"task_key": "only", "existing_cluster_id": CLUSTER,
                                          "notebook_task": {"notebook_path": "/nb"}}]})
            make = lambda **kw: run_now(job_id=job_id, notebook_params={"emulator_duration": 20}, **kw)  # noqa: E731
        # Try 1 submits, then its worker dies before the run ends.
        first = make(wait_for_termination=False).execute(try_context(1))
        assert not models.RunState.from_dict(emulator.run(first)).is_terminal
        # Try 2 finds that run still active and waits for it instead of starting another.
        second = make().execute(try_context(2))
        assert second == first
        assert len(emulator.runs()) == 1
        assert models.RunState.from_dict(emulator.run(first)).is_successful()

    def test_a_new_try_after_a_failed_run_starts_one_fresh_run(self, emulator, try_context) -> None:
        failing = {"notebook_path": "/nb", "base_parameters": {"emulator_result": "FAILED", "emulator_error": "boom"}}
        with pytest.raises(errors.DatabricksRunFailed):
            submit(notebook_task=failing, existing_cluster_id=CLUSTER).execute(try_context(1))
        # The next try's POST of the first token returns the failed run; the second starts anew.
        run_id = submit(notebook_task=NOTEBOOK, existing_cluster_id=CLUSTER).execute(try_context(2))
        assert len(emulator.runs()) == 2
        assert models.RunState.from_dict(emulator.run(run_id)).is_successful()

    def test_a_new_try_after_a_successful_run_reports_success_without_a_run(self, emulator, try_context) -> None:
        op = submit(notebook_task=NOTEBOOK, existing_cluster_id=CLUSTER)
        first = op.execute(try_context(1))
        assert op.execute(try_context(2)) == first
        assert len(emulator.runs()) == 1


class TestResults:
    def test_xcom_gets_run_identity_and_notebook_output(self, emulator, try_context) -> None:
        ctx = try_context()
        notebook = {"notebook_path": "/nb", "base_parameters": {"emulator_output": "42 rows"}}
        run_id = submit(notebook_task=notebook, existing_cluster_id=CLUSTER).execute(ctx)
        run = emulator.run(run_id)
        assert ctx.xcom == {
            "run_id": run_id, "job_id": run["job_id"], "run_page_url": run["run_page_url"], "notebook_output": "42 rows",
        }

    def test_a_failed_run_raises_its_failure_report(self, emulator, try_context) -> None:
        tasks = [
            {"task_key": "load", "existing_cluster_id": CLUSTER, "notebook_task": {"notebook_path": "/load"}},
            {"task_key": "check", "existing_cluster_id": CLUSTER, "depends_on": [{"task_key": "load"}],
             "notebook_task": {"notebook_path": "/check", "base_parameters": {
                 "emulator_result": "FAILED", "emulator_error": "ValueError: bad rows",
                 "emulator_error_trace": "Traceback (most recent call last):\n  File x\nValueError: bad rows"}}},
        ]
        with pytest.raises(errors.DatabricksRunFailed) as caught:
            submit(tasks=tasks).execute(try_context())
        report = str(caught.value)
        run = emulator.runs()[0]
        assert report.startswith(f"Databricks run {run['run_id']} ended FAILED")
        assert "- task check (FAILED): ValueError: bad rows" in report
        assert "    Traceback (most recent call last):" in report
        assert "load" not in report.split("\n", 1)[1]
        assert report.endswith(f"Run page: {run['run_page_url']}")

    def test_on_kill_cancels_the_run(self, emulator, try_context) -> None:
        op = submit(notebook_task={"notebook_path": "/nb", "base_parameters": {"emulator_duration": 60}},
                    existing_cluster_id=CLUSTER, wait_for_termination=False)
        run_id = op.execute(try_context())
        op.on_kill()
        assert final_state(emulator, run_id).result_state == "CANCELED"


class TestDeferrable:
    def test_defers_at_once_and_resumes_from_the_event(self, emulator, try_context) -> None:
        op = submit(notebook_task=NOTEBOOK, existing_cluster_id=CLUSTER, deferrable=True)
        ctx = try_context()
        before = len(emulator.requests)
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(ctx)
        # Submission costs one POST and the runs/get that gives the run page URL.
        assert [r.path.rsplit("/", 2)[-2:] for r in emulator.requests[before:]] == [
            ["runs", "submit"], ["runs", "get"]]
        trigger = deferred.value.trigger
        assert isinstance(trigger, DatabricksRunTrigger)
        assert deferred.value.method_name == "execute_complete"

        async def first_event() -> dict[str, Any]:
            async for event in trigger.run():
                return event.payload
            raise AssertionError("no event")

        event = asyncio.run(first_event())
        assert op.execute_complete(ctx, event) == ctx.xcom["run_id"]

    def test_execution_timeout_becomes_the_triggers_deadline(self, emulator, try_context) -> None:
        op = submit(notebook_task=NOTEBOOK, existing_cluster_id=CLUSTER, deferrable=True,
                    execution_timeout=datetime.timedelta(minutes=5))
        ctx = try_context()
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(ctx)
        expected = ctx["ti"].start_date.timestamp() + 300
        assert deferred.value.trigger.deadline == pytest.approx(expected)
