"""Jobs as code: ``DatabricksCreateJobsOperator`` creates a job, or resets the one of the same name."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator

from airflow_dbx import payloads
from airflow_dbx._run_tasks import XCOM_JOB_ID, hook_for
from airflow_dbx.errors import PayloadError
from airflow_dbx.models import DEFAULT_CONN_ID

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from airflow.sdk import Context

    from airflow_dbx.hook import DatabricksHook

log = logging.getLogger("airflow_dbx.operators")

# Kept by the permissions API, not by the job's settings: jobs/reset has no such field.
_CREATE_ONLY = ("access_control_list",)


def create_or_reset_job(hook: DatabricksHook, settings: Mapping[str, Any]) -> int:
    """The id of the job called ``settings["name"]``, created, or reset to ``settings`` if it exists.

    Two jobs of that name are an error: which one to reset cannot be told.
    """
    name = settings["name"]
    ids = hook.job_ids_named(name)
    if len(ids) > 1:
        raise PayloadError("name", f"{len(ids)} Databricks jobs are named {name!r} (ids {ids}); rename or delete one")
    if not ids:
        job_id = hook.create_job(settings)
        log.info("Created Databricks job %s (%r)", job_id, name)
        return job_id
    hook.reset_job(ids[0], {k: v for k, v in settings.items() if k not in _CREATE_ONLY})
    log.info("Reset Databricks job %s (%r) to the settings given", ids[0], name)
    return ids[0]


class DatabricksCreateJobsOperator(BaseOperator):
    """Create a Databricks job (``jobs/create``), or reset the existing job of the same ``name`` (``jobs/reset``).

    Running it again with the same settings leaves one job with those settings. Give the
    settings as ``json``, as named parameters, or both (named parameters win over the
    top-level keys of ``json``). ``access_control_list`` applies when the job is created;
    permissions of an existing job are left as they are. Returns the job id and pushes it to
    XCom (key ``job_id``, and the return value).

    :param databricks_conn_id: the Airflow connection to the workspace.
    :param databricks_retry_limit: attempts per API call.
    :param databricks_retry_delay: base of the backoff between attempts, in seconds.
    :param databricks_retry_args: tenacity arguments replacing the two above.
    :param polling_period_seconds: accepted for compatibility; nothing is polled.
    """

    named_fields: ClassVar[tuple[str, ...]] = (
        "name", "description", "tags", "tasks", "job_clusters", "environments", "email_notifications",
        "webhook_notifications", "notification_settings", "timeout_seconds", "schedule", "trigger",
        "max_concurrent_runs", "git_source", "access_control_list", "performance_target",
    )
    template_fields: Sequence[str] = ("json", *named_fields, "databricks_conn_id")
    template_ext: Sequence[str] = (".json",)
    template_fields_renderers: ClassVar[dict[str, str]] = {"json": "json"}
    ui_color = "#ff7a59"

    def __init__(
        self,
        *,
        json: Mapping[str, Any] | str | None = None,
        name: str | None = None,
        description: str | None = None,
        tags: dict[str, str] | None = None,
        tasks: list[dict[str, Any]] | None = None,
        job_clusters: list[dict[str, Any]] | None = None,
        environments: list[dict[str, Any]] | None = None,
        email_notifications: dict[str, Any] | None = None,
        webhook_notifications: dict[str, Any] | None = None,
        notification_settings: dict[str, Any] | None = None,
        timeout_seconds: int | None = None,
        schedule: dict[str, Any] | None = None,
        trigger: dict[str, Any] | None = None,
        max_concurrent_runs: int | None = None,
        git_source: dict[str, Any] | None = None,
        access_control_list: list[dict[str, Any]] | None = None,
        performance_target: str | None = None,
        databricks_conn_id: str = DEFAULT_CONN_ID,
        polling_period_seconds: float = 30,
        databricks_retry_limit: int = 3,
        databricks_retry_delay: float = 1,
        databricks_retry_args: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        named = {key: value for key, value in locals().items() if key in self.named_fields}
        super().__init__(**kwargs)
        payloads.check_positive("databricks_retry_limit", databricks_retry_limit, integer=True)
        payloads.check_positive("databricks_retry_delay", databricks_retry_delay)
        if databricks_retry_args is not None:
            payloads.check_retry_args(databricks_retry_args, "databricks_retry_args")
        self.json = json
        for key, value in named.items():
            setattr(self, key, value)
        self.databricks_conn_id = databricks_conn_id
        self.polling_period_seconds = polling_period_seconds
        self.databricks_retry_limit = databricks_retry_limit
        self.databricks_retry_delay = databricks_retry_delay
        self.databricks_retry_args = databricks_retry_args
        if not (isinstance(json, str) and json.endswith(tuple(self.template_ext))):
            payloads.check_literals(json, self._named_values(), payloads.validate_job_settings)

    def _named_values(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.named_fields}

    def build_payload(self) -> dict[str, Any]:
        """The job's settings after rendering: merged, normalised, validated."""
        settings = payloads.normalise_payload(payloads.merge_payload(self.json, self._named_values()))
        payloads.validate_job_settings(settings)
        return settings

    def execute(self, context: Context) -> int:
        settings = self.build_payload()
        job_id = create_or_reset_job(hook_for(self), settings)
        if self.do_xcom_push:
            context["ti"].xcom_push(key=XCOM_JOB_ID, value=job_id)
        return job_id
