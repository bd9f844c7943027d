"""DatabricksSqlOperator, the SQL sensors and the warehouse operators against the emulator."""

from __future__ import annotations

import asyncio
import csv
import json
from typing import Any

import pytest

from airflow_dbx.emulator.sql_warehouses import DEFAULT_WAREHOUSE_ID, DEFAULT_WAREHOUSE_NAME
from airflow_dbx.errors import PayloadError
from airflow_dbx.operators import (
    DatabricksSqlOperator,
    DatabricksStartWarehouseOperator,
    DatabricksStopWarehouseOperator,
)
from airflow_dbx.sensors import DatabricksPartitionSensor, DatabricksSqlSensor, DatabricksSQLStatementsSensor
from airflow_dbx.sql_models import DatabricksSqlFailed
from tests.integration.conftest import TaskDeferred

pytest.importorskip("duckdb")
pytest.importorskip("sqlglot")

SCRIPT = """
CREATE TABLE events (day STRING, kind STRING, n INT);
-- a comment; with a semicolon
INSERT INTO events VALUES ('2024-05-01', 'a;b', 1), ('2024-05-02', 'c', 2);
SELECT day, kind, n FROM events ORDER BY day
"""


def sql_op(**kwargs: Any) -> DatabricksSqlOperator:
    kwargs.setdefault("task_id", "t")
    kwargs.setdefault("polling_period_seconds", 1)
    return DatabricksSqlOperator(**kwargs)


def statements_seen(emulator: Any) -> list[str]:
    with emulator.sql.lock:
        return [s.statement for s in emulator.sql.statements.values()]


def test_a_script_runs_in_order_and_returns_the_last_rows(emulator, try_context) -> None:
    rows = sql_op(sql=SCRIPT, warehouse_id=DEFAULT_WAREHOUSE_ID).execute(try_context())
    assert rows == [{"day": "2024-05-01", "kind": "a;b", "n": "1"}, {"day": "2024-05-02", "kind": "c", "n": "2"}]
    assert [s.splitlines()[-1].split()[0] for s in statements_seen(emulator)] == ["CREATE", "INSERT", "SELECT"]


@pytest.mark.parametrize("output_format", ["csv", "json", "jsonl"])
def test_output_file(emulator, try_context, tmp_path, output_format) -> None:
    out = tmp_path / f"rows.{output_format}"
    sql_op(sql=SCRIPT, http_path=f"/sql/1.0/warehouses/{DEFAULT_WAREHOUSE_ID}", output_path=str(out),
           output_format=output_format, max_xcom_rows=1).execute(try_context())
    text = out.read_text()
    if output_format == "csv":
        assert list(csv.DictReader(text.splitlines()))[1] == {"day": "2024-05-02", "kind": "c", "n": "2"}
    elif output_format == "json":
        assert [r["n"] for r in json.loads(text)] == ["1", "2"]
    else:
        assert [json.loads(line)["kind"] for line in text.splitlines()] == ["a;b", "c"]


def test_warehouse_by_name_and_a_failure_stops_the_script(emulator, try_context) -> None:
    with pytest.raises(DatabricksSqlFailed, match="TABLE_OR_VIEW_NOT_FOUND"):
        sql_op(sql=["SELECT * FROM missing", "CREATE TABLE never (a INT)"],
               sql_endpoint_name=DEFAULT_WAREHOUSE_NAME).execute(try_context())
    assert len(statements_seen(emulator)) == 1
    with pytest.raises(PayloadError, match="sql_endpoint_name"):
        sql_op(sql="SELECT 1", sql_endpoint_name="no such warehouse").execute(try_context())


def test_a_statement_past_its_timeout_is_cancelled(emulator, try_context) -> None:
    from airflow_dbx.compat import AirflowTaskTimeout

    op = sql_op(sql="SELECT 1", warehouse_id=DEFAULT_WAREHOUSE_ID, timeout=2, query_tags={"emulator_duration": "600"})
    with pytest.raises(AirflowTaskTimeout):
        op.execute(try_context())
    with emulator.sql.lock:
        (statement,) = emulator.sql.statements.values()
    assert (statement.state, statement.executions) == ("CANCELED", 0)


def test_sql_sensor_and_partition_sensor(emulator, try_context) -> None:
    sql_op(sql="CREATE TABLE sales (region STRING, day STRING) PARTITIONED BY (day)",
           warehouse_id=DEFAULT_WAREHOUSE_ID).execute(try_context())
    partition = DatabricksPartitionSensor(task_id="p", warehouse_id=DEFAULT_WAREHOUSE_ID, table_name="main.default.sales",
                                          partitions={"day": "2024-05-01", "region": ["eu", "us"]}, poke_interval=1)
    query = DatabricksSqlSensor(task_id="s", warehouse_id=DEFAULT_WAREHOUSE_ID,
                                sql="SELECT 1 FROM sales WHERE day = :day", parameters={"day": "2024-05-01"})
    assert not partition.poke(try_context()) and not query.poke(try_context())
    sql_op(sql="INSERT INTO sales VALUES ('us', '2024-05-01')", warehouse_id=DEFAULT_WAREHOUSE_ID).execute(try_context())
    assert partition.poke(try_context()) and query.poke(try_context())
    sent = statements_seen(emulator)[-2]
    assert "2024-05-01" not in sent and ":p0" in sent


def test_partition_values_cannot_inject(emulator, try_context) -> None:
    sql_op(sql="CREATE TABLE t (day STRING)", warehouse_id=DEFAULT_WAREHOUSE_ID).execute(try_context())
    sensor = DatabricksPartitionSensor(task_id="p", warehouse_id=DEFAULT_WAREHOUSE_ID, table_name="t",
                                       partitions={"day": "x' OR '1'='1"})
    assert not sensor.poke(try_context())


def test_statements_sensor_fails_with_the_statement(emulator, try_context) -> None:
    sensor = DatabricksSQLStatementsSensor(task_id="w", warehouse_id=DEFAULT_WAREHOUSE_ID, statement="SELECT * FROM gone",
                                           poke_interval=1, timeout=30)
    with pytest.raises(DatabricksSqlFailed, match="gone"):
        sensor.execute(try_context())


def test_stop_then_start_a_warehouse(emulator, try_context) -> None:
    warehouse = emulator.sql.warehouses.items[DEFAULT_WAREHOUSE_ID]
    stop = DatabricksStopWarehouseOperator(task_id="stop", warehouse_id=DEFAULT_WAREHOUSE_ID, polling_period_seconds=1)
    assert stop.execute(try_context()) == DEFAULT_WAREHOUSE_ID
    assert warehouse.state == "STOPPED"
    start = DatabricksStartWarehouseOperator(task_id="start", warehouse_id=DEFAULT_WAREHOUSE_ID, deferrable=True,
                                             polling_period_seconds=1)
    with pytest.raises(TaskDeferred) as deferred:
        start.execute(try_context())

    async def first_event() -> dict[str, Any]:
        async for event in deferred.value.trigger.run():
            return event.payload
        raise AssertionError("no event")

    event = asyncio.run(first_event())
    assert start.execute_complete(try_context(), event) == DEFAULT_WAREHOUSE_ID
    assert [state for _, state in warehouse.events] == ["STOPPING", "STOPPED", "STARTING", "RUNNING"]


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: sql_op(sql="  ;  "), "sql"),
        (lambda: sql_op(sql="SELECT 1", output_format="xml"), "output_format"),
        (lambda: sql_op(sql="SELECT 1", http_path="/not/a/warehouse"), "http_path"),
        (lambda: DatabricksPartitionSensor(task_id="p", table_name="a.b.c.d", partitions={"x": 1}), "table_name"),
        (lambda: DatabricksPartitionSensor(task_id="p", table_name="t; DROP", partitions={"x": 1}), "table_name"),
        (lambda: DatabricksPartitionSensor(task_id="p", table_name="t", partitions={"x y": 1}), "partitions"),
        (lambda: DatabricksPartitionSensor(task_id="p", table_name="t", partitions={"x": 1}, partition_operator="LIKE"),
         "partition_operator"),
        (lambda: DatabricksStartWarehouseOperator(task_id="s", warehouse_id=7), "warehouse_id"),
        (lambda: DatabricksSQLStatementsSensor(task_id="w", warehouse_id="w", statement="SELECT 1", mode="reschedule"),
         "mode"),
    ],
)
def test_bad_input_fails_at_parse_time(make: Any, field: str) -> None:
    with pytest.raises(PayloadError, match=field):
        make()


def test_copy_into_loads_real_files_once(emulator, try_context, tmp_path) -> None:
    from airflow_dbx.operators import DatabricksCopyIntoOperator

    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "day1.csv").write_text("id,name\n1,ann\n2,bob\n")
    (landing / "day2.csv").write_text("id,name\n3,cy\n")
    (landing / "notes.txt").write_text("not data")
    emulator.sql.storage_roots["s3://lake/landing"] = str(landing)
    sql_op(sql="CREATE TABLE main.default.people (id INT, name STRING)", warehouse_id=DEFAULT_WAREHOUSE_ID).execute(
        try_context())

    def copy(**kwargs: Any) -> Any:
        return DatabricksCopyIntoOperator(
            task_id="copy", table_name="main.default.people", file_location="s3://lake/landing", file_format="CSV",
            pattern="*.csv", format_options={"header": "true"}, warehouse_id=DEFAULT_WAREHOUSE_ID,
            polling_period_seconds=1, **kwargs).execute(try_context())

    assert copy() == {"num_affected_rows": "3", "num_inserted_rows": "3"}
    assert copy() == {"num_affected_rows": "0", "num_inserted_rows": "0"}  # files already loaded are skipped
    assert copy(force_copy=True)["num_inserted_rows"] == "3"
    rows = sql_op(sql="SELECT count(*) AS n FROM people", warehouse_id=DEFAULT_WAREHOUSE_ID).execute(try_context())
    assert rows == [{"n": "6"}]
    sent = next(s for s in statements_seen(emulator) if "COPY INTO" in s)
    assert "COPY INTO `main`.`default`.`people`" in sent and "PATTERN = '*.csv'" in sent


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"file_format": "XML"}, "file_format"),
        ({"table_name": "people`; DROP TABLE x; --"}, "table_name"),
        ({"format_options": {"header'; DROP": "x"}}, "format_options"),
        ({"files": ["a.csv"], "pattern": "*.csv"}, "files"),
        ({"validate": -3}, "validate"),
    ],
)
def test_copy_into_bad_input_fails_at_parse_time(kwargs: dict[str, Any], field: str) -> None:
    from airflow_dbx.operators import DatabricksCopyIntoOperator

    args = {"table_name": "people", "file_location": "s3://lake/x", "file_format": "CSV", **kwargs}
    with pytest.raises(PayloadError, match=field):
        DatabricksCopyIntoOperator(task_id="copy", **args)
