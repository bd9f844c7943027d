"""The guarantees beyond one machine: CeleryExecutor with two workers and two triggerers.

Redis is the broker, PostgreSQL the result backend and metadata database. The two workers are
separate process groups that name themselves in their task instances' ``hostname``, so a test
sees on which worker each try ran. These scenarios run before the LocalExecutor ones (whose
deployment then replaces this one) and in this file's order.
"""

from __future__ import annotations

import signal
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest

from .harness import CELERY_WORKERS, TRIGGERER_CAPACITY, WORKER_SLOTS
from .test_deployment import (
    all_deferred_and_picked_up,
    assert_retry_reattached,
    dbx_runs,
    finish,
    result,
    start,
    states,
    triggerer_of,
    waiting_in_worker,
)

if TYPE_CHECKING:
    from .harness import Deployment

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(600)]


def _cancel_requests(deployment: Deployment, since: int) -> list[dict[str, Any]]:
    return [r for r in deployment.emulator.requests_since(since) if r["path"].endswith("jobs/runs/cancel")]


def _outcomes(deployment: Deployment, dag_id: str, run_id: str) -> dict[str, str | None]:
    """Each task's one Databricks run's result (fails when a task has more than one run)."""
    runs = dbx_runs(deployment, dag_id, run_id)
    assert all(len(found) == 1 for found in runs.values()), runs
    return {task: result(found[0]) for task, found in runs.items()}


def _airflow_state(outcome: str | None) -> str:
    return {"SUCCESS": "success"}.get(outcome or "", "failed")


def test_twenty_deferred_runs_over_two_triggerers(celery_deployment: Deployment) -> None:
    """20 waits with four worker slots: all deferred at once, split over both triggerers, all correct."""
    deployment, dag_id, tasks = celery_deployment, "dbx_fan_out", 20
    since = deployment.emulator.request_count()
    most_deferred, most_busy, most_held = 0, 0, 0
    holders: Counter[int | None] = Counter()

    def watch(tis: dict[str, dict[str, Any]]) -> None:
        nonlocal most_deferred, most_busy, most_held
        deferred = [ti for ti in tis.values() if ti["state"] == "deferred"]
        held = [ti for ti in deferred if triggerer_of(ti) is not None]
        most_deferred = max(most_deferred, len(deferred))
        most_busy = max(most_busy, sum(ti["state"] == "running" for ti in tis.values()))
        if len(held) > most_held:
            most_held = len(held)
            holders.clear()
            holders.update(triggerer_of(ti) for ti in held)

    run_id = start(deployment, dag_id, {"duration": 60})
    finish(deployment, dag_id, run_id, timeout=420, watch=watch)
    outcomes = _outcomes(deployment, dag_id, run_id)
    assert outcomes == {f"run_{number:02d}": "SUCCESS" for number in range(tasks)}
    assert set(states(deployment, dag_id, run_id).values()) == {"success"}
    # Every task waited at the same time, more than the workers' slots could hold.
    assert most_deferred == tasks, f"at most {most_deferred} tasks were deferred at once"
    assert most_busy <= WORKER_SLOTS * len(CELERY_WORKERS)
    # Neither triggerer may hold more than its capacity, so both held some.
    assert most_held == tasks, f"at most {most_held} triggers were held at once"
    assert len(holders) == 2, holders
    assert max(holders.values()) <= TRIGGERER_CAPACITY, holders
    assert _cancel_requests(deployment, since) == []
    print(f"\n{tasks} deferred runs; triggers per triggerer at the peak: {sorted(holders.values())}")


def test_user_stop_cancels_only_that_run(celery_deployment: Deployment) -> None:
    """A user marks one of three deferred tasks failed: its run is cancelled once, the others go on."""
    deployment, dag_id, stopped = celery_deployment, "dbx_triggerer_handover", "succeeds_0"
    since = deployment.emulator.request_count()
    run_id = start(deployment, dag_id, {"duration": 40})
    deployment.wait_for(
        "three deferred tasks in the triggerers",
        lambda: all_deferred_and_picked_up(deployment, dag_id, run_id, 3),
        timeout=120,
    )
    deployment.api.set_state(dag_id, run_id, stopped, "failed")
    finish(deployment, dag_id, run_id, timeout=180)
    assert _outcomes(deployment, dag_id, run_id) == {"succeeds_0": "CANCELED", "succeeds_1": "SUCCESS",
                                                     "fails": "FAILED"}  # fmt: skip
    assert states(deployment, dag_id, run_id) == {"succeeds_0": "failed", "succeeds_1": "success", "fails": "failed"}
    cancels = _cancel_requests(deployment, since)
    assert [c["status"] for c in cancels] == [200], cancels


def test_triggerer_killed_other_takes_over(celery_deployment: Deployment) -> None:
    """SIGKILL the triggerer holding the most of ten waits: the other adopts them, none is cancelled,
    every task ends with its run's real outcome."""
    deployment, dag_id = celery_deployment, "dbx_triggerer_dies"
    since = deployment.emulator.request_count()
    run_id = start(deployment, dag_id, {"duration": 60})
    waiting = deployment.wait_for(
        "ten deferred tasks in the triggerers",
        lambda: all_deferred_and_picked_up(deployment, dag_id, run_id, 10),
        timeout=180,
    )
    held = Counter(triggerer_of(ti) for ti in waiting.values())
    victim_job, victim_count = held.most_common(1)[0]
    jobs = {job["id"]: job["hostname"] for job in deployment.api.alive_jobs("TriggererJob")}
    victim = jobs[victim_job]
    deployment.components[victim].stop(signal.SIGKILL)

    adopted: set[int | None] = set()

    def note(tis: dict[str, dict[str, Any]]) -> None:
        adopted.update(triggerer_of(ti) for ti in tis.values() if ti["state"] == "deferred")

    finish(deployment, dag_id, run_id, timeout=240, watch=note)
    survivors = adopted - {victim_job, None}
    assert len(survivors) == 1, (adopted, victim_job)
    expected = {f"wait_{n}": "FAILED" if n % 3 == 2 else "SUCCESS" for n in range(10)}
    assert _outcomes(deployment, dag_id, run_id) == expected
    assert states(deployment, dag_id, run_id) == {task: _airflow_state(r) for task, r in expected.items()}
    assert _cancel_requests(deployment, since) == []
    print(f"\nkilled {victim} holding {victim_count} of 10 triggers; the other took them over")
    deployment.start_airflow(victim, "triggerer", "--skip-serve-logs")


def test_worker_killed_retry_lands_on_the_other_worker(celery_deployment: Deployment) -> None:
    """The worker waiting on a run is SIGKILLed; the retry runs on the other worker and reattaches."""
    deployment, dag_id, task_id = celery_deployment, "dbx_worker_dies", "blocking_wait"
    run_id = start(deployment, dag_id, {"duration": 50})

    ti = deployment.wait_for(
        "the task to wait in a worker", lambda: waiting_in_worker(deployment, dag_id, run_id, task_id), timeout=120
    )
    first_worker = ti["hostname"]
    assert first_worker in CELERY_WORKERS, ti
    worker = deployment.components[first_worker]
    # Freeze the whole worker first, so no part of it sees another die (and cancels on its way out).
    worker.send(signal.SIGSTOP)
    worker.stop(signal.SIGKILL)

    tries = assert_retry_reattached(deployment, dag_id, run_id, task_id, timeout=240)
    (other,) = set(CELERY_WORKERS) - {first_worker}
    assert [t["hostname"] for t in tries] == [first_worker, other], tries
