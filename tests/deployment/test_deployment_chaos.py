"""Seeded chaos through the real deployment: no stand-in for Airflow anywhere.

Four deferred tasks wait on Databricks runs while the emulator answers with 5xx bursts,
dropped connections, lost answers and 429s, the triggerer is killed and started again, and a
user marks one task failed. The trigger's cancel path reads the task's state through the Task
SDK from the real triggerer (on Airflow 3.1 and 3.2 that lookup alone decides whether to
cancel). Every verdict comes from the emulator's own records: its runs as raw JSON and its
request log.

``AIRFLOW_DBX_DEPLOYMENT_CHAOS_SEED=N`` replays one plan; the default seed is fixed, so a run
on CI is repeatable.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pytest

from .test_deployment import all_deferred_and_picked_up, dbx_runs, finish, result, start, triggerer_of

if TYPE_CHECKING:
    from .harness import Deployment

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(600)]

DAG_ID = "dbx_deploy_chaos"
TASKS = [f"chain_{number}" for number in range(4)]
# Long enough that every run outlives the faults, the restart and the stop; the stopped task's
# run would go on for ten minutes if nobody cancelled it.
STOPPED_RUN_SECONDS = 600
# A cancel may follow the user's stop by this much: the triggerer's first state lookup is slow.
CANCEL_SLACK_SECONDS = 45
TERMINAL = ("TERMINATED", "INTERNAL_ERROR", "SKIPPED")
SERVER_ERRORS = (500, 502, 503, 504)


@dataclass(frozen=True)
class Plan:
    """What one seed decides: each task's run, the stopped task and the faults of each wave."""

    seed: int
    runs: dict[str, dict[str, str]]
    stopped: str
    submit_faults: list[dict[str, Any]]
    poll_faults: list[dict[str, Any]]
    after_restart_faults: list[dict[str, Any]]
    cancel_faults: list[dict[str, Any]]

    @classmethod
    def draw(cls, seed: int) -> Plan:
        rng = random.Random(seed)
        stopped = rng.choice(TASKS)
        others = [task for task in TASKS if task != stopped]
        results = ["SUCCESS", "FAILED", rng.choice(["SUCCESS", "FAILED"])]
        rng.shuffle(results)
        runs = {
            task: {"duration": str(rng.randint(80, 110)), "result": res}
            for task, res in zip(others, results, strict=True)
        }
        runs[stopped] = {"duration": str(STOPPED_RUN_SECONDS), "result": "SUCCESS"}
        # At most two faults in a row for any one request: the default retry limit (3 attempts)
        # rides each wave out, so every task must end with its run's real outcome.
        submit_faults = [
            {"kind": "lose_response", "method": "POST", "path": "jobs/runs/submit"},
            {"kind": "status", "method": "POST", "path": "jobs/runs/submit", "status": rng.choice(SERVER_ERRORS)},
        ]
        rng.shuffle(submit_faults)
        poll_faults = [
            {"kind": "status", "method": "GET", "path": "jobs/runs/get", "status": rng.choice(SERVER_ERRORS)},
            {"kind": rng.choice(["drop", "lose_response"]), "method": "GET", "path": "jobs/runs/get"},
        ]
        rng.shuffle(poll_faults)
        after_restart_faults = [
            {"kind": "status", "method": "GET", "path": "jobs/runs/get", "status": 429, "retry_after": 1,
             "retry_after_format": rng.choice(["seconds", "http-date"]), "count": 2},
        ]  # fmt: skip
        cancel_faults = [{"kind": "status", "method": "POST", "path": "jobs/runs/cancel", "status": 503}]
        return cls(seed, runs, stopped, submit_faults, poll_faults, after_restart_faults, cancel_faults)


def _seed() -> int:
    return int(os.environ.get("AIRFLOW_DBX_DEPLOYMENT_CHAOS_SEED", "1801"))


def _inject(deployment: Deployment, faults: list[dict[str, Any]]) -> None:
    for fault in faults:
        deployment.emulator.add_fault(fault)


def _wait_consumed(deployment: Deployment, what: str) -> None:
    deployment.wait_for(f"the {what} faults to be met", lambda: not deployment.emulator.faults(), timeout=120)


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def test_seeded_chaos_through_the_deployment(deployment: Deployment) -> None:
    plan = Plan.draw(_seed())
    print(f"\ndeployment chaos seed {plan.seed}: stop {plan.stopped}, runs {plan.runs}")
    emulator = deployment.emulator
    since = emulator.request_count()
    try:
        _inject(deployment, plan.submit_faults)
        run_id = start(deployment, DAG_ID, {"plan": plan.runs})
        waiting = deployment.wait_for(
            "every chaos task deferred in the triggerer",
            lambda: all_deferred_and_picked_up(deployment, DAG_ID, run_id, len(TASKS)),
            timeout=180,
        )
        _wait_consumed(deployment, "submit")
        _inject(deployment, plan.poll_faults)
        _wait_consumed(deployment, "polling")

        old_jobs = {triggerer_of(ti) for ti in waiting.values()}
        for name in [name for name in deployment.components if name.startswith("triggerer")]:
            deployment.components[name].stop(signal.SIGKILL)
        _inject(deployment, plan.after_restart_faults)
        restarted = time.time()
        deployment.start_airflow("triggerer", "triggerer", "--skip-serve-logs")

        def adopted() -> dict[str, Any] | None:
            """Every task deferred to the new triggerer, or already ended after the restart (on a
            slow machine a run can end before the new triggerer is seen holding its trigger)."""
            tis = deployment.api.task_instances(DAG_ID, run_id)
            for ti in tis.values():
                if ti["state"] == "deferred":
                    if not ti.get("triggerer_job") or triggerer_of(ti) in old_jobs:
                        return None
                elif ti["state"] not in ("success", "failed") or _epoch(ti["end_date"]) < restarted:
                    return None
            return tis if len(tis) == len(TASKS) and tis[plan.stopped]["state"] == "deferred" else None

        deployment.wait_for("the new triggerer to adopt every trigger", adopted, timeout=120)
        _wait_consumed(deployment, "rate limit")

        _inject(deployment, plan.cancel_faults)
        time.sleep(3)  # the adopted trigger polls once before the user acts
        deployment.api.set_state(DAG_ID, run_id, plan.stopped, "failed")
        finish(deployment, DAG_ID, run_id, timeout=300)
        _check_invariants(deployment, plan, run_id, since)
    finally:
        emulator.clear_faults()


def _check_invariants(deployment: Deployment, plan: Plan, run_id: str, since: int) -> None:
    runs = dbx_runs(deployment, DAG_ID, run_id)
    tis = deployment.api.task_instances(DAG_ID, run_id)
    # One Databricks run per task: no lost answer or retried POST started a second one.
    assert {task: len(found) for task, found in runs.items()} == dict.fromkeys(TASKS, 1), runs
    for task, (run,) in runs.items():
        ti = tis[task]
        expected = "CANCELED" if task == plan.stopped else plan.runs[task]["result"]
        assert result(run) == expected, (task, run["state"])
        assert ti["state"] == ("success" if expected == "SUCCESS" else "failed"), (task, ti["state"])
        # No run outlived its task: it had ended when the task did (the stopped one within the slack).
        assert run["state"]["life_cycle_state"] in TERMINAL, (task, run["state"])
        slack = CANCEL_SLACK_SECONDS if task == plan.stopped else 1
        assert run["end_time"] / 1000 <= _epoch(ti["end_date"]) + slack, (task, run["end_time"], ti["end_date"])
    # Cancelled exactly once, exactly the run the user stopped: one answered cancel, after the 503.
    requests = deployment.emulator.requests_since(since)
    cancels = [(r["status"], r["fault"]) for r in requests if r["path"].endswith("jobs/runs/cancel")]
    assert cancels == [(503, "status"), (200, None)], cancels
    # Every injected fault was met by a request of the scenario.
    faults = Counter(r["fault"] for r in requests if r["fault"])
    assert faults["status"] == 5 and faults["lose_response"] >= 1, faults
