"""Start or stop a SQL warehouse (``/api/2.0/sql/warehouses/{id}/start|stop``) and wait until it
runs or has stopped, in the worker or deferred on the warehouse's state."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator

from airflow_dbx import sql_models
from airflow_dbx._run_tasks import retry_args_for_trigger
from airflow_dbx.compat import AirflowTaskTimeout, conf
from airflow_dbx.errors import DatabricksError
from airflow_dbx.models import DEFAULT_CONN_ID
from airflow_dbx.payloads import check_positive, is_literal
from airflow_dbx.sql_operators import check_common, sql_hook_for
from airflow_dbx.trigger import DatabricksWarehouseTrigger
from airflow_dbx.waiting import Watcher

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context

__all__ = ["DatabricksStartWarehouseOperator", "DatabricksStopWarehouseOperator"]

log = logging.getLogger("airflow_dbx.operators")


class _WarehouseOperator(BaseOperator):
    action: ClassVar[str]
    template_fields: Sequence[str] = ("databricks_conn_id", "warehouse_id")
    ui_color = "#ff7a59"

    def __init__(
        self,
        *,
        warehouse_id: str,
        databricks_conn_id: str = DEFAULT_CONN_ID,
        wait_for_termination: bool = True,
        polling_period_seconds: float = 30,
        timeout: float = 3600,
        databricks_retry_limit: int = 3,
        databricks_retry_delay: float = 1,
        databricks_retry_args: dict[str, Any] | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.warehouse_id = warehouse_id
        self.databricks_conn_id = databricks_conn_id
        self.wait_for_termination = wait_for_termination
        self.polling_period_seconds = polling_period_seconds
        self.timeout = timeout
        self.databricks_retry_limit = databricks_retry_limit
        self.databricks_retry_delay = databricks_retry_delay
        self.databricks_retry_args = databricks_retry_args
        self.deferrable = deferrable
        check_common(self)
        check_positive("timeout", timeout)
        if is_literal(warehouse_id):
            sql_models.check_warehouse_id(warehouse_id)

    def execute(self, context: Context) -> str:
        warehouse_id = sql_models.check_warehouse_id(self.warehouse_id)
        hook = sql_hook_for(self)
        hook.change_warehouse(warehouse_id, self.action)
        log.info("Asked SQL warehouse %s to %s", warehouse_id, self.action)
        if not self.wait_for_termination:
            return warehouse_id
        deadline = time.time() + self.timeout
        if self.deferrable:
            self.defer(
                trigger=DatabricksWarehouseTrigger(
                    warehouse_id=warehouse_id,
                    action=self.action,
                    databricks_conn_id=self.databricks_conn_id,
                    end_time=deadline,
                    polling_period_seconds=self.polling_period_seconds,
                    retry_limit=self.databricks_retry_limit,
                    retry_delay=self.databricks_retry_delay,
                    retry_args=retry_args_for_trigger(self.databricks_retry_args),
                ),
                method_name="execute_complete",
            )
        watcher = Watcher(self.polling_period_seconds, deadline=deadline)
        state = hook.wait_for_warehouse(warehouse_id, self.action, watcher)
        return self.execute_complete(context, {"warehouse_id": warehouse_id, "state": state})

    def execute_complete(self, context: Context, event: dict[str, Any]) -> str:
        wanted = sql_models.WAREHOUSE_STABLE[self.action]
        if event.get("state") is None:
            raise AirflowTaskTimeout(f"SQL warehouse {event['warehouse_id']} was not {wanted} within {self.timeout}s")
        if event["state"] != wanted:
            raise DatabricksError(f"SQL warehouse {event['warehouse_id']} is {event['state']}, not {wanted}")
        log.info("SQL warehouse %s is %s", event["warehouse_id"], wanted)
        return str(event["warehouse_id"])


class DatabricksStartWarehouseOperator(_WarehouseOperator):
    """Start a SQL warehouse and (by default) wait until it is RUNNING; returns its id."""

    action = "start"


class DatabricksStopWarehouseOperator(_WarehouseOperator):
    """Stop a SQL warehouse and (by default) wait until it is STOPPED; returns its id."""

    action = "stop"
