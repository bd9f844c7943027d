"""Seeded chaos for workflow groups: lost answers, 5xx, 429 and dropped connections across the
group's launch (find the job, create or reset it, run-now) and its tasks' waits, a retried
launcher and a triggerer restart; judged from the emulator's records: one job, one job run
per DAG run, no run left going, every task ending with its task run's outcome.

    pytest tests/chaos/test_workflow_chaos.py                       # 24 seeds
    CHAOS_WORKFLOW_SCENARIOS=200 pytest tests/chaos/test_workflow_chaos.py
    CHAOS_SEED=7 pytest tests/chaos/test_workflow_chaos.py           # one seed alone

A scenario is drawn from its seed alone; the group's tasks run in this process as Airflow's
tries would (the launcher first, then each task: in the worker, or deferred with its trigger
run here), sharing XCom as one DAG run does.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
import requests
from airflow.sdk import DAG

from airflow_dbx import errors
from airflow_dbx.operators import DatabricksNotebookOperator, DatabricksWorkflowTaskGroup
from tests import oracle
from tests.integration.conftest import TaskDeferred, TryContext

if TYPE_CHECKING:
    from airflow_dbx.emulator import Emulator

DAG_ID = "wf_chaos"
JOB_NAME = f"{DAG_ID}.flow"
SHARED = {"job_cluster_key": "shared", "new_cluster": {"spark_version": "15.4.x-scala2.12", "num_workers": 1}}
TRIGGER_BUDGET = 30.0  # seconds a trigger may take to fire before the scenario fails
# (kind, method, path): where a fault lands; "launch" ones hit the launcher, "wait" ones the tasks.
LAUNCH_FAULTS = (
    ("lost", "POST", "jobs/create"), ("lost", "POST", "jobs/reset"), ("lost", "POST", "jobs/run-now"),
    ("5xx", "GET", "jobs/list"), ("5xx", "POST", "jobs/run-now"), ("5xx", "POST", "jobs/create"),
    ("429", "GET", "jobs/list"), ("429", "POST", "jobs/run-now"), ("429", "POST", "jobs/reset"),
    ("drop", "POST", "jobs/run-now"), ("drop", "GET", "jobs/list"), ("drop", "POST", "jobs/create"),
)
WAIT_FAULTS = (
    ("5xx", "GET", "jobs/runs/get"), ("429", "GET", "jobs/runs/get"), ("drop", "GET", "jobs/runs/get"),
    ("lost", "GET", "jobs/runs/get"),
)
EVENTS = ("none", "launcher_retry", "triggerer_restart")


def _seeds() -> list[int]:
    if os.environ.get("CHAOS_SEED"):
        return [int(os.environ["CHAOS_SEED"])]
    return list(range(int(os.environ.get("CHAOS_WORKFLOW_SCENARIOS", "24"))))


@dataclass(frozen=True)
class Scenario:
    seed: int
    job_exists: bool  # an earlier DAG run made the job: the launcher resets it
    fail_b: bool  # task b fails in Databricks
    deferrable: frozenset[str]  # the tasks that wait in the triggerer
    event: str
    faults: tuple[tuple[str, str, str, int], ...]  # (kind, method, path, count)

    @classmethod
    def from_seed(cls, seed: int) -> Scenario:
        rng = random.Random(seed)
        job_exists = rng.random() < 0.4
        unused = "jobs/create" if job_exists else "jobs/reset"  # the launcher resets an existing job
        launch = [fault for fault in LAUNCH_FAULTS if fault[2] != unused]
        picked = rng.sample(launch, rng.randint(1, 3)) + rng.sample(WAIT_FAULTS, rng.randint(0, 2))
        # One fault per endpoint: two in a row could exceed the default retry limit, a failure
        # the task rightly reports rather than a broken invariant.
        picked = list({(method, path): (kind, method, path) for kind, method, path in picked}.values())
        return cls(
            seed=seed,
            job_exists=job_exists,
            fail_b=rng.random() < 0.3,
            deferrable=frozenset(t for t in ("a", "b", "c") if rng.random() < 0.5),
            event=rng.choice(EVENTS),
            faults=tuple((kind, method, path, rng.randint(1, 2)) for kind, method, path in picked),
        )


def group(scenario: Scenario) -> dict[str, Any]:
    """a, then b and c in parallel: the group's launcher and tasks by task id."""

    def notebook(task_id: str, **params: Any) -> DatabricksNotebookOperator:
        return DatabricksNotebookOperator(
            task_id=task_id, notebook_path=f"/Shared/{task_id}", source="WORKSPACE", job_cluster_key="shared",
            notebook_params={"emulator_duration": 2, **params}, polling_period_seconds=0.05,
            databricks_retry_delay=0.01, deferrable=task_id in scenario.deferrable,
        )

    with (
        DAG(DAG_ID, schedule=None, start_date=datetime.datetime(2026, 1, 1)) as dag,
        DatabricksWorkflowTaskGroup(group_id="flow", job_clusters=[SHARED]),
    ):
        b_params = {"emulator_result": "FAILED", "emulator_error": "ValueError: chaos"} if scenario.fail_b else {}
        a = notebook("a")
        a >> [notebook("b", **b_params), notebook("c")]
    return dict(dag.task_dict)


class Try(dict):  # type: ignore[type-arg]
    """A task context of the one DAG run: XCom shared by the group's tasks."""

    def __init__(self, xcom: dict[tuple[str, str], Any], task_id: str, try_number: int = 1) -> None:
        ti = TryContext(try_number, task_id=task_id)["ti"]
        ti.dag_id = DAG_ID
        ti.xcom_push = lambda key, value: xcom.__setitem__((task_id, key), value)
        ti.xcom_pull = lambda task_ids, key: xcom.get((task_ids, key))
        super().__init__(ti=ti, task_instance=ti)


def arm(emu: Emulator, kind: str, method: str, path: str, count: int) -> None:
    if kind == "lost":
        emu.lose_response_next(method, path, count=count)
    elif kind == "5xx":
        emu.fail_next(method, path, count=count, status=503)
    elif kind == "429":
        emu.fail_next(method, path, count=count, status=429, retry_after=0.05)
    else:
        emu.drop_next(method, path, count=count)


async def fire(trigger: Any, *, restart: bool) -> dict[str, Any]:
    """The trigger's one event; with ``restart``, its first run is stopped mid-wait, as a
    triggerer going down does, and a copy rebuilt from ``serialize()`` waits on."""
    if restart:
        first = asyncio.ensure_future(anext(trigger.run()))
        await asyncio.sleep(0.02)
        if not first.done():
            first.cancel()
            with_cancel = await asyncio.gather(first, return_exceptions=True)
            assert isinstance(with_cancel[0], asyncio.CancelledError), with_cancel
            _classpath, kwargs = trigger.serialize()
            trigger = type(trigger)(**kwargs)
        else:
            return dict(first.result().payload)
    event = await asyncio.wait_for(anext(trigger.run()), TRIGGER_BUDGET)
    return dict(event.payload)


def run_task(task: Any, context: Try, *, restart: bool) -> str:
    """The task's end as Airflow would record it: success, failed or skipped."""
    try:
        try:
            task.execute(context)
        except TaskDeferred as deferred:
            event = asyncio.run(fire(deferred.trigger, restart=restart))
            task.execute_complete(context, event)
    except errors.DatabricksRunFailed:
        return "failed"
    except Exception as exc:
        if type(exc).__name__ == "AirflowSkipException":
            return "skipped"
        raise
    return "success"


def jobs_named(emu: Emulator, name: str) -> list[dict[str, Any]]:
    answer = requests.get(f"{emu.url}/api/2.2/jobs/list", params={"name": name},
                          headers={"Authorization": f"Bearer {emu.token}"}, timeout=10)
    return list(answer.json().get("jobs", []))


@pytest.fixture
def emulator(emulator: Any, set_connection: Any) -> Any:
    set_connection("databricks_default", host=emulator.url, password=emulator.token)
    return emulator


@pytest.mark.parametrize("seed", _seeds())
def test_a_group_under_faults_makes_one_job_one_run_and_leaves_nothing_running(emulator: Any, seed: int) -> None:
    scenario = Scenario.from_seed(seed)
    replay = f"CHAOS_SEED={seed} pytest tests/chaos/test_workflow_chaos.py  ({scenario})"
    tasks = group(scenario)
    if scenario.job_exists:
        emulator.create_job({"name": JOB_NAME, "tasks": [
            {"task_key": "old", "existing_cluster_id": "c", "notebook_task": {"notebook_path": "/old"}}]})
    jobs_before = emulator.counters["jobs_created"]
    for kind, method, path, count in scenario.faults:
        arm(emulator, kind, method, path, count)
    xcom: dict[tuple[str, str], Any] = {}
    launcher = tasks["flow.launch"]
    launched = launcher.execute(Try(xcom, "flow.launch"))
    if scenario.event == "launcher_retry":  # its worker died after the launch: the next try reattaches
        assert launcher.execute(Try(xcom, "flow.launch", try_number=2))["run_id"] == launched["run_id"], replay

    restart = scenario.event == "triggerer_restart"
    ends = {"a": run_task(tasks["flow.a"], Try(xcom, "flow.a"), restart=restart)}
    for key in ("b", "c"):
        ends[key] = run_task(tasks[f"flow.{key}"], Try(xcom, f"flow.{key}"), restart=restart)

    assert sum(emulator.counters["faults"].values()) >= 1, f"no fault hit: {replay}"
    # The emulator's record: one job of the group's name, one job run, over.
    assert len(jobs_named(emulator, JOB_NAME)) == 1, replay
    assert emulator.counters["jobs_created"] - jobs_before == (0 if scenario.job_exists else 1), replay
    assert emulator.counters["runs_created"] == 1, replay
    (run,) = emulator.runs()
    over = oracle.finished(emulator, run["run_id"])
    assert oracle.is_over(over), f"run {run['run_id']} still {oracle.life_cycle(over)}: {replay}"
    results = {t["task_key"]: t["state"].get("result_state") for t in over["tasks"]}
    assert results == {"a": "SUCCESS", "b": "FAILED" if scenario.fail_b else "SUCCESS", "c": "SUCCESS"}, replay
    # Each Airflow task ended with its own task run's outcome.
    assert ends == {"a": "success", "b": "failed" if scenario.fail_b else "success", "c": "success"}, replay
