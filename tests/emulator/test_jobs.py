"""Jobs as Databricks keeps them: jobs/create, jobs/reset, jobs/get, jobs/list, jobs/delete,
and runs of a multi-task job on shared job clusters, repaired with its job parameters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tests.emulator.conftest import Api, notebook

if TYPE_CHECKING:
    from airflow_dbx.emulator import Emulator

CLUSTER = {"spark_version": "15.4.x-scala2.12", "node_type_id": "i3.xlarge", "num_workers": 1}


def shared(key: str, *deps: str, run_if: str | None = None, **params: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"task_key": key, "job_cluster_key": "shared", "notebook_task": notebook(**params)}
    if deps:
        spec["depends_on"] = [{"task_key": d} for d in deps]
    if run_if:
        spec["run_if"] = run_if
    return spec


def job(name: str, *tasks: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "job_clusters": [{"job_cluster_key": "shared", "new_cluster": CLUSTER}], "tasks": list(tasks), **extra}


def error_of(response: Any) -> tuple[int, str, str]:
    body = response.json()
    return response.status_code, body["error_code"], body["message"]


def test_reset_replaces_every_setting_and_get_shows_them(api: Api) -> None:
    job_id = api.ok(api.post("jobs/create", job("etl", shared("a"), tags={"team": "x"})))["job_id"]
    assert api.ok(api.post("jobs/reset", {"job_id": job_id, "new_settings": job("etl", shared("a"), shared("b", "a"))})) == {}
    settings = api.ok(api.get("jobs/get", job_id=job_id))["settings"]
    assert [t["task_key"] for t in settings["tasks"]] == ["a", "b"]
    assert "tags" not in settings  # reset overwrites all settings; nothing of the old ones survives
    assert settings["job_clusters"][0]["job_cluster_key"] == "shared"


def test_reset_needs_an_existing_job_and_new_settings(api: Api) -> None:
    assert error_of(api.post("jobs/reset", {"job_id": 999, "new_settings": job("x", shared("a"))}))[:2] == (
        400, "INVALID_PARAMETER_VALUE",
    )
    job_id = api.ok(api.post("jobs/create", job("etl", shared("a"))))["job_id"]
    status, code, message = error_of(api.post("jobs/reset", {"job_id": job_id}))
    assert (status, code) == (400, "INVALID_PARAMETER_VALUE")
    assert "new_settings" in message


def test_a_task_naming_an_undefined_job_cluster_is_refused_naming_the_field(api: Api) -> None:
    body = job("etl", shared("a"))
    body["tasks"][0]["job_cluster_key"] = "missing"
    status, code, message = error_of(api.post("jobs/create", body))
    assert (status, code) == (400, "INVALID_PARAMETER_VALUE")
    assert "tasks[0].job_cluster_key" in message
    doubled = job("etl", shared("a"))
    doubled["job_clusters"] *= 2
    assert "duplicate job cluster key" in error_of(api.post("jobs/create", doubled))[2]


def test_a_cycle_between_tasks_is_refused(api: Api) -> None:
    status, code, message = error_of(api.post("jobs/create", job("loop", shared("a", "b"), shared("b", "a"))))
    assert (status, code) == (400, "INVALID_PARAMETER_VALUE")
    assert "cycle" in message


def test_list_filters_by_name_case_insensitively_and_pages(api: Api) -> None:
    for i in range(5):
        api.ok(api.post("jobs/create", job("Same Name" if i % 2 else f"other-{i}", shared("a"))))
    named = api.ok(api.get("jobs/list", name="same name"))
    assert [j["settings"]["name"] for j in named["jobs"]] == ["Same Name", "Same Name"]
    first = api.ok(api.get("jobs/list", limit=2))
    assert len(first["jobs"]) == 2 and first["has_more"]
    seen = [j["job_id"] for j in first["jobs"]]
    page = first
    while page.get("next_page_token"):
        page = api.ok(api.get("jobs/list", limit=2, page_token=page["next_page_token"]))
        seen += [j["job_id"] for j in page.get("jobs", [])]
    assert len(seen) == len(set(seen)) == 5


def test_delete_removes_the_job(api: Api) -> None:
    job_id = api.ok(api.post("jobs/create", job("gone", shared("a"))))["job_id"]
    assert api.ok(api.post("jobs/delete", {"job_id": job_id})) == {}
    assert error_of(api.get("jobs/get", job_id=job_id))[2] == f"Job {job_id} does not exist."


def test_a_job_run_on_a_shared_cluster_honours_depends_on_run_if_and_retries(emu: Emulator, api: Api) -> None:
    flaky = shared("flaky", emulator_fail_attempts=1)
    flaky["max_retries"] = 1
    body = job(
        "flow",
        shared("a"),
        flaky,
        shared("broken", "a", emulator_result="FAILED", emulator_error="boom"),
        shared("after", "broken"),
        shared("cleanup", "broken", run_if="ALL_DONE"),
    )
    job_id = api.ok(api.post("jobs/create", body))["job_id"]
    run = api.wait(api.ok(api.post("jobs/run-now", {"job_id": job_id}))["run_id"], include_history=True)
    results = {t["task_key"]: t["state"].get("result_state") for t in run["tasks"]}
    assert results == {
        "a": "SUCCESS", "flaky": "SUCCESS", "broken": "FAILED", "after": "UPSTREAM_FAILED", "cleanup": "SUCCESS",
    }
    assert {t["task_key"]: t["attempt_number"] for t in run["tasks"]}["flaky"] == 1
    assert all(t["job_cluster_key"] == "shared" for t in run["tasks"])


def test_repair_of_a_job_run_reruns_the_task_and_its_dependants_with_the_job_parameters(api: Api) -> None:
    body = job("params", shared("a", emulator_fail_attempts=1), shared("b", "a"), shared("c"))
    body["parameters"] = [{"name": "day", "default": "monday"}]
    job_id = api.ok(api.post("jobs/create", body))["job_id"]
    run_id = api.ok(api.post("jobs/run-now", {"job_id": job_id, "job_parameters": {"day": "friday"}}))["run_id"]
    first = api.wait(run_id, include_history=True)
    assert {t["task_key"]: t["state"]["result_state"] for t in first["tasks"]}["b"] == "UPSTREAM_FAILED"
    repair = {"run_id": run_id, "rerun_tasks": ["a"], "rerun_dependent_tasks": True, "job_parameters": {"day": "friday"}}
    api.ok(api.post("jobs/runs/repair", repair))
    repaired = api.wait(run_id, include_history=True)
    assert repaired["state"]["result_state"] == "SUCCESS"
    assert repaired["job_parameters"] == [{"name": "day", "default": "monday", "value": "friday"}]
    reran = set(repaired["repair_history"][-1]["task_run_ids"])
    by_key = {t["task_key"]: t["run_id"] for t in repaired["tasks"]}
    assert reran == {by_key["a"], by_key["b"]}  # c was not rerun
