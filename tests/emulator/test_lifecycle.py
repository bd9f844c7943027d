"""Run life cycles: single and multi-task runs, failure propagation, timeouts, cancels, clusters."""

from __future__ import annotations

import time

from airflow_dbx import models
from airflow_dbx.emulator import Emulator
from tests.emulator.conftest import Api, Clock, notebook, task


def test_single_task_run_goes_pending_running_terminating_terminated() -> None:
    clock = Clock()
    with Emulator(time_scale=2.0, clock=clock) as emu:
        client = Api(emu)
        body = {
            "run_name": "daily load",
            "existing_cluster_id": "emulator-1",
            "notebook_task": notebook(emulator_duration=3),
        }
        run_id = client.submit(body)
        seen = []
        # setup 0.3 + pending 0.2, running 3, terminating 0.2; all times 2: 1 s, 6 s, 0.4 s
        for step in (0.0, 0.9, 0.2, 5.8, 0.2, 0.2, 0.2):
            clock.now += step
            run = client.run(run_id)
            seen.append((run["state"]["life_cycle_state"], run["status"]["state"], run["tasks"][0]["status"]["state"]))
    assert seen == [
        ("PENDING", "PENDING", "PENDING"),
        ("PENDING", "PENDING", "PENDING"),
        ("RUNNING", "RUNNING", "RUNNING"),
        ("RUNNING", "RUNNING", "RUNNING"),
        ("TERMINATING", "TERMINATING", "TERMINATING"),
        ("TERMINATING", "TERMINATING", "TERMINATING"),
        ("TERMINATED", "TERMINATED", "TERMINATED"),
    ]
    assert run["state"]["result_state"] == "SUCCESS"
    assert run["status"] == {
        "state": "TERMINATED",
        "termination_details": {"code": "SUCCESS", "type": "SUCCESS", "message": ""},
    }
    assert run["run_type"] == "SUBMIT_RUN"
    assert run["job_id"] == run_id  # a one-time run gets a job id too
    assert run["run_page_url"] == f"{emu.url}/jobs/{run_id}/runs/{run_id}"
    [only] = run["tasks"]
    assert only["task_key"] == "daily_load"
    assert only["run_id"] != run_id
    assert only["attempt_number"] == 0
    assert only["setup_duration"] == 400 and only["execution_duration"] == 6000 and only["cleanup_duration"] == 400
    assert run["start_time"] == 1_800_000_000_000
    assert run["end_time"] - run["start_time"] == run["run_duration"] == 7400


def test_the_shared_state_model_reads_the_emulator(api: Api) -> None:
    run = api.wait(api.submit({"run_name": "x", "notebook_task": notebook(emulator_result="FAILED")}))
    state = models.RunState.from_dict(run)
    assert state.is_terminal and not state.is_successful()
    assert state.result_state == "FAILED"
    assert state.termination_code == "RUN_EXECUTION_ERROR"


def test_depends_on_orders_tasks(api: Api) -> None:
    run = api.wait(api.submit({"run_name": "dag", "tasks": [task("a"), task("b", "a"), task("c", "a", "b")]}))
    tasks = {t["task_key"]: t for t in run["tasks"]}
    assert run["state"]["result_state"] == "SUCCESS"
    assert tasks["b"]["start_time"] >= tasks["a"]["end_time"]
    assert tasks["c"]["start_time"] >= tasks["b"]["end_time"]
    assert tasks["c"]["depends_on"] == [{"task_key": "a"}, {"task_key": "b"}]


def test_a_failure_skips_downstream_tasks_upstream_failed(api: Api) -> None:
    run_id = api.submit(
        {
            "run_name": "dag",
            "tasks": [
                task("extract", emulator_result="FAILED", emulator_error="KeyError: 'day'"),
                task("transform", "extract"),
                task("load", "transform"),
                task("audit"),
            ],
        }
    )
    run = api.wait(run_id)
    tasks = {t["task_key"]: t for t in run["tasks"]}
    assert run["state"]["result_state"] == "FAILED"
    assert run["status"]["termination_details"]["code"] == "RUN_EXECUTION_ERROR"
    assert "extract" in run["state"]["state_message"] and "KeyError: 'day'" in run["state"]["state_message"]
    assert tasks["extract"]["state"]["result_state"] == "FAILED"
    for key in ("transform", "load"):
        assert tasks[key]["state"]["life_cycle_state"] == "SKIPPED"
        assert tasks[key]["state"]["result_state"] == "UPSTREAM_FAILED"
        assert tasks[key]["status"]["termination_details"]["code"] == "SKIPPED"
    assert tasks["audit"]["state"]["result_state"] == "SUCCESS"


def test_all_done_leaf_that_succeeds_makes_success_with_failures(api: Api) -> None:
    cleanup = task("cleanup", "work")
    cleanup["run_if"] = "ALL_DONE"
    run = api.wait(api.submit({"run_name": "dag", "tasks": [task("work", emulator_result="FAILED"), cleanup]}))
    assert run["state"]["result_state"] == "SUCCESS_WITH_FAILURES"
    assert run["status"]["termination_details"]["code"] == "SUCCESS_WITH_FAILURES"
    assert {t["task_key"]: t["state"]["result_state"] for t in run["tasks"]} == {"work": "FAILED", "cleanup": "SUCCESS"}


def test_run_timeout_ends_timedout(api: Api) -> None:
    started = time.monotonic()
    run = api.wait(
        api.submit({"run_name": "slow", "timeout_seconds": 1, "notebook_task": notebook(emulator_duration=500)})
    )
    assert time.monotonic() - started < 2  # 500 emulated seconds would be 10 s
    assert run["state"]["result_state"] == "TIMEDOUT"
    assert run["state"]["user_cancelled_or_timedout"] is True
    assert run["tasks"][0]["state"]["result_state"] == "TIMEDOUT"


def test_task_timeout_ends_the_task_timedout(api: Api) -> None:
    slow = task("slow", emulator_duration=500)
    slow["timeout_seconds"] = 2
    run = api.wait(api.submit({"run_name": "t", "tasks": [slow, task("after", "slow")]}))
    tasks = {t["task_key"]: t for t in run["tasks"]}
    assert tasks["slow"]["state"]["result_state"] == "TIMEDOUT"
    assert tasks["after"]["state"]["result_state"] == "UPSTREAM_FAILED"
    assert run["state"]["result_state"] == "TIMEDOUT"


def test_cancel_ends_a_running_run_canceled(api: Api) -> None:
    run_id = api.submit({"run_name": "long", "tasks": [task("a", emulator_duration=1000), task("b", "a")]})
    assert api.ok(api.post("jobs/runs/cancel", {"run_id": run_id})) == {}
    run = api.wait(run_id)
    assert run["state"]["result_state"] == "CANCELED"
    assert run["state"]["user_cancelled_or_timedout"] is True
    assert run["status"]["termination_details"]["code"] == "USER_CANCELED"
    assert {t["state"]["result_state"] for t in run["tasks"]} == {"CANCELED"}
    # cancelling a finished run changes nothing
    assert api.ok(api.post("jobs/runs/cancel", {"run_id": run_id})) == {}
    assert api.run(run_id)["state"]["result_state"] == "CANCELED"


def test_cancel_all_cancels_the_active_runs_of_one_job(emu: Emulator, api: Api) -> None:
    job = emu.create_job({"name": "j", "max_concurrent_runs": 2, "tasks": [task("a", emulator_duration=1000)]})
    other = emu.create_job({"name": "k", "tasks": [task("a", emulator_duration=1000)]})
    runs = [api.ok(api.post("jobs/run-now", {"job_id": job}))["run_id"] for _ in range(2)]
    spared = api.ok(api.post("jobs/run-now", {"job_id": other}))["run_id"]
    api.ok(api.post("jobs/runs/cancel-all", {"job_id": job}))
    assert [api.wait(r)["state"]["result_state"] for r in runs] == ["CANCELED", "CANCELED"]
    assert api.run(spared)["status"]["state"] != "TERMINATED"
    assert api.post("jobs/runs/cancel-all", {}).status_code == 400


def test_unknown_existing_cluster_ends_internal_error(emu: Emulator, api: Api) -> None:
    run = api.wait(api.submit({"run_name": "x", "tasks": [task("a", cluster="0101-abc")]}))
    assert run["state"]["life_cycle_state"] == "INTERNAL_ERROR"
    assert run["state"]["result_state"] == "FAILED"
    assert "Cluster 0101-abc does not exist" in run["state"]["state_message"]
    assert models.RunState.from_dict(run).is_terminal
    emu.add_cluster("0101-abc")
    assert (
        api.wait(api.submit({"run_name": "x", "tasks": [task("a", cluster="0101-abc")]}))["state"]["result_state"]
        == "SUCCESS"
    )


def test_run_now_merges_parameters_into_the_job_tasks(emu: Emulator, api: Api) -> None:
    job_id = emu.create_job(
        {
            "name": "nightly",
            "parameters": [{"name": "day", "default": "monday"}],
            "tasks": [
                task("one"),
                {
                    "task_key": "two",
                    "depends_on": [{"task_key": "one"}],
                    "spark_python_task": {"python_file": "x.py", "parameters": ["emulator_duration=1"]},
                },
            ],
        }
    )
    answer = api.ok(
        api.post(
            "jobs/run-now",
            {
                "job_id": job_id,
                "job_parameters": {"day": "friday"},
                "python_params": ["emulator_result=FAILED"],
                "notebook_params": {"emulator_output": "hello"},
            },
        )
    )
    run = api.wait(answer["run_id"])
    assert run["run_type"] == "JOB_RUN" and run["job_id"] == job_id and run["run_name"] == "nightly"
    assert run["job_parameters"] == [{"name": "day", "default": "monday", "value": "friday"}]
    assert run["overriding_parameters"]["notebook_params"] == {"emulator_output": "hello"}
    tasks = {t["task_key"]: t for t in run["tasks"]}
    assert tasks["one"]["state"]["result_state"] == "FAILED"  # python_params apply to every task
    one = api.ok(api.get("jobs/runs/get-output", run_id=tasks["one"]["run_id"]))
    assert one["notebook_output"] == {"result": "hello", "truncated": False}


def test_run_now_only_runs_the_named_tasks(emu: Emulator, api: Api) -> None:
    job_id = emu.create_job({"name": "j", "tasks": [task("a"), task("b", "a"), task("c")]})
    run = api.wait(api.ok(api.post("jobs/run-now", {"job_id": job_id, "only": ["b", "c"]}))["run_id"])
    assert sorted(t["task_key"] for t in run["tasks"]) == ["b", "c"]
    assert run["state"]["result_state"] == "SUCCESS"


def test_time_scale_applies_to_new_runs(emu: Emulator, api: Api) -> None:
    emu.time_scale = 0.001
    started = time.monotonic()
    api.wait(api.submit({"run_name": "x", "notebook_task": notebook(emulator_duration=200)}))
    assert time.monotonic() - started < 1.5  # 4 s at the fixture's scale
