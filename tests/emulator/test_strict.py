"""The emulator refuses what Databricks refuses and shows the states Databricks shows.

Each test here failed against the emulator's earlier, lenient behaviour.
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_dbx.emulator import Emulator
from tests.emulator.conftest import Api, Clock, notebook, task

DAY = 24 * 3600.0


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def stepped(clock: Clock) -> Any:
    """An emulator on a hand-stepped clock, time scale 1 (a task's default 2 s run takes 2 s)."""
    with Emulator(clock=clock, cancel_terminating_seconds=1.0) as emulator:
        yield emulator


def states(run: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
    return {t["task_key"]: (t["state"]["life_cycle_state"], t["state"].get("result_state")) for t in run["tasks"]}


def error_of(response: Any) -> tuple[int, str]:
    return response.status_code, response.json()["error_code"]


# ---------------------------------------------------------------- 1. get-output of a multi-task run


def test_get_output_of_a_multi_task_job_run_is_refused_but_each_task_run_answers(emu: Emulator, api: Api) -> None:
    job = emu.create_job({"name": "two", "tasks": [task("a", emulator_output="A"), task("b", "a")]})
    run = api.wait(api.ok(api.post("jobs/run-now", {"job_id": job}))["run_id"])
    for version in ("2.1", "2.2"):
        refused = Api(emu, version).get("jobs/runs/get-output", run_id=run["run_id"])
        assert error_of(refused) == (400, "INVALID_PARAMETER_VALUE")
        assert "output of each individual task run" in refused.json()["message"]
    by_key = {t["task_key"]: t["run_id"] for t in run["tasks"]}
    assert api.ok(api.get("jobs/runs/get-output", run_id=by_key["a"]))["notebook_output"]["result"] == "A"


# ---------------------------------------------------------------- 2. cancel of a task run


def test_cancelling_a_task_run_cancels_that_task_only(stepped: Emulator, clock: Clock) -> None:
    api = Api(stepped)
    run_id = api.submit(
        {
            "run_name": "branches",
            "tasks": [task("a", emulator_duration=10), task("b", emulator_duration=10), task("c", "a")],
        }
    )
    clock.now += 2  # setup 0.3 + pending 0.2: a and b are RUNNING
    ids = {t["task_key"]: t["run_id"] for t in api.run(run_id)["tasks"]}
    assert api.ok(api.post("jobs/runs/cancel", {"run_id": ids["a"]})) == {}
    run = api.run(run_id)
    assert states(run) == {"a": ("TERMINATING", None), "b": ("RUNNING", None), "c": ("BLOCKED", None)}
    assert run["state"]["life_cycle_state"] == "RUNNING"
    clock.now += 1.5
    assert states(api.run(run_id)) == {
        "a": ("TERMINATED", "CANCELED"),
        "b": ("RUNNING", None),
        "c": ("SKIPPED", "UPSTREAM_CANCELED"),
    }
    clock.now += 20
    run = api.run(run_id)
    assert states(run)["b"] == ("TERMINATED", "SUCCESS")  # the other branch ran to its end
    assert run["state"]["result_state"] == "CANCELED"
    assert stepped.counters["cancels"] == 1


# ---------------------------------------------------------------- 3. jobs/list name filter


def test_jobs_list_name_is_exact_but_case_insensitive(emu: Emulator, api: Api) -> None:
    wanted = emu.create_job({"name": "Nightly-ETL", "tasks": [task("a")]})
    emu.create_job({"name": "Nightly-ETL-2", "tasks": [task("a")]})
    emu.create_job({"name": "nightly", "tasks": [task("a")]})
    found = api.ok(api.get("jobs/list", name="nightly-etl"))
    assert [j["job_id"] for j in found["jobs"]] == [wanted]
    assert "jobs" not in api.ok(api.get("jobs/list", name="nightly-et"))


# ---------------------------------------------------------------- 4. idempotency tokens and retention


def test_the_token_of_a_deleted_run_is_an_error_then_forgotten(stepped: Emulator, clock: Clock) -> None:
    api = Api(stepped)
    body = {"run_name": "once", "idempotency_token": "tok-1", "notebook_task": notebook()}
    run_id = api.submit(body)
    assert error_of(api.post("jobs/runs/delete", {"run_id": run_id})) == (400, "INVALID_STATE")  # still active
    clock.now += 10
    assert api.ok(api.post("jobs/runs/delete", {"run_id": run_id})) == {}
    assert error_of(api.get("jobs/runs/get", run_id=run_id)) == (400, "INVALID_PARAMETER_VALUE")
    replay = api.post("jobs/runs/submit", body)
    assert error_of(replay) == (400, "INVALID_PARAMETER_VALUE")
    assert "deleted" in replay.json()["message"]
    assert stepped.counters["runs_created"] == 1
    clock.now += 61 * DAY  # past the run's 60-day retention: the token is forgotten
    assert api.submit(body) != run_id
    assert stepped.counters["runs_created"] == 2


def test_runs_expire_after_60_days_with_their_tokens(stepped: Emulator, clock: Clock) -> None:
    api = Api(stepped)
    body = {"run_name": "old", "idempotency_token": "tok-2", "notebook_task": notebook()}
    first = api.submit(body)
    task_run = api.run(first)["tasks"][0]["run_id"]
    clock.now += 59 * DAY
    assert api.submit(body) == first  # still honoured within the retention period
    clock.now += 2 * DAY
    for run_id in (first, task_run):
        assert error_of(api.get("jobs/runs/get", run_id=run_id)) == (400, "INVALID_PARAMETER_VALUE")
    assert "runs" not in api.ok(api.get("jobs/runs/list"))
    second = api.submit(body)
    assert second != first
    assert [r["run_id"] for r in stepped.runs()] == [second]


# ---------------------------------------------------------------- 5. repair_history on the first page only


def test_repair_history_and_job_parameters_only_on_the_first_page(emu: Emulator, api: Api) -> None:
    tasks = [task(f"t{i:03}", emulator_fail_attempts=1 if i == 0 else 0, emulator_duration=0) for i in range(150)]
    job = emu.create_job({"name": "wide", "parameters": [{"name": "day", "default": "mon"}], "tasks": tasks})
    run_id = api.ok(api.post("jobs/run-now", {"job_id": job}))["run_id"]
    api.wait(run_id)
    api.ok(api.post("jobs/runs/repair", {"run_id": run_id, "rerun_tasks": ["t000"]}))
    first = api.wait(run_id, include_history="true")
    assert len(first["repair_history"]) == 2 and first["job_parameters"][0]["name"] == "day"
    second = api.run(run_id, include_history="true", page_token=first["next_page_token"])
    assert len(second["tasks"]) == 50
    assert "repair_history" not in second and "job_parameters" not in second


# ---------------------------------------------------------------- 6. QUEUED, SKIPPED, WAITING_FOR_RETRY, DISABLED


def test_a_run_over_the_limit_is_queued_when_the_job_queues(stepped: Emulator, clock: Clock) -> None:
    api = Api(stepped)
    job = stepped.create_job({"name": "q", "queue": {"enabled": True}, "tasks": [task("a", emulator_duration=10)]})
    first, second, third = (api.ok(api.post("jobs/run-now", {"job_id": job}))["run_id"] for _ in range(3))
    queued = api.run(second)
    assert queued["state"]["life_cycle_state"] == "QUEUED" and queued["status"]["state"] == "QUEUED"
    assert queued["status"]["queue_details"]["code"] == "MAX_CONCURRENT_RUNS_REACHED"
    assert states(queued) == {"a": ("QUEUED", None)}
    clock.now += 5
    api.ok(api.post("jobs/runs/cancel", {"run_id": first}))  # frees the slot once its cancel ends
    clock.now += 1.1
    assert api.run(second)["state"]["life_cycle_state"] in ("PENDING", "RUNNING")
    assert api.run(third)["state"]["life_cycle_state"] == "QUEUED"  # first in, first out
    clock.now += 11
    assert api.run(second)["state"]["result_state"] == "SUCCESS"
    assert api.run(third)["status"]["state"] in ("PENDING", "RUNNING")
    assert api.run(third)["queue_duration"] > 0


def test_a_run_over_the_limit_is_skipped_when_the_job_does_not_queue(stepped: Emulator, clock: Clock) -> None:
    api = Api(stepped)
    job = stepped.create_job({"name": "s", "tasks": [task("a", emulator_duration=10)]})  # max_concurrent_runs 1
    first = api.ok(api.post("jobs/run-now", {"job_id": job}))["run_id"]
    skipped = api.run(api.ok(api.post("jobs/run-now", {"job_id": job}))["run_id"])
    assert skipped["state"]["life_cycle_state"] == "SKIPPED"
    assert skipped["state"]["result_state"] == "MAXIMUM_CONCURRENT_RUNS_REACHED"
    assert skipped["status"]["state"] == "TERMINATED"
    assert skipped["status"]["termination_details"]["code"] == "MAX_CONCURRENT_RUNS_EXCEEDED"
    assert api.run(first)["status"]["state"] != "TERMINATED"
    queued = api.ok(api.post("jobs/run-now", {"job_id": job, "queue": {"enabled": True}}))["run_id"]
    assert api.run(queued)["status"]["state"] == "QUEUED"  # the run-now's queue setting wins
    clock.now += 20
    assert api.run(first)["state"]["result_state"] == "SUCCESS"
    assert api.ok(api.post("jobs/run-now", {"job_id": job}))["run_id"]  # a slot again (the queued run ran)
    assert error_of(api.post("jobs/create", {"name": "x", "max_concurrent_runs": 1001})) == (
        400,
        "INVALID_PARAMETER_VALUE",
    )


def test_a_failed_task_waits_for_retry_then_retries(stepped: Emulator, clock: Clock) -> None:
    api = Api(stepped)
    spec = task("flaky", emulator_fail_attempts=1, emulator_error="boom", emulator_duration=2)
    spec.update(max_retries=2, min_retry_interval_millis=5000)
    run_id = api.submit({"run_name": "retry", "tasks": [spec]})
    clock.now += 3.0  # attempt 0 failed at 2.5 and ended at 2.7
    run = api.run(run_id)
    [waiting] = run["tasks"]
    assert waiting["attempt_number"] == 1 and waiting["state"]["life_cycle_state"] == "WAITING_FOR_RETRY"
    assert waiting["status"]["state"] == "WAITING"
    assert run["state"]["life_cycle_state"] == "RUNNING"
    clock.now += 10
    run = api.run(run_id, include_history="true")
    [retried] = run["tasks"]
    assert retried["attempt_number"] == 1 and retried["state"]["result_state"] == "SUCCESS"
    assert run["state"]["result_state"] == "SUCCESS"
    [original] = run["repair_history"]
    failed_attempt = original["task_run_ids"][0]
    output = api.ok(api.get("jobs/runs/get-output", run_id=failed_attempt))
    assert output["error"] == "boom" and output["metadata"]["attempt_number"] == 0


def test_retries_stop_at_max_retries(api: Api) -> None:
    spec = task("bad", emulator_result="FAILED", emulator_duration=0)
    spec["max_retries"] = 2
    run = api.wait(api.submit({"run_name": "r", "tasks": [spec]}), include_history="true")
    assert run["tasks"][0]["attempt_number"] == 2 and run["state"]["result_state"] == "FAILED"
    assert len(run["repair_history"][0]["task_run_ids"]) == 3


def test_a_disabled_task_is_skipped_disabled_and_its_dependants_run(api: Api) -> None:
    off = task("off")
    off["disabled"] = True
    run = api.wait(api.submit({"run_name": "d", "tasks": [off, task("after", "off")]}))
    assert states(run) == {"off": ("SKIPPED", "DISABLED"), "after": ("TERMINATED", "SUCCESS")}
    assert run["tasks"][0]["status"]["termination_details"]["code"] == "DISABLED"
    assert run["state"]["result_state"] == "SUCCESS"


def test_cancel_passes_through_terminating_for_the_configured_time(clock: Clock) -> None:
    with Emulator(clock=clock, time_scale=0.02, cancel_terminating_seconds=3.0) as emu:
        api = Api(emu)
        run_id = api.submit({"run_name": "c", "notebook_task": notebook(emulator_duration=1000)})
        clock.now += 1
        api.ok(api.post("jobs/runs/cancel", {"run_id": run_id}))
        clock.now += 2.9
        run = api.run(run_id)
        assert run["state"]["life_cycle_state"] == "TERMINATING" and run["status"]["state"] == "TERMINATING"
        clock.now += 0.2
        run = api.run(run_id)
        assert run["state"]["result_state"] == "CANCELED" and run["status"]["state"] == "TERMINATED"


# ---------------------------------------------------------------- 8. runs/list limit 0


def test_runs_list_limit_zero_means_the_maximum_of_25(api: Api) -> None:
    for i in range(30):
        api.submit({"run_name": f"r{i}", "notebook_task": notebook(emulator_duration=0)})
    page = api.ok(api.get("jobs/runs/list", limit=0))
    assert len(page["runs"]) == 25 and page["has_more"] is True
    assert error_of(api.get("jobs/runs/list", limit=26)) == (400, "INVALID_PARAMETER_VALUE")


# ---------------------------------------------------------------- 9. refused parameter combinations


def test_run_now_and_repair_refuse_notebook_params_with_jar_params(emu: Emulator, api: Api) -> None:
    job = emu.create_job({"name": "p", "max_concurrent_runs": 5, "tasks": [task("a", emulator_result="FAILED")]})
    both = {"notebook_params": {"x": "1"}, "jar_params": ["y"]}
    refused = api.post("jobs/run-now", {"job_id": job, **both})
    assert error_of(refused) == (400, "INVALID_PARAMETER_VALUE")
    assert "jar_params" in refused.json()["message"] and "notebook_params" in refused.json()["message"]
    run_id = api.ok(api.post("jobs/run-now", {"job_id": job}))["run_id"]
    api.wait(run_id)
    repair = api.post("jobs/runs/repair", {"run_id": run_id, "rerun_all_failed_tasks": True, **both})
    assert error_of(repair) == (400, "INVALID_PARAMETER_VALUE")
    assert emu.counters["runs_created"] == 1 and emu.counters["repairs"] == 0
    # Both given empty say nothing, and are accepted (the official provider's group sends them so).
    api.ok(api.post("jobs/run-now", {"job_id": job, "notebook_params": {}, "jar_params": []}))


@pytest.mark.parametrize("field", ["python_params", "spark_submit_params"])
def test_non_ascii_python_and_spark_submit_params_are_refused(emu: Emulator, api: Api, field: str) -> None:
    job = emu.create_job({"name": "a", "max_concurrent_runs": 5, "tasks": [task("a")]})
    for value in (["caf\u00e9"], ["ok", "\u65e5\u672c"], ["\U0001f600"]):
        refused = api.post("jobs/run-now", {"job_id": job, field: value})
        assert error_of(refused) == (400, "INVALID_PARAMETER_VALUE"), value
        assert field in refused.json()["message"]
    assert api.post("jobs/run-now", {"job_id": job, field: ["plain", "--x=1"]}).status_code == 200
    assert emu.counters["runs_created"] == 1
