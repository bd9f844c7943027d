"""runs/get-output, and paging of runs/get, runs/list, jobs/get and jobs/list."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from tests.emulator.conftest import Api, notebook, task

if TYPE_CHECKING:
    from airflow_dbx.emulator import Emulator


def test_output_of_a_task_run(api: Api) -> None:
    run = api.wait(api.submit({"run_name": "x", "tasks": [task("a", emulator_output="42 rows"), task("b", "a")]}))
    a = run["tasks"][0]
    out = api.ok(api.get("jobs/runs/get-output", run_id=a["run_id"]))
    assert out["notebook_output"] == {"result": "42 rows", "truncated": False}
    assert out["metadata"]["run_id"] == a["run_id"]
    assert out["metadata"]["task_key"] == "a"
    assert out["metadata"]["state"]["result_state"] == "SUCCESS"
    assert "error" not in out


def test_output_of_a_multi_task_parent_is_refused(api: Api) -> None:
    run_id = api.submit({"run_name": "x", "tasks": [task("a"), task("b")]})
    response = api.get("jobs/runs/get-output", run_id=run_id)
    assert response.status_code == 400
    assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert response.json()["message"].startswith("Retrieving the output of runs with multiple tasks is not supported")


def test_output_of_a_failed_single_task_run_has_error_and_trace(api: Api) -> None:
    run_id = api.submit(
        {
            "run_name": "x",
            "notebook_task": notebook(
                emulator_result="FAILED",
                emulator_error="ValueError: bad day",
                emulator_error_trace="Traceback\n  line 3",
            ),
        }
    )
    api.wait(run_id)
    out = api.ok(api.get("jobs/runs/get-output", run_id=run_id))  # one task: the parent answers for it
    assert out["error"] == "ValueError: bad day"
    assert out["error_trace"] == "Traceback\n  line 3"
    assert out["notebook_output"] == {}


def test_output_over_5_mb_is_truncated(emu: Emulator, api: Api) -> None:
    big = "x" * (5 * 1024 * 1024 + 10)  # run-now parameters are capped at 10 kB; a job default is not
    job = {"name": "big", "parameters": [{"name": "emulator_output", "default": big}], "tasks": [task("a")]}
    job_id = emu.create_job(job)
    run_id = api.ok(api.post("jobs/run-now", {"job_id": job_id}))["run_id"]
    deadline = time.monotonic() + 5
    while emu.run(run_id)["status"]["state"] != "TERMINATED":  # in-process: no 5 MB answers while waiting
        assert time.monotonic() < deadline
        time.sleep(0.01)
    output = api.ok(api.get("jobs/runs/get-output", run_id=emu.run(run_id)["tasks"][0]["run_id"]))["notebook_output"]
    assert output["truncated"] is True
    assert len(output["result"]) == 5 * 1024 * 1024


def test_runs_get_pages_250_tasks_by_100_in_2_2_and_not_in_2_1(emu: Emulator, api: Api) -> None:
    tasks = [task(f"t{i:03d}", emulator_duration=0) for i in range(250)]
    run_id = api.submit({"run_name": "wide", "tasks": tasks})
    first = api.run(run_id)
    keys = [t["task_key"] for t in first["tasks"]]
    assert len(keys) == 100 and "next_page_token" in first
    second = api.run(run_id, page_token=first["next_page_token"])
    third = api.run(run_id, page_token=second["next_page_token"])
    keys += [t["task_key"] for t in second["tasks"]] + [t["task_key"] for t in third["tasks"]]
    assert len(second["tasks"]) == 100 and len(third["tasks"]) == 50
    assert "next_page_token" not in third
    assert keys == [f"t{i:03d}" for i in range(250)]
    assert len(Api(emu, "2.1").run(run_id)["tasks"]) == 250
    assert api.get("jobs/runs/get", run_id=run_id, page_token="garbage!").status_code == 400


def test_jobs_get_pages_tasks_in_2_2(emu: Emulator, api: Api) -> None:
    job_id = emu.create_job({"name": "wide", "tasks": [task(f"t{i}") for i in range(150)]})
    first = api.ok(api.get("jobs/get", job_id=job_id))
    assert len(first["settings"]["tasks"]) == 100
    second = api.ok(api.get("jobs/get", job_id=job_id, page_token=first["next_page_token"]))
    assert len(second["settings"]["tasks"]) == 50 and "next_page_token" not in second
    assert len(Api(emu, "2.1").ok(Api(emu, "2.1").get("jobs/get", job_id=job_id))["settings"]["tasks"]) == 150


def test_runs_list_pages_and_filters(emu: Emulator, api: Api) -> None:
    job_id = emu.create_job({"name": "j", "tasks": [task("a", emulator_duration=0)]})
    done = [api.ok(api.post("jobs/run-now", {"job_id": job_id}))["run_id"] for _ in range(3)]
    for run_id in done:
        api.wait(run_id)
    active = api.ok(api.post("jobs/run-now", {"job_id": job_id, "notebook_params": {"emulator_duration": "1000"}}))[
        "run_id"
    ]
    one_time = api.submit({"run_name": "x", "notebook_task": notebook()})

    page = api.ok(api.get("jobs/runs/list", job_id=job_id, limit=2))
    assert [r["run_id"] for r in page["runs"]] == [active, done[2]]  # newest first
    assert page["has_more"] is True
    rest = api.ok(api.get("jobs/runs/list", job_id=job_id, limit=2, page_token=page["next_page_token"]))
    assert [r["run_id"] for r in rest["runs"]] == [done[1], done[0]]
    assert rest["has_more"] is False and "next_page_token" not in rest
    by_offset = api.ok(api.get("jobs/runs/list", job_id=job_id, limit=1, offset=3))
    assert [r["run_id"] for r in by_offset["runs"]] == [done[0]]

    assert [r["run_id"] for r in api.ok(api.get("jobs/runs/list", job_id=job_id, active_only="true"))["runs"]] == [
        active
    ]
    completed = api.ok(api.get("jobs/runs/list", job_id=job_id, completed_only="true"))["runs"]
    assert sorted(r["run_id"] for r in completed) == sorted(done)
    assert "tasks" not in completed[0]
    assert "tasks" in api.ok(api.get("jobs/runs/list", job_id=job_id, expand_tasks="true"))["runs"][0]
    everything = api.ok(api.get("jobs/runs/list", limit=25))["runs"]
    assert one_time in [r["run_id"] for r in everything] and len(everything) == 5
    submits = api.ok(api.get("jobs/runs/list", run_type="SUBMIT_RUN"))["runs"]
    assert [r["run_id"] for r in submits] == [one_time]
    assert api.get("jobs/runs/list", limit=26).status_code == 400
    assert api.get("jobs/runs/list", active_only="true", completed_only="true").status_code == 400
    empty = api.ok(api.get("jobs/runs/list", job_id=999999))
    assert empty == {"has_more": False}


def test_jobs_list_filters_by_exact_name_and_pages(emu: Emulator, api: Api) -> None:
    ids = [
        emu.create_job({"name": name, "tasks": [task("a")]}) for name in ("nightly", "nightly-2", "nightly", "hourly")
    ]
    named = api.ok(api.get("jobs/list", name="nightly"))
    assert [j["job_id"] for j in named["jobs"]] == [ids[0], ids[2]]
    assert "tasks" not in named["jobs"][0]["settings"]
    assert api.ok(api.get("jobs/list", name="nightly", expand_tasks="true"))["jobs"][0]["settings"]["tasks"]
    page = api.ok(api.get("jobs/list", limit=3))
    assert len(page["jobs"]) == 3 and page["has_more"] is True
    rest = api.ok(api.get("jobs/list", limit=3, page_token=page["next_page_token"]))
    assert [j["job_id"] for j in rest["jobs"]] == [ids[3]] and rest["has_more"] is False
    assert api.ok(api.get("jobs/list", name="nope")) == {"has_more": False}


def test_jobs_delete_and_get(emu: Emulator, api: Api) -> None:
    job_id = api.ok(api.post("jobs/create", {"name": "gone", "tasks": [task("a")]}))["job_id"]
    job = api.ok(api.get("jobs/get", job_id=job_id))
    assert job["settings"]["name"] == "gone" and job["job_id"] == job_id
    assert api.ok(api.post("jobs/delete", {"job_id": job_id})) == {}
    missing = api.get("jobs/get", job_id=job_id)
    assert missing.status_code == 400 and missing.json() == {
        "error_code": "INVALID_PARAMETER_VALUE",
        "message": f"Job {job_id} does not exist.",
    }


def test_runs_get_of_a_task_run_id_shows_that_task_run(api: Api) -> None:
    run_id = api.submit({"run_name": "x", "tasks": [task("a"), task("b", "a")]})
    b = api.run(run_id)["tasks"][1]
    view = api.run(b["run_id"])
    assert view["run_id"] == b["run_id"] and view["task_key"] == "b"
    assert view["parent_run_id"] == run_id and view["job_id"] == run_id
