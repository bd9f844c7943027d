"""One Databricks task as one Airflow task: ``DatabricksNotebookOperator`` and ``DatabricksTaskOperator``.

Alone, each submits a one-task run (``runs/submit``) through the run operators' contract:
exactly-once start, reattach, deferrable wait, failure report, run link. Inside a
:class:`~airflow_dbx.workflow.DatabricksWorkflowTaskGroup` each is one task of the group's
job and follows its own task run in the run the group's launcher started.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_dbx import payloads
from airflow_dbx.compat import AirflowSkipException, conf
from airflow_dbx.errors import DatabricksRunFailed, PayloadError
from airflow_dbx.operators import DatabricksRunOperatorBase
from airflow_dbx.payloads import UNRENDERED, is_literal

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from airflow.sdk import Context

    from airflow_dbx.hook import DatabricksHook
    from airflow_dbx.models import Run

TASK_KEY_MAX = 100
NOTEBOOK_SOURCES = ("WORKSPACE", "GIT")
# Task results that mean Databricks did not run the task: the Airflow task is skipped, never successful.
NOT_RUN_RESULTS = frozenset({"UPSTREAM_FAILED", "UPSTREAM_CANCELED", "EXCLUDED", "DISABLED", "SKIPPED"})
_RETRY_FIELDS = ("max_retries", "min_retry_interval_millis", "retry_on_timeout")


def task_key_for(task_id: str) -> str:
    """A Databricks task key from an Airflow task id: stable, at most 100 characters of ``[\\w-]``.

    Dots (task groups) become ``__``; a longer id keeps its head and a hash of the whole.
    """
    key = re.sub(r"[^\w-]", "_", task_id.replace(".", "__"))
    if len(key) <= TASK_KEY_MAX:
        return key
    return f"{key[: TASK_KEY_MAX - 9]}_{hashlib.sha256(task_id.encode()).hexdigest()[:8]}"


def workflow_group_of(task: Any) -> Any:
    """The DatabricksWorkflowTaskGroup ``task`` is in (at any depth), or None."""
    group = getattr(task, "task_group", None)
    while group is not None:
        if getattr(group, "is_databricks", False):
            return group
        group = getattr(group, "parent_group", None)
    return None


class DatabricksTaskBaseOperator(DatabricksRunOperatorBase):
    """What the notebook and task operators share: the cluster, Databricks' own task retries,
    the task key, and the two ways of running (alone, or in a workflow group).

    :param databricks_task_key: the task's key in Databricks; by default derived from the task id.
    :param existing_cluster_id: run on this all-purpose cluster.
    :param new_cluster: run on a new cluster of this spec.
    :param job_cluster_key: in a workflow group, run on this shared job cluster of the group.
    :param max_retries: Databricks' retries of the task (``-1``: until it succeeds).
    :param min_retry_interval_millis: the least wait between two of those attempts.
    :param retry_on_timeout: whether Databricks also retries an attempt that timed out.
    :param workflow_run_metadata: accepted for compatibility; the group's launcher is read instead.
    """

    task_fields: ClassVar[tuple[str, ...]] = ()
    template_fields: Sequence[str] = (*DatabricksRunOperatorBase.template_fields, *_RETRY_FIELDS)

    def __init__(
        self,
        *,
        databricks_task_key: str = "",
        existing_cluster_id: str = "",
        job_cluster_key: str = "",
        new_cluster: dict[str, Any] | None = None,
        polling_period_seconds: float = 5,
        workflow_run_metadata: dict[str, Any] | None = None,
        max_retries: int | str | None = None,
        min_retry_interval_millis: int | str | None = None,
        retry_on_timeout: bool | str | None = None,
        caller: str | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        self._databricks_task_key = databricks_task_key
        self.existing_cluster_id = existing_cluster_id
        self.job_cluster_key = job_cluster_key
        self.new_cluster = new_cluster or {}
        self.workflow_run_metadata = workflow_run_metadata
        self.max_retries = max_retries
        self.min_retry_interval_millis = min_retry_interval_millis
        self.retry_on_timeout = retry_on_timeout
        self.caller = caller or type(self).__name__
        self._parent_run_id = 0  # in a workflow group: the group's job run, once known
        super().__init__(polling_period_seconds=polling_period_seconds, deferrable=deferrable, **kwargs)

    # ------------------------------------------------------------------ the task's settings

    @property
    def databricks_task_key(self) -> str:
        if self._databricks_task_key:
            return self._databricks_task_key
        group = workflow_group_of(self)
        prefix = f"{group.group_id}." if group is not None and group.group_id else ""
        return task_key_for(self.task_id.removeprefix(prefix))

    def task_body(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The task's type and its own settings (``notebook_task``, ``libraries``, ...) from the
        operator's ``task_fields``; subclasses say how."""
        raise NotImplementedError

    def check_task_body(self, body: Mapping[str, Any]) -> None:
        """Refuse what Databricks would refuse in the task's own settings; subclasses add checks."""

    def task_settings(self, *, rendered: bool = True) -> dict[str, Any]:
        """The Databricks task (without ``depends_on``), normalised and checked.

        Before rendering, values that are templates or XComArgs stand in as UNRENDERED, so only
        literal mistakes are refused.
        """
        fields = (*self.task_fields, "existing_cluster_id", "job_cluster_key", "new_cluster", *_RETRY_FIELDS)
        values = {name: getattr(self, name) for name in fields}
        if not rendered:
            values = {name: value if is_literal(value) else UNRENDERED for name, value in values.items()}
        spec: dict[str, Any] = {"task_key": self.databricks_task_key, **self.task_body(values)}
        for name in ("existing_cluster_id", "job_cluster_key", "new_cluster"):
            if values[name]:
                spec[name] = values[name]
        spec.update({name: values[name] for name in _RETRY_FIELDS if values[name] is not None})
        spec = payloads.normalise_payload(spec, root=self.task_id)
        self._check(spec)
        return spec

    def _check(self, spec: Mapping[str, Any]) -> None:
        key = spec["task_key"]
        if not re.fullmatch(r"[\w-]{1,100}", key):
            raise PayloadError("databricks_task_key", f"1 to 100 letters, digits, '_' or '-', got {key!r}")
        if spec.get("new_cluster") and spec.get("existing_cluster_id"):
            raise PayloadError("new_cluster", "give either new_cluster or existing_cluster_id, not both")
        if spec.get("job_cluster_key") and (spec.get("existing_cluster_id") or spec.get("new_cluster")):
            raise PayloadError("job_cluster_key", "give a job_cluster_key or a cluster of the task's own, not both")
        if spec.get("job_cluster_key") and workflow_group_of(self) is None:
            raise PayloadError("job_cluster_key", "only a task of a DatabricksWorkflowTaskGroup runs on a job cluster")
        self.check_task_body(spec)

    def _check_at_parse_time(self) -> None:
        self.task_settings(rendered=False)

    # ------------------------------------------------------------------ running

    def build_payload(self, hook: DatabricksHook) -> dict[str, Any]:
        if workflow_group_of(self) is not None:
            return {}  # the group's launcher started the run this task is part of
        task = self.task_settings()
        return {"run_name": task["task_key"], "tasks": [task], "idempotency_token": self.idempotency_token}

    def post(self, hook: DatabricksHook, payload: dict[str, Any]) -> int:
        return hook.submit_run(payload)

    def _start(self, hook: DatabricksHook, payload: dict[str, Any], context: Context) -> Run:
        group = workflow_group_of(self)
        if group is None:
            return super()._start(hook, payload, context)
        from airflow_dbx._workflow_runs import task_run_to_follow  # run time only

        self._parent_run_id, run = task_run_to_follow(hook, context["ti"], group.launcher_task_id, self)
        self._run_id = run.run_id
        return run

    def trigger_target(self, run: Run) -> dict[str, Any]:
        if workflow_group_of(self) is None:
            return super().trigger_target(run)
        return {"run_id": self._parent_run_id, "task_key": self.databricks_task_key}

    def _wait(self, hook: DatabricksHook, run: Run) -> Run:
        if workflow_group_of(self) is None:
            return super()._wait(hook, run)
        if run.state.is_terminal:  # its latest attempt ended before this task came to it
            return run
        from airflow_dbx.waiting import Watcher

        ended = hook.wait_for_task(self._parent_run_id, self.databricks_task_key, Watcher(self.polling_period_seconds))
        assert ended is not None  # no deadline: only the task's end stops the wait
        self._run_id = ended.run_id
        return ended

    def execute(self, context: Context) -> Any:
        return _skipped_if_not_run(lambda: super(DatabricksTaskBaseOperator, self).execute(context))

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        return _skipped_if_not_run(lambda: super(DatabricksTaskBaseOperator, self).execute_complete(context, event))


def _skipped_if_not_run(call: Any) -> Any:
    """A task run that Databricks did not run (an upstream failed, its condition excluded it)
    ends the Airflow task skipped: it did not succeed, and it did not fail on its own."""
    try:
        return call()
    except DatabricksRunFailed as exc:
        if exc.result_state not in NOT_RUN_RESULTS:
            raise
        raise AirflowSkipException(f"Databricks did not run this task ({exc.result_state}):\n{exc}") from exc


class DatabricksNotebookOperator(DatabricksTaskBaseOperator):
    """Run a Databricks notebook as one task: alone (``runs/submit``) or in a workflow group.

    :param notebook_path: the notebook; absolute (``/Users/...``) in the workspace, relative
        to the repository root with ``source="GIT"``.
    :param source: ``WORKSPACE`` or ``GIT`` (the job's ``git_source``); empty lets Databricks choose.
    :param notebook_params: the notebook's parameters (``base_parameters``); in a group, the
        group's ``notebook_params`` are added to them.
    :param notebook_packages: libraries to install for the notebook; in a group, the group's too.
    """

    task_fields = ("notebook_path", "source", "notebook_params", "notebook_packages")
    template_fields: Sequence[str] = (*DatabricksTaskBaseOperator.template_fields, "notebook_params")

    def __init__(
        self,
        *,
        notebook_path: str,
        source: str | None = None,
        notebook_params: dict[str, Any] | None = None,
        notebook_packages: list[dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        self.notebook_path = notebook_path
        self.source = source
        self.notebook_params = notebook_params or {}
        self.notebook_packages = notebook_packages or []
        super().__init__(**kwargs)

    def task_body(self, values: Mapping[str, Any]) -> dict[str, Any]:
        group = workflow_group_of(self)
        params, packages = values["notebook_params"], values["notebook_packages"]
        if group is not None and params is not UNRENDERED:
            params = {**params, **group.notebook_params}
        if group is not None and packages is not UNRENDERED:
            packages = [*packages, *(p for p in group.notebook_packages if p not in packages)]
        notebook = {"notebook_path": values["notebook_path"], "base_parameters": params}
        if values["source"]:
            notebook["source"] = values["source"]
        body: dict[str, Any] = {"notebook_task": notebook}
        if packages:
            body["libraries"] = packages
        return body

    def check_task_body(self, body: Mapping[str, Any]) -> None:
        notebook = body["notebook_task"]
        path, source = notebook["notebook_path"], notebook.get("source")
        if source not in (None, UNRENDERED, *NOTEBOOK_SOURCES):
            raise PayloadError("source", f"expected WORKSPACE or GIT, got {source!r}")
        if path is UNRENDERED:
            return
        if not isinstance(path, str) or not path.strip():
            raise PayloadError("notebook_path", f"expected a notebook path, got {path!r}")
        if source == "GIT" and path.startswith("/"):
            raise PayloadError("notebook_path", f"with source GIT the path is relative to the repository, got {path!r}")
        if source != "GIT" and not path.startswith("/"):
            raise PayloadError("notebook_path", f"a workspace notebook path must start with /, got {path!r}")


class DatabricksTaskOperator(DatabricksTaskBaseOperator):
    """Run any Databricks task (``task_config``: a Task object without ``task_key`` and
    ``depends_on``) as one task: alone (``runs/submit``) or in a workflow group."""

    task_fields = ("task_config",)
    template_fields: Sequence[str] = (*DatabricksTaskBaseOperator.template_fields, "task_config")

    def __init__(self, *, task_config: dict[str, Any], **kwargs: Any) -> None:
        self.task_config = task_config
        super().__init__(**kwargs)

    def task_body(self, values: Mapping[str, Any]) -> dict[str, Any]:
        config = values["task_config"]
        if config is UNRENDERED:
            return {}
        if not isinstance(config, dict):
            raise PayloadError("task_config", f"expected a Databricks task object, got {type(config).__name__}")
        return {k: v for k, v in config.items() if k not in ("task_key", "depends_on")}

    def check_task_body(self, body: Mapping[str, Any]) -> None:
        if is_literal(self.task_config) and not any(name.endswith("_task") for name in body):
            raise PayloadError("task_config", "names no task type (notebook_task, spark_python_task, ...)")
