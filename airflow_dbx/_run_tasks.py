"""What the run operators and the run sensor share: XCom keys, the run link, the hook, and
how a task reports a run's start and end."""

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
