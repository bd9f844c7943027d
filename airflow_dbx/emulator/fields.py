"""The fields the Jobs API 2.2 knows in job settings, runs/submit bodies and their tasks.

Taken from the API's published request objects (``JobSettings``, ``Task``, ``SubmitTask``,
``JobCluster``, ``TaskDependency``, ``JobParameterDefinition`` and the create / submit request
bodies). Databricks parses a request into these objects before it looks at any value, so a
field it does not know fails the request as malformed and a missing required one as an
invalid parameter value; the emulator answers both the same way, naming the field.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_dbx.emulator.errors import ApiError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

JOB_SETTINGS = frozenset({
    "budget_policy_id", "continuous", "deployment", "description", "edit_mode", "email_notifications",
    "environment_variables", "environments", "format", "git_source", "health", "job_clusters", "max_concurrent_runs",
    "name", "notification_settings", "parameters", "parent_path", "performance_target", "queue", "run_as",
    "schedule", "tags", "tasks", "timeout_seconds", "trigger", "triggers", "usage_policy_id",
    "webhook_notifications",
})
CREATE_JOB = JOB_SETTINGS | {"access_control_list"}
SUBMIT_TASK = frozenset({
    "task_key", "agentic_task", "ai_runtime_task", "alert_task", "clean_rooms_notebook_task", "compute",
    "condition_task", "dashboard_task", "dbt_cloud_task", "dbt_platform_task", "dbt_task", "depends_on",
    "description", "disable_auto_optimization", "disabled", "email_notifications", "environment_key",
    "environment_variables_key", "existing_cluster_id", "for_each_task", "gen_ai_compute_task", "genie_task",
    "health", "libraries", "max_retries", "min_retry_interval_millis", "new_cluster", "notebook_task",
    "notification_settings", "pipeline_task", "power_bi_task", "python_operator_task", "python_wheel_task",
    "retry_on_timeout", "run_if", "run_job_task", "spark_jar_task", "spark_python_task", "spark_submit_task",
    "sql_task", "timeout_seconds", "webhook_notifications",
})
JOB_TASK = SUBMIT_TASK | {"job_cluster_key"}
# runs/submit: the published request object has no job_clusters, nor its tasks a
# job_cluster_key; Databricks refuses both with its own message (``NO_SHARED_CLUSTERS``).
SUBMIT_RUN = frozenset({
    "access_control_list", "budget_policy_id", "email_notifications", "environment_variables", "environments",
    "git_source", "health", "idempotency_token", "notification_settings", "performance_target", "queue", "run_as",
    "run_name", "tags", "tasks", "timeout_seconds", "usage_policy_id", "webhook_notifications",
})
NO_SHARED_CLUSTERS = "Shared job cluster feature is not supported in runs/submit API."  # Databricks' words
# The single-task form of runs/submit (Jobs API 2.0, still accepted): one task's fields at the top.
SUBMIT_SINGLE_TASK = SUBMIT_RUN | (SUBMIT_TASK - {"task_key", "depends_on", "run_if"})
JOB_CLUSTER = frozenset({"job_cluster_key", "new_cluster", "serverless_compute_id"})
TASK_DEPENDENCY = frozenset({"task_key", "outcome"})
JOB_PARAMETER = frozenset({"name", "default"})


def unknown_field(where: str) -> ApiError:
    message = f"Invalid JSON given in the body of the request - unknown field '{where}'"
    return ApiError(400, "MALFORMED_REQUEST", message)


def required_field(where: str) -> ApiError:
    return ApiError(400, "INVALID_PARAMETER_VALUE", f"Missing required field: {where}")


def check_known(obj: Mapping[str, Any], known: frozenset[str], path: str = "") -> None:
    """MALFORMED_REQUEST naming the first field of ``obj`` outside ``known``."""
    for key in obj:
        if key not in known:
            raise unknown_field(f"{path}.{key}" if path else key)


def check_required(obj: Mapping[str, Any], required: Iterable[str], path: str = "") -> None:
    for key in required:
        if obj.get(key) is None:
            raise required_field(f"{path}.{key}" if path else key)


def check_tasks(tasks: Any, known: frozenset[str], where: str = "tasks") -> None:
    """Each task object's own fields and those of its ``depends_on`` entries."""
    for i, task in enumerate(tasks if isinstance(tasks, list) else []):
        if not isinstance(task, dict):
            continue  # the value checks name a task that is not an object
        path = f"{where}[{i}]"
        check_known(task, known, path)
        check_required(task, ("task_key",), path)
        deps = task.get("depends_on")
        for j, dep in enumerate(deps if isinstance(deps, list) else []):
            if isinstance(dep, dict):
                check_known(dep, TASK_DEPENDENCY, f"{path}.depends_on[{j}]")
                check_required(dep, ("task_key",), f"{path}.depends_on[{j}]")


def check_job_settings(settings: Mapping[str, Any], known: frozenset[str] = JOB_SETTINGS) -> None:
    """A jobs/create body or jobs/reset's ``new_settings``: its fields, its tasks', clusters' and parameters'."""
    check_known(settings, known)
    check_tasks(settings.get("tasks"), JOB_TASK)
    for name, fields, required in (("job_clusters", JOB_CLUSTER, ("job_cluster_key",)),
                                   ("parameters", JOB_PARAMETER, ("name", "default"))):
        items = settings.get(name)
        for i, item in enumerate(items if isinstance(items, list) else []):
            if isinstance(item, dict):
                check_known(item, fields, f"{name}[{i}]")
                check_required(item, required, f"{name}[{i}]")


def check_submit(body: Mapping[str, Any]) -> None:
    """A runs/submit body, in its multi-task or its single-task form (mixing them is refused
    with the value checks)."""
    tasks = body.get("tasks")
    listed = tasks if isinstance(tasks, list) else []
    if "job_clusters" in body or any(isinstance(t, dict) and "job_cluster_key" in t for t in listed):
        raise ApiError(400, "INVALID_PARAMETER_VALUE", NO_SHARED_CLUSTERS)
    check_known(body, SUBMIT_SINGLE_TASK)
    check_tasks(tasks, SUBMIT_TASK)
