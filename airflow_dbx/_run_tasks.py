"""What the operators and sensors share: XCom keys, the run link, the hook, how a task reports a
run's start and end, and what it tells the OpenLineage provider.

The OpenLineage listener calls ``get_openlineage_facets_on_start`` / ``_on_complete`` /
``_on_failure`` on the task it watches. Tasks record what they learn while they run
(:meth:`LineageMixin.remember`); the facets are built from it by :mod:`airflow_dbx._openlineage`,
the only module that imports OpenLineage, loaded only by those calls: without the provider
nothing of it is imported. It lives here, in a module every operator loads anyway, so that
importing the operators costs no more than before.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink

from airflow_dbx.errors import DatabricksError, DatabricksRunFailed

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from airflow.sdk import BaseOperator, Context
    from airflow.sdk.types import TaskInstanceKey  # type: ignore[attr-defined,unused-ignore]  # 3.2+

    from airflow_dbx.hook import DatabricksHook
    from airflow_dbx.models import Run

log = logging.getLogger("airflow_dbx.operators")

XCOM_RUN_ID = "run_id"
XCOM_JOB_ID = "job_id"
XCOM_RUN_PAGE_URL = "run_page_url"
XCOM_NOTEBOOK_OUTPUT = "notebook_output"


class DatabricksRunLink(BaseOperatorLink):
    """The "Databricks run" button on a task: the run page URL pushed to XCom at submission."""

    name = "Databricks run"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        return XCom.get_value(ti_key=ti_key, key=XCOM_RUN_PAGE_URL) or ""


def lazy_exports(module: str, modules: Mapping[str, tuple[str, ...]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``airflow_dbx.<name>`` for its listed names on first use,
    so that a DAG file importing ``module`` pays only for what it uses."""
    where = {name: f"airflow_dbx.{source}" for source, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        return getattr(importlib.import_module(where[name]), name)

    return __getattr__


def hook_for(task: Any) -> DatabricksHook:
    """The hook of a task built from its ``databricks_*`` arguments."""
    # Imported here: DAG files load the operators, and only running tasks need HTTP clients.
    from airflow_dbx.hook import DatabricksHook

    retrying = (task.databricks_retry_limit, task.databricks_retry_delay, task.databricks_retry_args)
    return DatabricksHook(task.databricks_conn_id, *retrying, caller=type(task).__name__)


def publish_run(context: Context, run: Run, *, push: bool) -> None:
    """Log the run page and, when ``push``, put the run's identity in XCom (the extra link reads it)."""
    log.info("Databricks run %s: %s", run.run_id, run.run_page_url)
    if push:
        ti = context["ti"]
        ti.xcom_push(key=XCOM_RUN_ID, value=run.run_id)
        ti.xcom_push(key=XCOM_JOB_ID, value=run.job_id)
        ti.xcom_push(key=XCOM_RUN_PAGE_URL, value=run.run_page_url)


def retry_args_for_trigger(retry_args: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``databricks_retry_args`` in the JSON form a trigger carries (PayloadError if they have none)."""
    if not retry_args:
        return None
    from airflow_dbx._http.retry_args import encode  # only DAGs that set retry_args load it

    return encode(retry_args, "databricks_retry_args")


def another_try_will_come(task: Any, ti: Any) -> bool:
    """Whether Airflow runs the task again after this try fails (``max_tries`` grows when it is cleared)."""
    max_tries = getattr(ti, "max_tries", None)
    return bool(task.retries) and ti.try_number <= (task.retries if max_tries is None else max_tries)


def raise_if_lost(event: Mapping[str, Any]) -> None:
    """A trigger event that says the wait failed (the run's state could not be read) as an error."""
    if event.get("error"):
        raise DatabricksError(
            f"Lost track of Databricks run {event['run_id']}: {event['error']}. "
            f"Run page: {event.get('run_page_url') or 'unknown'}"
        )


def report_outcome(context: Context, outcome: Mapping[str, Any], *, push: bool) -> int:
    """Push the notebook output; the run id if the run succeeded, else DatabricksRunFailed with the report."""
    if outcome.get("notebook_output") is not None and push:
        context["ti"].xcom_push(key=XCOM_NOTEBOOK_OUTPUT, value=outcome["notebook_output"])
    if not outcome["successful"]:
        raise DatabricksRunFailed(
            outcome["report"], run_id=outcome["run_id"], result_state=outcome["state"]["result_state"]
        )
    log.info("Databricks run %s succeeded", outcome["run_id"])
    return int(outcome["run_id"])


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

    def lineage_known_datasets(self) -> tuple[list[str], list[str]]:
        """What the task reads (storage URIs) and writes (table names) that no SQL parser finds."""
        return [], []

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
