"""Job settings, runs/submit bodies and task objects: a field the Jobs API does not know is
refused as a malformed request, a missing required one as an invalid value, both naming the
field, before anything is created; what the API knows is accepted."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tests.emulator.conftest import Api, task

if TYPE_CHECKING:
    from airflow_dbx.emulator import Emulator

CLUSTER = {"job_cluster_key": "shared", "new_cluster": {"spark_version": "15.4.x-scala2.12", "num_workers": 1}}


def job(**extra: Any) -> dict[str, Any]:
    return {"name": "fields", "tasks": [task("a")], **extra}


def shared_task(**extra: Any) -> dict[str, Any]:
    return {"task_key": "a", "job_cluster_key": "shared", "notebook_task": {"notebook_path": "/nb"}, **extra}


REFUSED = {
    "create-unknown-top-level": (
        "jobs/create", job(max_concurent_runs=2), "MALFORMED_REQUEST", "unknown field 'max_concurent_runs'"),
    "create-unknown-task-field": (
        "jobs/create", job(tasks=[{**task("a"), "notebook": {}}]), "MALFORMED_REQUEST", "'tasks[0].notebook'"),
    "create-task-key-missing": (
        "jobs/create", job(tasks=[{"notebook_task": {"notebook_path": "/nb"}, "existing_cluster_id": "c"}]),
        "INVALID_PARAMETER_VALUE", "Missing required field: tasks[0].task_key"),
    "create-unknown-dependency-field": (
        "jobs/create", job(tasks=[task("a"), {**task("b"), "depends_on": [{"task_key": "a", "when": "ok"}]}]),
        "MALFORMED_REQUEST", "'tasks[1].depends_on[0].when'"),
    "create-unknown-job-cluster-field": (
        "jobs/create", job(tasks=[shared_task()], job_clusters=[{**CLUSTER, "cluster": {}}]),
        "MALFORMED_REQUEST", "'job_clusters[0].cluster'"),
    "create-parameter-default-missing": (
        "jobs/create", job(parameters=[{"name": "day"}]), "INVALID_PARAMETER_VALUE",
        "Missing required field: parameters[0].default"),
    "submit-a-job-setting": (
        "jobs/runs/submit", {"run_name": "r", "tasks": [task("a")], "schedule": {"quartz_cron_expression": "0 0 * * * ?"}},
        "MALFORMED_REQUEST", "unknown field 'schedule'"),
    "submit-unknown-task-field": (
        "jobs/runs/submit", {"run_name": "r", "tasks": [{**task("a"), "retries": 2}]}, "MALFORMED_REQUEST",
        "'tasks[0].retries'"),
    "submit-unknown-dependency-field": (
        "jobs/runs/submit", {"run_name": "r", "tasks": [task("a"), {**task("b"), "depends_on": [{"key": "a"}]}]},
        "MALFORMED_REQUEST", "'tasks[1].depends_on[0].key'"),
    "submit-shared-job-clusters": (
        "jobs/runs/submit", {"run_name": "r", "job_clusters": [CLUSTER], "tasks": [shared_task()]},
        "INVALID_PARAMETER_VALUE", "Shared job cluster feature is not supported in runs/submit API"),
    "submit-task-on-a-job-cluster": (
        "jobs/runs/submit", {"run_name": "r", "tasks": [shared_task()]},
        "INVALID_PARAMETER_VALUE", "Shared job cluster feature is not supported in runs/submit API"),
    "submit-single-task-unknown-field": (
        "jobs/runs/submit", {"run_name": "r", "existing_cluster_id": "c", "notebook_task": {"notebook_path": "/nb"},
                             "retries": 2}, "MALFORMED_REQUEST", "unknown field 'retries'"),
}


@pytest.mark.parametrize(("path", "body", "code", "message"), REFUSED.values(), ids=REFUSED.keys())
def test_an_unknown_or_missing_field_is_refused_naming_it(
    emu: Emulator, api: Api, path: str, body: dict[str, Any], code: str, message: str
) -> None:
    response = api.post(path, body)
    assert response.status_code == 400, response.text
    assert response.json()["error_code"] == code
    assert message in response.json()["message"]
    assert api.ok(api.get("jobs/list")).get("jobs") is None  # nothing was created
    assert api.ok(api.get("jobs/runs/list")).get("runs") is None


def test_reset_checks_its_own_fields_and_the_new_settings(emu: Emulator, api: Api) -> None:
    job_id = api.ok(api.post("jobs/create", job()))["job_id"]
    for body, code, message in (
        ({"job_id": job_id, "new_settings": job(), "settings": {}}, "MALFORMED_REQUEST", "unknown field 'settings'"),
        ({"job_id": job_id}, "INVALID_PARAMETER_VALUE", "Missing required field: new_settings"),
        ({"job_id": job_id, "new_settings": job(access_control_list=[])}, "MALFORMED_REQUEST",
         "unknown field 'access_control_list'"),
    ):
        response = api.post("jobs/reset", body)
        assert (response.status_code, response.json()["error_code"]) == (400, code), response.text
        assert message in response.json()["message"]
    assert api.ok(api.get("jobs/get", job_id=job_id))["settings"]["name"] == "fields"


def test_every_documented_field_is_accepted(emu: Emulator, api: Api) -> None:
    settings = job(
        tasks=[shared_task(description="d", max_retries=1, min_retry_interval_millis=0, retry_on_timeout=False,
                           timeout_seconds=0, email_notifications={}, run_if="ALL_SUCCESS", libraries=[])],
        job_clusters=[CLUSTER], email_notifications={}, webhook_notifications={}, notification_settings={},
        timeout_seconds=0, max_concurrent_runs=1, tags={"team": "data"}, format="MULTI_TASK",
        parameters=[{"name": "day", "default": "1"}], queue={"enabled": True}, description="all of them",
        performance_target="PERFORMANCE_OPTIMIZED", access_control_list=[],
    )
    job_id = api.ok(api.post("jobs/create", settings))["job_id"]
    new_settings = {k: v for k, v in settings.items() if k != "access_control_list"}
    api.ok(api.post("jobs/reset", {"job_id": job_id, "new_settings": new_settings}))
    run_id = api.submit({"run_name": "r", "tasks": [task("a")], "timeout_seconds": 0, "tags": {"a": "b"},
                         "idempotency_token": "fields-1", "git_source": None, "queue": {"enabled": True}})
    assert api.wait(run_id)["state"]["result_state"] == "SUCCESS"
