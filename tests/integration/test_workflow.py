"""Jobs as code and workflow groups, in real Airflow (``dag.test()``) against the emulator.

Outcomes are read from the emulator's own records (its runs, jobs and request log) and from
Airflow's task instance states.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest
from airflow.sdk import DAG

from airflow_dbx import errors
from airflow_dbx.operators import (
    DatabricksCreateJobsOperator,
    DatabricksNotebookOperator,
    DatabricksTaskOperator,
    DatabricksWorkflowTaskGroup,
)
from tests.integration.conftest import STRICT_WARNINGS, TaskDeferred, airflow_env, final_state

if TYPE_CHECKING:
    from airflow_dbx.emulator import Emulator

ROOT = Path(__file__).resolve().parents[2]
SHARED = {"job_cluster_key": "shared", "new_cluster": {"spark_version": "15.4.x-scala2.12", "num_workers": 1}}
CLUSTER = "emulator-cluster"
FAST = {"polling_period_seconds": 0.2, "databricks_retry_delay": 0.01}


def notebook(task_id: str, **params: Any) -> DatabricksNotebookOperator:
    extra = {k: params.pop(k) for k in ("retries", "retry_delay", "deferrable", "trigger_rule") if k in params}
    return DatabricksNotebookOperator(
        task_id=task_id, notebook_path=f"/Shared/{task_id}", source="WORKSPACE", job_cluster_key="shared",
        notebook_params=params, **FAST, **extra,
    )


class DagTest(NamedTuple):
    states: dict[str, str]  # task id -> Airflow's final state
    output: str


@pytest.fixture
def dag_file(tmp_path: Any) -> Any:
    """Run a DAG built by ``expression`` (code of this module) with ``dag.test()``, in a process
    whose DAG folder holds only that DAG's file (Airflow 3 tests only DAGs it parsed from its
    DAG folder). Its DAG file is parsed under ``python -W error`` first."""

    def run(dag_id: str, expression: str, logical_date: str = "2026-01-01") -> DagTest:
        path = tmp_path / f"{dag_id}.py"
        # "airflow" and "dag" in the text: Airflow's safe mode skips files without both.
        path.write_text(f"# airflow\nfrom tests.integration.test_workflow import *  # noqa\ndag = {expression}\n")
        script = (
            "import datetime, json, runpy\n"
            "from tests.integration.test_workflow import ti_states\n"
            f"dag = runpy.run_path({str(path)!r})['dag']\n"
            f"day = datetime.datetime.fromisoformat({logical_date!r}).replace(tzinfo=datetime.timezone.utc)\n"
            "print('TI_STATES=' + json.dumps(ti_states(dag.test(logical_date=day))))\n"
        )
        env = airflow_env(AIRFLOW__CORE__DAGS_FOLDER=str(tmp_path), PYTHONPATH=str(ROOT))
        parsed = subprocess.run([sys.executable, *STRICT_WARNINGS, str(path)], env=env, capture_output=True,
                                text=True, timeout=120, check=False, cwd=ROOT)
        assert parsed.returncode == 0, parsed.stderr[-3000:]
        result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                                text=True, timeout=300, check=False, cwd=ROOT)
        output = result.stdout + result.stderr
        marker = next((line for line in result.stdout.splitlines() if line.startswith("TI_STATES=")), None)
        assert marker is not None, output[-4000:]
        return DagTest(json.loads(marker.removeprefix("TI_STATES=")), output)

    return run


def ti_states(dag_run: Any) -> dict[str, str]:
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id).all()
        return {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in tis}


def task_results(run: dict[str, Any]) -> dict[str, str]:
    return {t["task_key"]: t["state"].get("result_state") for t in run["tasks"]}


def job_list(emu: Emulator) -> list[dict[str, Any]]:
    import requests

    answer = requests.get(f"{emu.url}/api/2.2/jobs/list", params={"expand_tasks": "true"},
                          headers={"Authorization": f"Bearer {emu.token}"}, timeout=10)
    return list(answer.json().get("jobs", []))


def three_tasks(dag_id: str, *, b: dict[str, Any] | None = None, **group: Any) -> DAG:
    with (
        DAG(dag_id, schedule=None, start_date=datetime.datetime(2026, 1, 1)) as dag,
        DatabricksWorkflowTaskGroup(group_id="flow", job_clusters=[SHARED], **group),
    ):
        a = notebook("a", emulator_duration=1)
        middle = notebook("b", **(b or {}))
        c = notebook("c", deferrable=False)
        a >> middle >> c
    return dag


def skipped_by_databricks(dag_id: str) -> DAG:
    """``c`` runs in Airflow after ``b`` failed (all_done) while Databricks skips it (run_if from task_config)."""
    with (
        DAG(dag_id, schedule=None, start_date=datetime.datetime(2026, 1, 1)) as dag,
        DatabricksWorkflowTaskGroup(group_id="flow", job_clusters=[SHARED]),
    ):
        b = notebook("b", emulator_result="FAILED")
        c = DatabricksTaskOperator(
            task_id="c", job_cluster_key="shared", trigger_rule="all_done", **FAST,
            task_config={"spark_python_task": {"python_file": "dbfs:/c.py"}, "run_if": "ALL_SUCCESS"},
        )
        b >> c
    return dag


# ---------------------------------------------------------------- the group

def test_a_group_is_one_job_and_one_run_per_dag_run(emulator: Emulator, airflow_db: None, dag_file: Any) -> None:
    expression = "three_tasks('wf_ok', notebook_params={'day': 'monday'})"
    first = dag_file("wf_ok", expression)
    assert set(first.states.values()) == {"success"}, first.output[-3000:]
    (job,) = job_list(emulator)
    assert job["settings"]["name"] == "wf_ok.flow"
    tasks = {t["task_key"]: t for t in job["settings"]["tasks"]}
    assert {k: [d["task_key"] for d in t.get("depends_on", [])] for k, t in tasks.items()} == {
        "a": [], "b": ["a"], "c": ["b"],
    }
    assert {t["job_cluster_key"] for t in tasks.values()} == {"shared"}
    assert tasks["b"]["notebook_task"]["base_parameters"] == {"day": "monday"}
    (run,) = emulator.runs()
    assert run["job_id"] == job["job_id"] and task_results(run) == {"a": "SUCCESS", "b": "SUCCESS", "c": "SUCCESS"}
    second = dag_file("wf_ok", expression, logical_date="2026-01-02")
    assert set(second.states.values()) == {"success"}
    assert len(job_list(emulator)) == 1  # the second DAG run reset the same job
    assert len(emulator.runs()) == 2
    assert emulator.counters["jobs_created"] == 1 and emulator.counters["jobs_reset"] == 1


def test_a_failed_task_fails_with_its_error_and_its_dependants_never_succeed(
    emulator: Emulator, airflow_db: None, dag_file: Any
) -> None:
    b = {"emulator_result": "FAILED", "emulator_error": "ValueError: 42 bad rows", "emulator_error_trace": "at line 7"}
    test = dag_file("wf_fail", f"three_tasks('wf_fail', b={b!r})")
    states = test.states
    assert states["flow.a"] == "success" and states["flow.b"] == "failed"
    assert states["flow.c"] in ("upstream_failed", "skipped")
    (run,) = emulator.runs()
    assert task_results(run) == {"a": "SUCCESS", "b": "FAILED", "c": "UPSTREAM_FAILED"}
    assert "- task b (FAILED): ValueError: 42 bad rows" in test.output and "at line 7" in test.output


def test_a_retry_of_a_failed_task_repairs_it_and_its_dependants_in_the_same_run(
    emulator: Emulator, airflow_db: None, dag_file: Any
) -> None:
    expression = (
        "three_tasks('wf_repair', b={'emulator_fail_attempts': 1, 'retries': 1, "
        "'retry_delay': datetime.timedelta(seconds=0)}, "
        "extra_job_params={'parameters': [{'name': 'region', 'default': 'eu'}]})"
    )
    test = dag_file("wf_repair", expression)
    assert set(test.states.values()) == {"success"}, test.output[-3000:]
    (run,) = emulator.runs()  # one job run: repaired, not replaced
    assert task_results(run) == {"a": "SUCCESS", "b": "SUCCESS", "c": "SUCCESS"}
    history = run["repair_history"]
    assert [item["type"] for item in history] == ["ORIGINAL", "REPAIR"]
    by_key = {t["task_key"]: t["run_id"] for t in run["tasks"]}
    assert set(history[1]["task_run_ids"]) == {by_key["b"], by_key["c"]}  # a was not rerun
    assert emulator.counters["repairs"] == 1 and emulator.counters["jobs_created"] == 1


def test_a_task_databricks_did_not_run_is_skipped_not_successful(
    emulator: Emulator, airflow_db: None, dag_file: Any
) -> None:
    test = dag_file("wf_skip", "skipped_by_databricks('wf_skip')")
    (run,) = emulator.runs()
    assert task_results(run)["c"] == "UPSTREAM_FAILED"
    assert test.states["flow.c"] == "skipped", test.output[-3000:]


# ---------------------------------------------------------------- the task operators alone


def test_a_notebook_operator_alone_submits_one_task_run_exactly_once(emulator: Emulator, try_context: Any) -> None:
    op = DatabricksNotebookOperator(task_id="alone", notebook_path="/Shared/alone", source="WORKSPACE",
                                    existing_cluster_id=CLUSTER, notebook_params={"emulator_output": "42"}, **FAST)
    emulator.lose_response_next("POST", "jobs/runs/submit")
    context = try_context()
    run_id = op.execute(context)
    (run,) = emulator.runs()
    assert run["run_id"] == run_id and run["run_type"] == "SUBMIT_RUN"
    assert [t["task_key"] for t in run["tasks"]] == ["alone"]
    assert run["tasks"][0]["notebook_task"]["base_parameters"] == {"emulator_output": "42"}
    assert context.xcom["notebook_output"] == "42"
    assert emulator.counters["idempotent_replays"] == 1


def test_a_task_operator_alone_defers_and_reports_its_failure(emulator: Emulator, try_context: Any) -> None:
    op = DatabricksTaskOperator(task_id="alone", existing_cluster_id=CLUSTER, deferrable=True, **FAST, task_config={
        "spark_python_task": {"python_file": "dbfs:/x.py", "parameters": ["emulator_result=FAILED",
                                                                            "emulator_error=boom"]}})
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(try_context())
    import asyncio

    async def fire() -> dict[str, Any]:
        (event,) = [event.payload async for event in deferred.value.trigger.run()]
        return dict(event)

    event = asyncio.run(fire())
    with pytest.raises(errors.DatabricksRunFailed, match="boom"):
        op.execute_complete(try_context(), event)


# ---------------------------------------------------------------- jobs as code


def test_create_jobs_creates_then_resets_the_same_job(emulator: Emulator, try_context: Any) -> None:
    def make(**settings: Any) -> DatabricksCreateJobsOperator:
        return DatabricksCreateJobsOperator(task_id="job", name="nightly", **settings, json={"tags": {"team": "data"}},
                                            databricks_retry_delay=0.01)

    tasks = [{"task_key": "a", "job_cluster_key": "shared", "notebook_task": {"notebook_path": "/a"}}]
    emulator.lose_response_next("POST", "jobs/create")  # created, answer lost: adopted, not created twice
    context = try_context()
    job_id = make(tasks=tasks, job_clusters=[SHARED]).execute(context)
    assert context.xcom["job_id"] == job_id
    again = make(tasks=[*tasks, {**tasks[0], "task_key": "b"}], job_clusters=[SHARED]).execute(try_context())
    (job,) = job_list(emulator)
    assert again == job_id == job["job_id"]
    assert [t["task_key"] for t in job["settings"]["tasks"]] == ["a", "b"]
    assert job["settings"]["tags"] == {"team": "data"}
    assert emulator.counters["jobs_created"] == 1 and emulator.counters["jobs_reset"] == 1


# ---------------------------------------------------------------- faults, retried launchers, kills


def test_lost_answers_and_throttling_across_the_launch_leave_one_job_and_one_run(
    emulator: Emulator, airflow_db: None, dag_file: Any
) -> None:
    emulator.lose_response_next("POST", "jobs/create")
    emulator.lose_response_next("POST", "jobs/run-now")
    emulator.fail_next("GET", "jobs/list", status=503)
    emulator.fail_next("GET", "jobs/runs/get", count=2, status=429, retry_after=0.1)
    test = dag_file("wf_faults", "three_tasks('wf_faults')")
    assert set(test.states.values()) == {"success"}, test.output[-3000:]
    assert len(job_list(emulator)) == 1
    (run,) = emulator.runs()
    assert task_results(run) == {"a": "SUCCESS", "b": "SUCCESS", "c": "SUCCESS"}
    assert emulator.counters["idempotent_replays"] == 1  # the run-now resent after its answer was lost


class GroupTry(dict):  # type: ignore[type-arg]
    """A task context for a group's task: tries by hand, XCom shared between the group's tasks."""

    def __init__(self, xcom: dict[tuple[str, str], Any], task_id: str, try_number: int = 1) -> None:
        from tests.integration.conftest import TryContext

        base = TryContext(try_number, task_id=task_id)
        ti = base["ti"]
        ti.dag_id = "wf_tries"
        ti.xcom_push = lambda key, value: xcom.__setitem__((task_id, key), value)
        ti.xcom_pull = lambda task_ids, key: xcom.get((task_ids, key))
        super().__init__(ti=ti, task_instance=ti)


def group_tasks() -> dict[str, Any]:
    with (
        DAG("wf_tries", schedule=None, start_date=datetime.datetime(2026, 1, 1)) as dag,
        DatabricksWorkflowTaskGroup(group_id="flow", job_clusters=[SHARED]),
    ):
        notebook("a", emulator_duration=600)
        notebook("b", emulator_duration=600)
    return dict(dag.task_dict)


def test_a_retried_launcher_reattaches_and_a_killed_task_cancels_only_its_task_run(emulator: Emulator) -> None:
    tasks = group_tasks()
    xcom: dict[tuple[str, str], Any] = {}
    launched = tasks["flow.launch"].execute(GroupTry(xcom, "flow.launch"))
    again = tasks["flow.launch"].execute(GroupTry(xcom, "flow.launch", try_number=2))
    assert again["run_id"] == launched["run_id"]
    assert len(emulator.runs()) == 1 and len(job_list(emulator)) == 1
    a = tasks["flow.a"]
    a._start(a._hook(), {}, GroupTry(xcom, "flow.a"))
    a.on_kill()  # a task's kill cancels its own task run only
    time.sleep(emulator.cancel_terminating_seconds + 0.2)
    states = {t["task_key"]: t["state"] for t in emulator.run(launched["run_id"])["tasks"]}
    assert states["a"]["result_state"] == "CANCELED"
    assert states["b"]["life_cycle_state"] in ("PENDING", "RUNNING")
    tasks["flow.launch"].on_kill()  # the launcher's kill cancels the whole run
    assert final_state(emulator, launched["run_id"]).result_state == "CANCELED"
    assert emulator.run(launched["run_id"])["tasks"][1]["state"]["result_state"] == "CANCELED"
