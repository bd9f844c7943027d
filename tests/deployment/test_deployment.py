"""The point of the package, shown on a real deployment: one worker slot, a triggerer, Postgres.

Every DAG run is started and watched through Airflow's REST API, as a user would; what really
happened on the "workspace" is read from the emulator's admin API. The scenarios share one
deployment and run in this file's order.
"""

from __future__ import annotations

import itertools
import signal
import time
from typing import TYPE_CHECKING, Any

import psutil
import pytest

from .harness import wait_until

if TYPE_CHECKING:
    from collections.abc import Callable

    from .harness import Deployment

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(600)]

FINISHED = ("success", "failed")


# --------------------------------------------------------------------------- helpers


def start(deployment: Deployment, dag_id: str, conf: dict[str, Any] | None = None) -> str:
    """Wait for the DAG to be parsed, unpause it and start a run; returns the DAG run id."""
    wait_until(
        f"DAG {dag_id} to be parsed", lambda: deployment.api.dag(dag_id), timeout=90, diagnose=deployment.diagnose
    )
    deployment.api.unpause(dag_id)
    return deployment.api.trigger(dag_id, conf)


def finish(
    deployment: Deployment,
    dag_id: str,
    run_id: str,
    *,
    timeout: float,
    watch: Callable[[dict[str, dict[str, Any]]], None] | None = None,
) -> dict[str, Any]:
    """Poll the DAG run (and its task instances, for ``watch``) until it ends; returns the DAG run."""

    def ended() -> dict[str, Any] | None:
        if watch is not None:
            watch(deployment.api.task_instances(dag_id, run_id))
        run = deployment.api.dag_run(dag_id, run_id)
        return run if run["state"] in FINISHED else None

    return wait_until(f"DAG run {dag_id}/{run_id} to end", ended, timeout=timeout, diagnose=deployment.diagnose)


def states(deployment: Deployment, dag_id: str, run_id: str) -> dict[str, str | None]:
    return {task_id: ti["state"] for task_id, ti in deployment.api.task_instances(dag_id, run_id).items()}


def dbx_runs(deployment: Deployment, dag_id: str, run_id: str) -> dict[str, list[dict[str, Any]]]:
    """The emulator's runs of one DAG run, by task id (the DAGs name runs ``dag/run/task``)."""
    prefix = f"{dag_id}/{run_id}/"
    found: dict[str, list[dict[str, Any]]] = {}
    for run in sorted(deployment.emulator.runs(), key=lambda run: run["run_id"]):
        if run.get("run_name", "").startswith(prefix):
            found.setdefault(run["run_name"][len(prefix) :], []).append(run)
    return found


def result(run: dict[str, Any]) -> str | None:
    return (run.get("state") or {}).get("result_state")


def duration(dag_run: dict[str, Any]) -> float:
    from datetime import datetime

    start_date = datetime.fromisoformat(dag_run["start_date"])
    end_date = datetime.fromisoformat(dag_run["end_date"])
    return (end_date - start_date).total_seconds()


def all_deferred_and_picked_up(deployment: Deployment, dag_id: str, run_id: str, count: int) -> dict[str, Any] | None:
    """The task instances once ``count`` of them are deferred with a triggerer running their trigger."""
    tis = deployment.api.task_instances(dag_id, run_id)
    waiting = {t: ti for t, ti in tis.items() if ti["state"] == "deferred" and ti.get("triggerer_job")}
    return waiting if len(waiting) == count else None


def triggerer_of(ti: dict[str, Any]) -> int | None:
    job = ti.get("triggerer_job") or {}
    return job.get("id")


def assert_one_true_run_each(deployment: Deployment, dag_id: str, run_id: str, expected: dict[str, str]) -> None:
    """Each task ended as its single Databricks run did, and no run was cancelled."""
    runs = dbx_runs(deployment, dag_id, run_id)
    assert {task: len(found) for task, found in runs.items()} == dict.fromkeys(expected, 1), runs
    assert {task: result(found[0]) for task, found in runs.items()} == expected
    airflow_states = {"SUCCESS": "success", "FAILED": "failed"}
    assert states(deployment, dag_id, run_id) == {task: airflow_states[r] for task, r in expected.items()}


def waiting_in_worker(deployment: Deployment, dag_id: str, run_id: str, task_id: str) -> dict[str, Any] | None:
    """The task instance once it runs in a worker and its Databricks run is still going."""
    ti = deployment.api.task_instance(dag_id, run_id, task_id)
    runs = dbx_runs(deployment, dag_id, run_id).get(task_id, [])
    return ti if ti["state"] == "running" and ti.get("hostname") and runs and result(runs[0]) is None else None


def assert_retry_reattached(
    deployment: Deployment, dag_id: str, run_id: str, task_id: str, *, timeout: float
) -> list[dict[str, Any]]:
    """The DAG run succeeds: try 1 failed (its worker died), try 2 succeeded on the same single
    Databricks run, whose id is the task's XCom. Returns the tries."""
    dag_run = finish(deployment, dag_id, run_id, timeout=timeout)
    assert dag_run["state"] == "success", states(deployment, dag_id, run_id)
    runs = dbx_runs(deployment, dag_id, run_id)[task_id]
    assert len(runs) == 1 and result(runs[0]) == "SUCCESS", runs
    tries = deployment.api.tries(dag_id, run_id, task_id)
    assert [(t["try_number"], t["state"]) for t in tries] == [(1, "failed"), (2, "success")], tries
    assert deployment.api.xcom(dag_id, run_id, task_id, "run_id") == runs[0]["run_id"]
    return tries


# --------------------------------------------------------------------------- scenarios


def test_deployment_runs_a_standard_dag(deployment: Deployment) -> None:
    """The deployment itself works: a deferrable standard sensor and a PythonOperator."""
    run_id = start(deployment, "deploy_smoke")
    dag_run = finish(deployment, "deploy_smoke", run_id, timeout=120)
    assert dag_run["state"] == "success", states(deployment, "deploy_smoke", run_id)


def test_deferred_tasks_hold_no_worker_slot(deployment: Deployment) -> None:
    """One worker slot, five deferrable tasks: all five wait at once and the DAG takes about one run.

    The same tasks with ``deferrable=False`` hold the slot while they wait, so they run one
    after the other (shorter runs, fewer tasks, to save time: the contrast is what counts).
    """
    dag_id, run_seconds, tasks = "dbx_parallel_deferrable", 30, 5
    most_deferred = 0

    def count_deferred(tis: dict[str, dict[str, Any]]) -> None:
        nonlocal most_deferred
        most_deferred = max(most_deferred, sum(ti["state"] == "deferred" for ti in tis.values()))

    run_id = start(deployment, dag_id, {"duration": run_seconds})
    dag_run = finish(deployment, dag_id, run_id, timeout=240, watch=count_deferred)
    took = duration(dag_run)
    assert dag_run["state"] == "success", states(deployment, dag_id, run_id)
    assert most_deferred == tasks, f"at most {most_deferred} tasks were deferred at the same time"
    runs = [found[0] for found in dbx_runs(deployment, dag_id, run_id).values()]
    assert len(runs) == tasks and all(result(run) == "SUCCESS" for run in runs), runs
    # The runs overlapped in the workspace: every one had started before the first one ended.
    assert max(run["start_time"] for run in runs) < min(run["end_time"] for run in runs), runs
    assert took < 2 * run_seconds, f"{tasks} deferrable runs of {run_seconds}s took {took:.0f}s"

    blocking_id, blocking_seconds, blocking_tasks = "dbx_parallel_blocking", 10, 3
    blocking_run_id = start(deployment, blocking_id, {"duration": blocking_seconds})
    most_running = 0

    def count_running(tis: dict[str, dict[str, Any]]) -> None:
        nonlocal most_running
        most_running = max(most_running, sum(ti["state"] == "running" for ti in tis.values()))

    blocking = finish(deployment, blocking_id, blocking_run_id, timeout=240, watch=count_running)
    blocking_took = duration(blocking)
    assert blocking["state"] == "success", states(deployment, blocking_id, blocking_run_id)
    assert most_running == 1
    serial = sorted((found[0] for found in dbx_runs(deployment, blocking_id, blocking_run_id).values()),
                    key=lambda run: run["start_time"])  # fmt: skip
    assert len(serial) == blocking_tasks
    # Each run started only after the previous one ended: the slot was held while waiting.
    assert all(later["start_time"] >= earlier["end_time"] for earlier, later in itertools.pairwise(serial)), serial
    assert blocking_took >= blocking_tasks * blocking_seconds
    print(
        f"\n{tasks} deferrable tasks x {run_seconds}s runs: {took:.1f}s; "
        f"{blocking_tasks} non-deferrable tasks x {blocking_seconds}s runs: {blocking_took:.1f}s"
    )
    deployment.results["parallel_run_id"] = run_id


def test_extra_link_gives_the_run_page(deployment: Deployment) -> None:
    """The "Databricks run" link of a finished task, read through the REST API, is its run page."""
    run_id = deployment.results["parallel_run_id"]
    runs = dbx_runs(deployment, "dbx_parallel_deferrable", run_id)
    links = deployment.api.links("dbx_parallel_deferrable", run_id, "run_0")
    expected = runs["run_0"][0]["run_page_url"]
    assert links["extra_links"] == {"Databricks run": expected}
    assert expected.startswith(deployment.emulator_url)
    assert deployment.api.xcom("dbx_parallel_deferrable", run_id, "run_0", "run_page_url") == expected


def test_triggerer_killed_and_restarted(deployment: Deployment) -> None:
    """SIGKILL the triggerer while runs wait, start it again: every task ends as its run did."""
    dag_id = "dbx_triggerer_handover"
    run_id = start(deployment, dag_id, {"duration": 25})
    waiting = wait_until(
        "three deferred tasks in the triggerer",
        lambda: all_deferred_and_picked_up(deployment, dag_id, run_id, 3),
        timeout=90,
        diagnose=deployment.diagnose,
    )
    old_jobs = {triggerer_of(ti) for ti in waiting.values()}
    deployment.components["triggerer"].stop(signal.SIGKILL)
    assert all(ti["state"] == "deferred" for ti in deployment.api.task_instances(dag_id, run_id).values())
    deployment.start_airflow("triggerer", "triggerer", "--skip-serve-logs")

    adopted: set[int | None] = set()

    def note_triggerers(tis: dict[str, dict[str, Any]]) -> None:
        adopted.update(triggerer_of(ti) for ti in tis.values() if ti["state"] == "deferred")

    finish(deployment, dag_id, run_id, timeout=120, watch=note_triggerers)
    assert adopted - old_jobs - {None}, "no new triggerer took over the triggers before the runs ended"
    assert_one_true_run_each(deployment, dag_id, run_id, {"succeeds_0": "SUCCESS", "succeeds_1": "SUCCESS",
                                                          "fails": "FAILED"})  # fmt: skip


def test_second_triggerer_takes_over(deployment: Deployment) -> None:
    """Two triggerers; SIGTERM the one running the triggers: the other takes them over.

    The runs outlast the first triggerer's graceful stop (it waits for its triggers to clean up,
    about 20 s seen on a busy machine) and the second one's start."""
    dag_id = "dbx_triggerer_handover"
    run_id = start(deployment, dag_id, {"duration": 50})
    waiting = wait_until(
        "three deferred tasks in the triggerer",
        lambda: all_deferred_and_picked_up(deployment, dag_id, run_id, 3),
        timeout=90,
        diagnose=deployment.diagnose,
    )
    first_jobs = {triggerer_of(ti) for ti in waiting.values()}
    assert len(first_jobs) == 1
    deployment.start_airflow("triggerer-2", "triggerer", "--skip-serve-logs")
    wait_until(
        "two live triggerers",
        lambda: len(deployment.api.alive_jobs("TriggererJob")) == 2,
        timeout=60,
        diagnose=deployment.diagnose,
    )
    # A graceful stop, as a service manager would ask it: SIGTERM to the triggerer process.
    first = deployment.components["triggerer"]
    first.send(signal.SIGTERM, group=False)
    wait_until("the first triggerer to exit", lambda: not first.alive(), timeout=60, diagnose=deployment.diagnose)
    first.stop(signal.SIGKILL)
    # Back to one triggerer under the usual name, for the scenarios that follow (even if this fails).
    deployment.components["triggerer"] = deployment.components.pop("triggerer-2")

    adopted: set[int | None] = set()

    def note_triggerers(tis: dict[str, dict[str, Any]]) -> None:
        adopted.update(triggerer_of(ti) for ti in tis.values() if ti["state"] == "deferred")

    finish(deployment, dag_id, run_id, timeout=120, watch=note_triggerers)
    assert adopted - first_jobs - {None}, "the second triggerer never took the triggers over"
    assert_one_true_run_each(deployment, dag_id, run_id, {"succeeds_0": "SUCCESS", "succeeds_1": "SUCCESS",
                                                          "fails": "FAILED"})  # fmt: skip


def test_marking_a_deferred_task_failed_cancels_its_run(deployment: Deployment) -> None:
    """A user marks the waiting task failed: its run is cancelled. Cleared, it starts a fresh run."""
    dag_id, task_id = "dbx_user_stop", "long_run"
    run_id = start(deployment, dag_id)
    wait_until(
        "the task to wait in the triggerer",
        lambda: all_deferred_and_picked_up(deployment, dag_id, run_id, 1),
        timeout=90,
        diagnose=deployment.diagnose,
    )
    time.sleep(2)  # let the trigger poll once: it is really waiting on the run
    since = deployment.emulator.request_count()
    deployment.api.set_state(dag_id, run_id, task_id, "failed")

    def cancelled() -> dict[str, Any] | None:
        runs = dbx_runs(deployment, dag_id, run_id).get(task_id, [])
        return runs[0] if runs and result(runs[0]) == "CANCELED" else None

    # The trigger's on_kill first asks the task's state (the triggerer's first such call is slow).
    first = wait_until("the Databricks run to be cancelled", cancelled, timeout=60, diagnose=deployment.diagnose)
    cancels = [r for r in deployment.emulator.requests_since(since) if r["path"].endswith("/jobs/runs/cancel")]
    assert len(cancels) == 1, cancels
    assert states(deployment, dag_id, run_id) == {task_id: "failed"}

    deployment.api.clear(dag_id, run_id, [task_id])
    dag_run = finish(deployment, dag_id, run_id, timeout=120)
    assert dag_run["state"] == "success", states(deployment, dag_id, run_id)
    runs = dbx_runs(deployment, dag_id, run_id)[task_id]
    assert [run["run_id"] for run in runs][:1] == [first["run_id"]]
    # The cancelled run stays cancelled; the new try, finding it ended unsuccessfully, started a fresh run.
    assert [result(run) for run in runs] == ["CANCELED", "SUCCESS"], runs
    tries = deployment.api.tries(dag_id, run_id, task_id)
    assert [(t["try_number"], t["state"]) for t in tries] == [(1, "failed"), (2, "success")], tries
    assert deployment.api.xcom(dag_id, run_id, task_id, "run_id") == runs[1]["run_id"]


def _task_processes(ti_id: str) -> list[psutil.Process]:
    """The LocalExecutor worker supervising a task instance and the task process it forked.

    Their process titles are ``airflow worker -- LocalExecutor: <ti id>`` and ``airflow worker -- <ti id>``.
    """
    found = []
    for process in psutil.process_iter(["cmdline"]):
        command = " ".join(process.info["cmdline"] or ())
        if command.startswith("airflow worker --") and ti_id in command:
            found.append(process)
    return found


def test_worker_killed_retry_reattaches(deployment: Deployment) -> None:
    """The worker waiting on a run dies (SIGKILL); the task's retry reattaches to the same run."""
    dag_id, task_id = "dbx_worker_dies", "blocking_wait"
    run_id = start(deployment, dag_id, {"duration": 40})

    waiting = lambda: waiting_in_worker(deployment, dag_id, run_id, task_id)  # noqa: E731
    ti = deployment.wait_for("the task to wait in the worker", waiting, timeout=90)
    time.sleep(2)
    processes = _task_processes(ti["id"])
    assert len(processes) == 2, [p.info["cmdline"] for p in processes]
    # Freeze both first, so neither sees the other die (and, say, cancels the run on its way out).
    for process in processes:
        process.send_signal(signal.SIGSTOP)
    for process in processes:
        process.send_signal(signal.SIGKILL)

    assert_retry_reattached(deployment, dag_id, run_id, task_id, timeout=180)


def test_clearing_a_failed_workflow_task_repairs_the_same_job_run(deployment: Deployment) -> None:
    """One task of a workflow group fails; the user clears it through the REST API (with its
    downstream task, as the UI's Clear does): the group's one job run is repaired, not replaced."""
    dag_id = "dbx_workflow_repair"
    since = deployment.emulator.request_count()
    run_id = start(deployment, dag_id)
    dag_run = finish(deployment, dag_id, run_id, timeout=180)
    assert dag_run["state"] == "failed"
    assert states(deployment, dag_id, run_id) == {
        "flow.launch": "success", "flow.a": "success", "flow.b": "failed", "flow.c": "upstream_failed",
    }

    deployment.api.clear(dag_id, run_id, ["flow.b"], include_downstream=True)
    dag_run = finish(deployment, dag_id, run_id, timeout=180)
    assert dag_run["state"] == "success", states(deployment, dag_id, run_id)
    (job_run,) = deployment.emulator.runs_named(f"{dag_id}.flow")  # exactly one job run
    assert [item["type"] for item in job_run["repair_history"]] == ["ORIGINAL", "REPAIR"]
    assert {t["task_key"]: result(t) for t in job_run["tasks"]} == {"a": "SUCCESS", "b": "SUCCESS", "c": "SUCCESS"}
    posts = [r["path"] for r in deployment.emulator.requests_since(since) if r["method"] == "POST"]
    assert sum(path.endswith("jobs/create") for path in posts) == 1  # no second job
    assert sum(path.endswith("jobs/run-now") for path in posts) == 1
    assert sum(path.endswith("jobs/runs/repair") for path in posts) == 1
    assert deployment.api.xcom(dag_id, run_id, "flow.b", "run_page_url").endswith(
        f"/runs/{next(t['run_id'] for t in job_run['tasks'] if t['task_key'] == 'b')}"
    )
