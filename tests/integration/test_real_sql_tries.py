"""Tries of SQL tasks as Airflow runs them (``airflow dags test`` with retries, real task
instances), judged from the emulator's statement records: a retried try reattaches to the
statement of the try before while it is running or succeeded, so no SQL runs twice.
"""

from __future__ import annotations

import subprocess
import textwrap
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from airflow_dbx.emulator.sql_warehouses import DEFAULT_WAREHOUSE_ID
from tests.integration.conftest import AIRFLOW, airflow_env

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

pytest.importorskip("duckdb")
pytest.importorskip("sqlglot")

DAG_ID = "dbx_sql_tries"
REFUSED = {"error_code": "PERMISSION_DENIED", "message": "the token lost its grant"}
# 15 s at the test emulator's time scale: longer than the 10 s an execute request waits, so the
# statement is still running when its task first reads its status.
SLOW = {"emulator_duration": "150"}


def dag_file(folder: Path, task: str) -> None:
    (folder / f"{DAG_ID}.py").write_text(textwrap.dedent(f"""
        import datetime
        from airflow.sdk import DAG
        from airflow_dbx.operators import DatabricksSqlOperator
        from airflow_dbx.sensors import DatabricksSQLStatementsSensor

        with DAG("{DAG_ID}", schedule=None, start_date=datetime.datetime(2026, 1, 1)):
            setup = DatabricksSqlOperator(task_id="setup", warehouse_id="{DEFAULT_WAREHOUSE_ID}",
                                          sql="CREATE TABLE IF NOT EXISTS t (a INT)")
            setup >> {task}
    """))


def dags_test(folder: Path) -> str:
    env = airflow_env(AIRFLOW__CORE__DAGS_FOLDER=str(folder))
    result = subprocess.run([AIRFLOW, "dags", "test", DAG_ID, "2026-01-01"], env=env, capture_output=True,
                            text=True, timeout=300, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    return output


def records(emulator: Any) -> list[dict[str, Any]]:
    """The emulator's statements: the SQL (its marker comment cut), runs, cancels, state."""
    with emulator.sql.lock:
        return [
            {"sql": s.statement.split("*/", 1)[-1].strip(), "executions": s.executions, "cancels": s.cancels,
             "state": s.state, "id": s.statement_id}
            for s in emulator.sql.statements.values()
        ]


def when_running(emulator: Any, sql: str, act: Callable[[str], None]) -> threading.Thread:
    """Call ``act(statement_id)`` once the statement ``sql`` was submitted and has not ended (bounded wait)."""

    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            found = [r for r in records(emulator) if r["sql"] == sql and r["state"] in ("PENDING", "RUNNING")]
            if found:
                act(found[0]["id"])
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def folder(tmp_path: Path, emulator: Any, airflow_db: None) -> Path:
    return tmp_path


def test_a_script_retried_after_a_later_statement_failed_does_not_run_the_first_again(
    folder: Path, emulator: Any
) -> None:
    dag_file(folder, f"""DatabricksSqlOperator(
                task_id="load", warehouse_id="{DEFAULT_WAREHOUSE_ID}", retries=1,
                retry_delay=datetime.timedelta(seconds=1), polling_period_seconds=0.5, databricks_retry_limit=1,
                query_tags={SLOW!r}, sql=["INSERT INTO t VALUES (1)", "SELECT count(*) AS n FROM t"])""")
    # While the INSERT runs, refuse the next POST: the SELECT's, so the first try fails after the INSERT.
    watcher = when_running(emulator, "INSERT INTO t VALUES (1)",
                           lambda _: emulator.fail_next("POST", "sql/statements", status=403, body=REFUSED))
    output = dags_test(folder)
    watcher.join(timeout=5)
    assert emulator.counters["faults"].get("status") == 1, "the refusal never reached the task"
    seen = records(emulator)
    assert [(r["sql"], r["executions"], r["state"]) for r in seen if r["sql"].startswith("INSERT")] == [
        ("INSERT INTO t VALUES (1)", 1, "SUCCEEDED")
    ], seen
    assert [r["state"] for r in seen if r["sql"].startswith("SELECT")] == ["SUCCEEDED"]
    assert "Reattaching to Databricks SQL statement" in output
    assert "try_number=2" in output


RUNNING_TRIES = {
    "sql-operator": ("DatabricksSqlOperator", "polling_period_seconds", "sql", "INSERT INTO t VALUES (2)"),
    "statements-sensor": ("DatabricksSQLStatementsSensor", "poke_interval", "statement", "INSERT INTO t VALUES (3)"),
}


@pytest.mark.parametrize("case", RUNNING_TRIES.values(), ids=RUNNING_TRIES.keys())
def test_a_statement_still_running_when_its_try_failed_is_reattached(
    folder: Path, emulator: Any, case: tuple[str, str, str, str]
) -> None:
    operator, interval, field, sql = case
    dag_file(folder, f"""{operator}(
                task_id="load", warehouse_id="{DEFAULT_WAREHOUSE_ID}", retries=1,
                retry_delay=datetime.timedelta(seconds=1), {interval}=0.5, databricks_retry_limit=1,
                query_tags={SLOW!r}, {field}="{sql}")""")
    # A refused status read fails the try while the statement runs on.
    watcher = when_running(emulator, sql, lambda sid: emulator.fail_next(
        "GET", f"sql/statements/{sid}", status=403, body=REFUSED))
    output = dags_test(folder)
    watcher.join(timeout=5)
    assert emulator.counters["faults"].get("status") == 1, "the refusal never reached the task"
    inserts = [r for r in records(emulator) if r["sql"].startswith("INSERT")]
    assert [(r["executions"], r["cancels"], r["state"]) for r in inserts] == [(1, 0, "SUCCEEDED")], inserts
    assert "Reattaching to Databricks SQL statement" in output  # logged by a later try only
