"""SQL sensors on the Statement Execution API: a query returns a row, a partition exists, a
statement ends. Values always travel as statement parameters, never inside the SQL text."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseSensorOperator

from airflow_dbx import sql_models
from airflow_dbx.errors import PayloadError
from airflow_dbx.payloads import is_literal
from airflow_dbx.sql_operators import WarehouseTask, airflow_tags, run_sql, sql_hook_for, start_once, try_marker

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context

__all__ = ["DatabricksPartitionSensor", "DatabricksSQLStatementsSensor", "DatabricksSqlSensor"]

log = logging.getLogger(__name__)

PARTITION_OPERATORS = ("=", "!=", "<>", "<", "<=", ">", ">=")
_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _WarehouseSensor(WarehouseTask, BaseSensorOperator):
    """A query sensor: the warehouse arguments of the SQL operators, the sensor's own."""

    warehouse_name_field: ClassVar[str] = "sql_warehouse_name"


class DatabricksSqlSensor(_WarehouseSensor):
    """True once ``sql`` returns at least one row (``parameters`` bind its ``:name`` markers)."""

    template_fields: Sequence[str] = ("sql", "parameters", "warehouse_id", "catalog", "schema", "databricks_conn_id")
    template_ext: Sequence[str] = (".sql",)

    def __init__(self, *, sql: str, parameters: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sql = sql
        self.parameters = parameters
        if is_literal(sql) and not str(sql).endswith(".sql"):
            sql_models.check_statement(sql, "sql")
        if is_literal(parameters):
            sql_models.normalise_parameters(parameters)

    def poke(self, context: Context) -> bool:
        rows = run_sql(self, context, self.sql, self.parameters, limit=1)
        log.info("The query returned %s", "a row" if rows else "no row")
        return bool(rows)


class DatabricksPartitionSensor(_WarehouseSensor):
    """True once ``table_name`` has a partition matching every ``partitions`` condition.

    ``partitions`` maps a partition column to a value or a list of values (any of them);
    ``partition_operator`` compares each column with its value(s). The table name is checked
    and back-quoted, the columns checked, and every value sent as a statement parameter.
    """

    template_fields: Sequence[str] = (
        "table_name", "partitions", "warehouse_id", "catalog", "schema", "databricks_conn_id",
    )

    def __init__(
        self, *, table_name: str, partitions: dict[str, Any], partition_operator: str = "=", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.table_name = table_name
        self.partitions = partitions
        if partition_operator not in PARTITION_OPERATORS:
            allowed = " ".join(PARTITION_OPERATORS)
            raise PayloadError("partition_operator", f"must be one of {allowed}, got {partition_operator!r}")
        self.partition_operator = partition_operator
        if is_literal(table_name):
            sql_models.check_table_name(table_name)
        if is_literal(partitions):
            self.query()

    def query(self) -> tuple[str, list[dict[str, Any]]]:
        """The existence query and its parameters."""
        if not isinstance(self.partitions, dict) or not self.partitions:
            problem = f"must be a non-empty mapping of column to value(s), got {self.partitions!r}"
            raise PayloadError("partitions", problem)
        conditions: list[str] = []
        parameters: list[dict[str, Any]] = []
        for column, value in self.partitions.items():
            if not isinstance(column, str) or not _COLUMN.match(column):
                raise PayloadError("partitions", f"{column!r} is not a plain column name")
            values = value if isinstance(value, (list, tuple)) else [value]
            if not values:
                raise PayloadError("partitions", f"no value given for {column!r}")
            markers = []
            for value_item in values:
                name = f"p{len(parameters)}"
                parameters.append({"name": name, "value": value_item})
                markers.append(f"`{column}` {self.partition_operator} :{name}")
            conditions.append("(" + " OR ".join(markers) + ")")
        table = sql_models.quote_identifier(self.table_name)
        return f"SELECT 1 FROM {table} WHERE {' AND '.join(conditions)} LIMIT 1", parameters

    def poke(self, context: Context) -> bool:
        sql, parameters = self.query()
        found = bool(run_sql(self, context, sql, parameters, limit=1))
        log.info("Partition %s of %s: %s", self.partitions, self.table_name, "found" if found else "not yet")
        return found


class DatabricksSQLStatementsSensor(_WarehouseSensor):
    """Wait for a SQL statement to end: the one ``statement_id`` names (started elsewhere; never
    cancelled here), or ``statement`` started by this sensor (a later try reattaches to it while
    it is running or succeeded). Fails when the statement did not succeed."""

    template_fields: Sequence[str] = ("statement", "statement_id", "warehouse_id", "databricks_conn_id")

    def __init__(
        self,
        *,
        statement: str | None = None,
        statement_id: str | None = None,
        parameters: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (statement is None) == (statement_id is None):
            raise PayloadError("statement", "give either statement or statement_id")
        if statement is not None and self.mode == "reschedule":
            # Each reschedule is a fresh instance: it would start the statement again.
            raise PayloadError("mode", "a sensor that starts its statement cannot reschedule; use poke or deferrable")
        self.statement = statement
        self.statement_id = statement_id
        self.parameters = parameters

    def execute(self, context: Context) -> Any:
        if self.statement is not None and self.statement_id is None:
            hook = sql_hook_for(self)
            tags = airflow_tags(context, self.query_tags, self.include_airflow_query_tags)
            body = {
                "statement": sql_models.marked(sql_models.check_statement(self.statement), try_marker(context)),
                "warehouse_id": sql_models.check_warehouse_id(self.warehouse_id),
                "parameters": sql_models.normalise_parameters(self.parameters) or None,
                "wait_timeout": "0s",
                "query_tags": sql_models.query_tag_list(tags) or None,
            }
            started = start_once(hook, context, {k: v for k, v in body.items() if v is not None})
            self.statement_id = started.statement_id
            context["ti"].xcom_push(key="statement_id", value=self.statement_id)
        return super().execute(context)

    def poke(self, context: Context) -> bool:
        assert self.statement_id is not None
        statement = sql_hook_for(self).get_statement(self.statement_id)
        if not statement.state.is_terminal:
            return False
        if not statement.state.is_successful:
            raise sql_models.DatabricksSqlFailed(statement)
        return True
