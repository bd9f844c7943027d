"""DatabricksRunSensor: waits for a run that something else started, and judges its outcome.

The sensor only reads: it never submits, repairs nor cancels a run, so a retried or
cleared sensor, or one whose task is killed, leaves the run as it is.
"""

from __future__ import annotations

import datetime
import logging
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_dbx._run_tasks import (
    DatabricksRunLink,
    LineageMixin,
    hook_for,
    publish_run,
    raise_if_lost,
    report_outcome,
    retry_args_for_trigger,
)
from airflow_dbx.compat import AirflowFailException, conf
from airflow_dbx.errors import DatabricksRunFailed, PayloadError
from airflow_dbx.models import DEFAULT_CONN_ID
from airflow_dbx.payloads import check_positive, check_retry_args, is_literal
from airflow_dbx.trigger import DatabricksRunTrigger

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from airflow.sdk import Context

    from airflow_dbx.hook import DatabricksHook

log = logging.getLogger(__name__)


class DatabricksRunSensor(LineageMixin, BaseSensorOperator):
    """Wait for an existing Databricks run to end, and succeed or fail as the run did.

    ``run_id`` is templated, so it can be an operator's output: submit with
    ``wait_for_termination=False`` and sense ``submit.output``. A run that ends
    unsuccessfully fails the task without retries (a retry would find the same run) with the
    operators' failure report, or skips it with ``soft_fail=True``; a run that succeeds
    returns its run id and pushes ``notebook_output``, as the operators do. The Airflow
    sensor arguments keep their meaning: ``poke_interval`` (the longest wait between two
    status checks), ``timeout`` (then the task fails, or skips with ``soft_fail``),
    ``mode`` and ``soft_fail``.

    The sensor never submits, repairs nor cancels a run: killing or clearing the task, or
    its timeout, stops the waiting and leaves the run running.

    :param run_id: the id of the run to wait for (int, digits, a template or an XComArg).
    :param databricks_conn_id: the Airflow connection to the workspace.
    :param databricks_retry_limit: attempts per API call before giving up.
    :param databricks_retry_delay: base of the exponential backoff between attempts, seconds.
    :param databricks_retry_args: tenacity arguments (``stop``, ``wait``) replacing the above.
    :param allow_success_with_failures: count a SUCCESS_WITH_FAILURES run as a success.
    :param deferrable: wait in the triggerer instead of the worker (default from
        ``[operators] default_deferrable``).
    """

    template_fields: Sequence[str] = ("run_id", "databricks_conn_id")
    operator_extra_links = (DatabricksRunLink(),)
    ui_color = "#ffb59e"

    def __init__(
        self,
        *,
        run_id: Any,
        databricks_conn_id: str = DEFAULT_CONN_ID,
        databricks_retry_limit: int = 3,
        databricks_retry_delay: float = 1,
        databricks_retry_args: dict[str, Any] | None = None,
        allow_success_with_failures: bool = False,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_positive("databricks_retry_limit", databricks_retry_limit, integer=True)
        check_positive("databricks_retry_delay", databricks_retry_delay)
        if databricks_retry_args is not None:
            check_retry_args(databricks_retry_args, "databricks_retry_args")
            if deferrable:
                retry_args_for_trigger(databricks_retry_args)  # refused now, not in the triggerer
        if is_literal(run_id):
            _run_id_of(run_id)
        self.run_id = run_id
        self.databricks_conn_id = databricks_conn_id
        self.databricks_retry_limit = databricks_retry_limit
        self.databricks_retry_delay = databricks_retry_delay
        self.databricks_retry_args = databricks_retry_args
        self.allow_success_with_failures = allow_success_with_failures
        self.deferrable = deferrable

    def _hook(self) -> DatabricksHook:
        return hook_for(self)

    def execute(self, context: Context) -> Any:
        hook = self._hook()
        run = hook.get_run(_run_id_of(self.run_id))
        publish_run(context, run, push=self.do_xcom_push)
        if self.deferrable and not run.state.is_terminal:
            self.defer(
                trigger=DatabricksRunTrigger(
                    run_id=run.run_id,
                    databricks_conn_id=self.databricks_conn_id,
                    polling_period_seconds=self.poke_interval,
                    retry_limit=self.databricks_retry_limit,
                    retry_delay=self.databricks_retry_delay,
                    retry_args=retry_args_for_trigger(self.databricks_retry_args),
                    run_page_url=run.run_page_url,
                    allow_success_with_failures=self.allow_success_with_failures,
                    waiting_since=run.start_time / 1000 or None,
                    cancel_on_kill=False,
                ),
                method_name="execute_complete",
                # Airflow ends the deferral at the timeout; BaseSensorOperator turns that into
                # AirflowSensorTimeout (or a skip with soft_fail). The run is not cancelled.
                timeout=datetime.timedelta(seconds=self.timeout),
            )
        # Poking, even a run that already ended: BaseSensorOperator applies soft_fail there.
        return super().execute(context)

    def poke(self, context: Context) -> bool | PokeReturnValue:
        hook = self._hook()
        run = hook.get_run(_run_id_of(self.run_id))
        if not run.state.is_terminal:
            log.info("Databricks run %s is %s", run.run_id, run.state.outcome)
            return False
        outcome = hook.summarise(run, allow_success_with_failures=self.allow_success_with_failures)
        return PokeReturnValue(is_done=True, xcom_value=self._finish(context, outcome))

    def execute_complete(self, context: Context, event: dict[str, Any]) -> int:
        """Resume after the trigger fired: its event carries the run's outcome."""
        return self._finish(context, event)

    def on_kill(self) -> None:
        """Leave the run alone: this task only watches it (cancel it with an operator's on_kill)."""
        log.info("Task killed: Databricks run %s goes on (this sensor did not start it)", self.run_id)

    def lineage_host_url(self) -> str:
        return self._hook().host_url

    def _finish(self, context: Context, outcome: Mapping[str, Any]) -> int:
        raise_if_lost(outcome)
        self.remember_run_outcome(outcome)
        try:
            return report_outcome(context, outcome, push=self.do_xcom_push)
        except DatabricksRunFailed as failure:
            if self.soft_fail or getattr(self, "never_fail", False):
                # Airflow then skips the task with its own message; keep the report in the log.
                log.warning("%s", failure)
            # AirflowFailException: waiting again cannot change how the run ended, so no
            # retries; and it is the failure BaseSensorOperator turns into a skip on soft_fail.
            raise AirflowFailException(str(failure)) from failure


def _run_id_of(value: Any) -> int:
    """The run id as an int; a PayloadError naming ``run_id`` for anything else."""
    if isinstance(value, bool) or not (
        isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit())
    ):
        raise PayloadError("run_id", f"expected a Databricks run id (an integer), got {value!r}")
    return int(value)


# The SQL sensors live in their own module; importing them here keeps one import path.
from airflow_dbx.sql_sensors import (  # noqa: E402
    DatabricksPartitionSensor,
    DatabricksSqlSensor,
    DatabricksSQLStatementsSensor,
)

__all__ = ["DatabricksPartitionSensor", "DatabricksRunSensor", "DatabricksSQLStatementsSensor", "DatabricksSqlSensor"]
