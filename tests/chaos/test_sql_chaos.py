"""SQL statements under lost answers, 5xx, 429 and dropped connections: none runs twice, none leaks."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_dbx.emulator.sql_warehouses import DEFAULT_WAREHOUSE_ID
from airflow_dbx.operators import DatabricksSqlOperator, DatabricksSQLStatementsOperator
from tests.integration.conftest import TryContext

pytest.importorskip("duckdb")
pytest.importorskip("sqlglot")


@pytest.fixture
def emulator(emulator: Any, set_connection: Any) -> Any:
    set_connection("databricks_default", host=emulator.url, password=emulator.token)
    return emulator


def inserts(emulator: Any) -> list[tuple[int, str]]:
    with emulator.sql.lock:
        return [(s.executions, s.state) for s in emulator.sql.statements.values() if "INSERT" in s.statement]


def count(emulator: Any) -> str:
    op = DatabricksSQLStatementsOperator(task_id="count", statement="SELECT count(*) AS n FROM once",
                                         warehouse_id=DEFAULT_WAREHOUSE_ID, polling_period_seconds=1)
    return str(op.execute(TryContext())[0]["n"])


@pytest.mark.parametrize(
    "fault",
    [
        lambda emu: emu.lose_response_next("POST", "sql/statements"),
        lambda emu: emu.lose_response_next("POST", "sql/statements", status=502),
        lambda emu: emu.fail_next("POST", "sql/statements", count=2, status=503),
        lambda emu: emu.fail_next("POST", "sql/statements", count=2, status=429, retry_after=0.05),
        lambda emu: emu.drop_next("POST", "sql/statements"),
        lambda emu: emu.fail_next("GET", "sql/history/queries", count=1, status=500),
    ],
    ids=["lost", "lost-then-502", "503", "429", "dropped", "history-500"],
)
@pytest.mark.parametrize("operator", ["statements", "sql"])
def test_an_insert_runs_exactly_once(emulator, operator: str, fault: Any) -> None:
    DatabricksSqlOperator(task_id="c", sql="CREATE TABLE once (a INT)", warehouse_id=DEFAULT_WAREHOUSE_ID,
                          polling_period_seconds=1).execute(TryContext())
    fault(emulator)
    if operator == "statements":
        op: Any = DatabricksSQLStatementsOperator(
            task_id="ins", statement="INSERT INTO once VALUES (1)", warehouse_id=DEFAULT_WAREHOUSE_ID,
            polling_period_seconds=1, databricks_retry_delay=0.05,
        )
    else:
        op = DatabricksSqlOperator(task_id="ins", sql="INSERT INTO once VALUES (1)", warehouse_id=DEFAULT_WAREHOUSE_ID,
                                   polling_period_seconds=1, databricks_retry_delay=0.05)
    op.execute(TryContext())
    assert inserts(emulator) == [(1, "SUCCEEDED")]
    assert count(emulator) == "1"
