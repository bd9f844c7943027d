"""Every example DAG through ``airflow dags test`` against the emulator, in both wait modes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import AIRFLOW, STRICT_WARNINGS, airflow_env

EXAMPLES = Path(__file__).resolve().parents[2] / "dags_examples"
# dag id -> (Databricks tasks in it, whether their runs succeed)
DAGS = {
    "dbx_notebook_submit": (2, True),
    "dbx_multi_task_submit": (1, True),
    "dbx_run_now_by_name": (1, True),
    "dbx_deferrable": (1, True),
    "dbx_failure_report": (1, False),
    "dbx_submit_then_sense": (1, True),
    "dbx_workflow": (1, True),  # one job run for the group's three tasks
}


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.stem)
def test_example_parses_without_errors_or_warnings(path: Path) -> None:
    result = subprocess.run([sys.executable, *STRICT_WARNINGS, str(path)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    # Under -W error a warning is an exception; stderr may still carry Airflow's own log lines.
    assert "Warning" not in result.stderr


def test_every_example_dag_is_tested() -> None:
    assert {path.stem for path in EXAMPLES.glob("*.py")} == {*DAGS, "dbx_sql", "dbx_assets"}  # dbx_assets: test_lineage.py


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferrable"])
def test_sql_example(deferrable: bool, emulator, airflow_db) -> None:
    """The SQL example: judged from the emulator's warehouse and statements, and by querying it."""
    pytest.importorskip("duckdb")
    env = airflow_env(
        AIRFLOW__CORE__DAGS_FOLDER=str(EXAMPLES), AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE=str(deferrable)
    )
    result = subprocess.run([AIRFLOW, "dags", "test", "dbx_sql", "2026-01-01"], env=env, capture_output=True,
                            text=True, timeout=300, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    with emulator.sql.lock:
        statements = list(emulator.sql.statements.values())
        events = [state for _, state in emulator.sql.warehouses.items["a1b2c3d4e5f60718"].events]
    assert all(s.state == "SUCCEEDED" and s.executions == 1 for s in statements), output[-3000:]
    inserts = [s for s in statements if "INSERT INTO sales" in s.statement]
    assert len(inserts) == 1 and inserts[0].parameters[0]["value"] == "2026-01-01"
    assert events[-2:] == ["STOPPING", "STOPPED"]
    query = [s for s in statements if "SELECT region" in s.statement]
    assert query[0].result is not None and query[0].result.rows == [["eu", "120.50"], ["us", "99.99"]]


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferrable"])
@pytest.mark.parametrize("dag_id", sorted(DAGS))
def test_airflow_dags_test(dag_id: str, deferrable: bool, emulator, airflow_db) -> None:
    tasks, succeeds = DAGS[dag_id]
    if dag_id in {"dbx_deferrable", "dbx_submit_then_sense"} and not deferrable:
        pytest.skip("this example always defers")
    if dag_id == "dbx_run_now_by_name":
        emulator.create_job({"name": "nightly-sales", "tasks": [
            {"task_key": "sales", "existing_cluster_id": "emulator-c", "notebook_task": {"notebook_path": "/s"}}]})
    env = airflow_env(
        AIRFLOW__CORE__DAGS_FOLDER=str(EXAMPLES),
        AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE=str(deferrable),
    )
    result = subprocess.run([AIRFLOW, "dags", "test", dag_id, "2026-01-01"], env=env, capture_output=True,
                            text=True, timeout=300, check=False)
    output = result.stdout + result.stderr
    runs = emulator.runs()
    assert len(runs) == tasks, output[-3000:]
    results = {run["state"].get("result_state") for run in runs}
    assert results == ({"SUCCESS"} if succeeds else {"FAILED"})
    assert (result.returncode == 0) == succeeds, output[-3000:]
    for run in runs:
        assert f"Databricks run {run['run_id']}: {run['run_page_url']}" in output
    if dag_id == "dbx_workflow":  # its report task always defers; the others when they find their task running
        assert output.count("Pausing task as DEFERRED") >= 1
        assert [t["state"]["result_state"] for t in runs[0]["tasks"]] == ["SUCCESS"] * 3
    else:
        assert output.count("Pausing task as DEFERRED") == (tasks if deferrable else 0)
    if not succeeds:
        assert f"DatabricksRunFailed: Databricks run {runs[0]['run_id']} ended FAILED" in output
        assert "AssertionError: 42 rows have a null customer_id" in output
