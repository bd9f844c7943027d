"""``DatabricksWorkflowTaskGroup``: the Airflow tasks of a group run as the tasks of one
Databricks job run, on shared job clusters.

At parse time the group turns its tasks and their edges into one job definition. Its
launcher creates or resets that job and starts one run of it per DAG run, exactly once; each
task of the group then follows its own task run (``DatabricksTaskBaseOperator``), and a new
try of a failed task repairs that task in the same run.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow.sdk import TaskGroup

from airflow_dbx import payloads
from airflow_dbx.errors import PayloadError
from airflow_dbx.models import DEFAULT_CONN_ID
from airflow_dbx.operators import DatabricksRunOperatorBase
from airflow_dbx.task_operators import DatabricksTaskBaseOperator

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType

    from airflow.sdk import Context

    from airflow_dbx.hook import DatabricksHook
    from airflow_dbx.models import Run

log = logging.getLogger("airflow_dbx.operators")

LAUNCHER_ID = "launch"
# Airflow trigger rules with a Databricks run_if of the same meaning.
RUN_IF = {
    "all_success": "ALL_SUCCESS",
    "all_done": "ALL_DONE",
    "none_failed": "NONE_FAILED",
    "one_success": "AT_LEAST_ONE_SUCCESS",
    "all_failed": "ALL_FAILED",
    "one_failed": "AT_LEAST_ONE_FAILED",
}
_RUN_PARAMETERS = ("notebook_params", "python_params", "jar_params", "spark_submit_params")


class _CreateDatabricksWorkflowOperator(DatabricksRunOperatorBase):
    """The group's launcher: creates or resets the group's job, then starts one run of it
    (``run-now``) per DAG run; a new try reattaches to that run. Returns ``{conn_id, job_id,
    run_id}``; ``on_kill`` cancels the whole run."""

    template_fields: Sequence[str] = (*DatabricksRunOperatorBase.template_fields, "job_settings", *_RUN_PARAMETERS)
    template_ext: Sequence[str] = ()  # a value ending in .json in the job's settings is not a template file

    def __init__(
        self,
        *,
        job_settings: dict[str, Any],
        notebook_params: dict[str, Any] | None = None,
        python_params: list[Any] | None = None,
        jar_params: list[Any] | None = None,
        spark_submit_params: list[Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.job_settings = job_settings
        self.notebook_params = notebook_params
        self.python_params = python_params
        self.jar_params = jar_params
        self.spark_submit_params = spark_submit_params
        super().__init__(wait_for_termination=False, **kwargs)

    def _check_at_parse_time(self) -> None:
        payloads.validate_job_settings(self.job_settings)  # the group built it from literals

    def build_payload(self, hook: DatabricksHook) -> dict[str, Any]:
        from airflow_dbx.jobs_operators import create_or_reset_job  # run time only, like the hook

        settings = payloads.normalise_payload(self.job_settings, root="job_settings")
        job_id = create_or_reset_job(hook, settings)
        # The run's parameters are handed to every task: notebook_params are already part of each
        # notebook task's base parameters; the others travel with the run (and its repairs).
        run = {name: getattr(self, name) or None for name in _RUN_PARAMETERS if name != "notebook_params"}
        payload = payloads.normalise_payload(payloads.merge_payload({"job_id": job_id}, run))
        payloads.validate_run_now(payload)
        return payload

    def post(self, hook: DatabricksHook, payload: dict[str, Any]) -> int:
        return hook.run_now(payload)

    def _start(self, hook: DatabricksHook, payload: dict[str, Any], context: Context) -> Run:
        """The DAG run's one job run. A later try reattaches to it in whatever state: the
        group's tasks answer for its outcome (and repair what failed), so a failed task run
        never makes the launcher start a second job run."""
        ti = context["ti"]
        chain = (ti.dag_id, ti.task_id, ti.run_id, ti.map_index)
        token = payloads.derive_idempotency_token(*chain, base=payload.get("idempotency_token"))
        run = hook.get_run(self._post(hook, {**payload, "idempotency_token": token}))
        if ti.try_number > 1:
            log.info("Reattaching to Databricks run %s, started by an earlier try", run.run_id)
        return run

    def execute(self, context: Context) -> dict[str, Any]:  # type: ignore[override]  # the official launcher's return value
        run_id = super().execute(context)
        job_id = context["ti"].xcom_pull(task_ids=self.task_id, key="job_id")
        return {"conn_id": self.databricks_conn_id, "job_id": job_id, "run_id": run_id}


class DatabricksWorkflowTaskGroup(TaskGroup):
    """A task group whose tasks (``DatabricksNotebookOperator``, ``DatabricksTaskOperator``)
    run as the tasks of one Databricks job run per DAG run.

    :param databricks_conn_id: the Airflow connection to the workspace.
    :param job_clusters: the job clusters the tasks share (``job_cluster_key``).
    :param existing_clusters: accepted for compatibility (tasks name their ``existing_cluster_id``).
    :param notebook_params: parameters added to every notebook task's own.
    :param notebook_packages: libraries added to every notebook task's own.
    :param python_params: ``python_params`` of the run.
    :param jar_params: ``jar_params`` of the run.
    :param spark_submit_params: ``spark_submit_params`` of the run.
    :param extra_job_params: job settings set over the ones the group builds (``tags``,
        ``email_notifications``, ``parameters``, ...).
    :param access_control_list: the job's permissions, applied when the job is created.
    :param max_concurrent_runs: runs of the job at once (default 1; later DAG runs queue).
    """

    is_databricks = True

    def __init__(
        self,
        *,
        databricks_conn_id: str = DEFAULT_CONN_ID,
        access_control_list: list[dict[str, Any]] | None = None,
        existing_clusters: list[str] | None = None,
        extra_job_params: dict[str, Any] | None = None,
        jar_params: list[str] | None = None,
        job_clusters: list[dict[str, Any]] | None = None,
        max_concurrent_runs: int = 1,
        notebook_packages: list[dict[str, Any]] | None = None,
        notebook_params: dict[str, Any] | None = None,
        python_params: list[Any] | None = None,
        spark_submit_params: list[Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.databricks_conn_id = databricks_conn_id
        self.access_control_list = access_control_list
        self.existing_clusters = existing_clusters or []
        self.extra_job_params = extra_job_params or {}
        self.jar_params = jar_params or []
        self.job_clusters = job_clusters or []
        self.max_concurrent_runs = max_concurrent_runs
        self.notebook_packages = notebook_packages or []
        self.notebook_params = notebook_params or {}
        self.python_params = python_params or []
        self.spark_submit_params = spark_submit_params or []
        super().__init__(**kwargs)
        payloads.job_cluster_keys(self.job_clusters)

    @property
    def job_name(self) -> str:
        return f"{self.dag.dag_id}.{self.group_id or ''}"

    @property
    def launcher_task_id(self) -> str:
        return str(self.child_id(LAUNCHER_ID))

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc_type is None:
                self._add_launcher()
        finally:
            super().__exit__(exc_type, exc, tb)

    def _add_launcher(self) -> None:
        tasks = list(self)
        roots = list(self.get_roots())
        launcher = _CreateDatabricksWorkflowOperator(
            task_id=LAUNCHER_ID,
            task_group=self,
            dag=self.dag,
            databricks_conn_id=self.databricks_conn_id,
            job_settings=self.job_settings(tasks),
            notebook_params=self.notebook_params,
            python_params=self.python_params,
            jar_params=self.jar_params,
            spark_submit_params=self.spark_submit_params,
        )
        for root in roots:
            root.set_upstream(launcher)
        # Edges given to the group itself before its tasks existed move to the launcher and leaves.
        for upstream_id in self.upstream_task_ids:
            launcher.set_upstream(self.dag.get_task(upstream_id))
        for downstream_id in self.downstream_task_ids:
            for leaf in self.get_leaves():
                leaf.set_downstream(self.dag.get_task(downstream_id))

    def job_settings(self, tasks: list[Any]) -> dict[str, Any]:
        """The job definition of the group's tasks and edges; errors name the task at fault."""
        if not tasks:
            raise PayloadError(self.group_id or "group", "a DatabricksWorkflowTaskGroup needs at least one task")
        keys: dict[str, str] = {}
        for task in tasks:
            if not isinstance(task, DatabricksTaskBaseOperator):
                raise PayloadError(
                    task.task_id,
                    f"a {type(task).__name__} cannot become a Databricks task; in a DatabricksWorkflowTaskGroup "
                    "use DatabricksNotebookOperator or DatabricksTaskOperator",
                )
            key = task.databricks_task_key
            if key in keys:
                raise PayloadError(task.task_id, f"its task_key {key!r} is also the key of {keys[key]}")
            keys[key] = task.task_id
        cluster_keys = payloads.job_cluster_keys(self.job_clusters)
        specs = [self._task_spec(task, tasks, cluster_keys) for task in tasks]
        _refuse_cycles(tasks)
        settings: dict[str, Any] = {
            "name": self.job_name,
            "tasks": specs,
            "job_clusters": self.job_clusters,
            "max_concurrent_runs": self.max_concurrent_runs,
            "queue": {"enabled": True},
        }
        if self.access_control_list is not None:
            settings["access_control_list"] = self.access_control_list
        settings.update(self.extra_job_params)
        settings = payloads.normalise_payload(settings, root=self.group_id or "group")
        payloads.validate_job_settings(settings)
        return settings

    def _task_spec(self, task: Any, tasks: list[Any], cluster_keys: set[str]) -> dict[str, Any]:
        spec: dict[str, Any] = task.task_settings()
        cluster_key = spec.get("job_cluster_key")
        if cluster_key and cluster_key not in cluster_keys:
            raise PayloadError(f"{task.task_id}.job_cluster_key", f"{cluster_key!r} is not a job cluster of the group")
        upstream = [t for t in tasks if t.task_id in task.upstream_task_ids]
        if upstream:
            spec["depends_on"] = [{"task_key": t.databricks_task_key} for t in upstream]
        rule = str(getattr(task.trigger_rule, "value", task.trigger_rule))
        if "run_if" not in spec:  # a run_if of the task's own config wins over its trigger rule
            if rule not in RUN_IF:
                raise PayloadError(
                    f"{task.task_id}.trigger_rule", f"{rule!r} has no Databricks run_if; use one of {sorted(RUN_IF)}"
                )
            spec["run_if"] = RUN_IF[rule]
        return spec


def _refuse_cycles(tasks: list[Any]) -> None:
    ids = {task.task_id for task in tasks}
    waiting = {task.task_id: set(task.upstream_task_ids) & ids for task in tasks}
    while waiting:
        ready = [task_id for task_id, deps in waiting.items() if not deps]
        if not ready:
            raise PayloadError(sorted(waiting)[0], f"the tasks {sorted(waiting)} depend on each other in a cycle")
        for task_id in ready:
            del waiting[task_id]
        for deps in waiting.values():
            deps.difference_update(ready)
