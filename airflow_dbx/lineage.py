"""What the operators tell the OpenLineage provider, when it is installed.

The OpenLineage listener calls ``get_openlineage_facets_on_start`` / ``_on_complete`` /
``_on_failure`` on the task it watches. Operators record what they learn while they run
(:meth:`LineageMixin.remember`); the facets are built from it by
:mod:`airflow_dbx._openlineage`, which is the only module that imports OpenLineage and is
loaded only by those calls, so without the provider nothing of it is imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow.sdk import Context

# Options of the OpenLineage provider's ``[openlineage]`` section that this package reads.
CONFIG_SECTION = "openlineage"
INJECT_PARENT_JOB_INFO = "spark_inject_parent_job_info"


class LineageMixin:
    """OpenLineage facets of a task that runs something on Databricks.

    Subclasses say where the workspace is (:meth:`lineage_host_url`) and which SQL they run.
    """

    def remember(self, **facts: Any) -> None:
        """Keep what the task learnt (run id, state, ...) for the facets built after it ran."""
        known: dict[str, Any] = getattr(self, "_lineage_facts", None) or {}
        known.update({key: value for key, value in facts.items() if value is not None})
        self._lineage_facts = known

    def remember_run_outcome(self, outcome: Mapping[str, Any]) -> None:
        """Keep how a run ended, from its summary (or a trigger event carrying one)."""
        state = outcome.get("state") or {}
        self.remember(
            run_id=outcome.get("run_id"),
            run_page_url=outcome.get("run_page_url"),
            state=state.get("result_state") or state.get("life_cycle_state"),
            error=outcome.get("report"),
        )

    def lineage_facts(self) -> Mapping[str, Any]:
        return getattr(self, "_lineage_facts", None) or {}

    def lineage_host_url(self) -> str:
        """The workspace's base URL (``https://host[:port]``)."""
        raise NotImplementedError

    def lineage_query(self) -> str | None:
        """The SQL this task runs, parsed for datasets; ``None`` for a task that runs no SQL."""
        return None

    def lineage_default_names(self) -> tuple[str | None, str | None]:
        """The catalog and schema an unqualified table name belongs to."""
        return None, None

    def get_openlineage_facets_on_start(self) -> Any:
        from airflow_dbx._openlineage import operator_lineage

        return operator_lineage(self)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        from airflow_dbx._openlineage import operator_lineage

        return operator_lineage(self)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        from airflow_dbx._openlineage import operator_lineage

        return operator_lineage(self)


def wants_parent_job_info(choice: bool | None) -> bool:
    """The operator's ``openlineage_inject_parent_job_info``, or the provider's config switch when unset."""
    if choice is not None:
        return choice
    from airflow_dbx.compat import conf

    return bool(conf.getboolean(CONFIG_SECTION, INJECT_PARENT_JOB_INFO, fallback=False))


def inject_parent_job_info(payload: dict[str, Any], context: Context) -> dict[str, Any]:
    """The run request with the Airflow task's OpenLineage identity added, never over a user's value.

    New clusters get it as Spark conf (read by Databricks' OpenLineage Spark listener), a job run
    as job parameters. Without the OpenLineage provider the payload is returned unchanged.
    """
    try:
        from airflow_dbx._openlineage import parent_job_properties
    except ImportError:
        return payload
    return _with_parent_properties(payload, parent_job_properties(context))


# Task-level parameter fields that Databricks refuses to combine with ``job_parameters``.
_LEGACY_PARAMETERS = (
    "notebook_params", "python_params", "python_named_params", "jar_params", "spark_submit_params", "sql_params",
    "dbt_commands",
)


def _with_parent_properties(payload: dict[str, Any], properties: Mapping[str, str]) -> dict[str, Any]:
    def add_to(holder: Mapping[str, Any]) -> Mapping[str, Any]:
        cluster = holder.get("new_cluster")
        if not isinstance(cluster, dict):
            return holder
        spark_conf = dict(cluster.get("spark_conf") or {})
        if any(str(key).startswith("spark.openlineage.parent") for key in spark_conf):
            return holder  # the user named a parent: theirs stays whole
        return {**holder, "new_cluster": {**cluster, "spark_conf": {**properties, **spark_conf}}}

    result = dict(payload)
    for name in ("tasks", "job_clusters"):
        if isinstance(result.get(name), list):
            result[name] = [add_to(item) if isinstance(item, dict) else item for item in result[name]]
    if "job_id" in result and not any(result.get(name) is not None for name in _LEGACY_PARAMETERS):
        # run-now: the job's tasks read them as {{job.parameters.openlineage_parentRunId}} and so on
        ours = {f"openlineage_{key.rsplit('.', 1)[-1]}": value for key, value in properties.items()}
        result["job_parameters"] = {**ours, **(result.get("job_parameters") or {})}
    return result
