"""Tries of a task as Airflow itself runs them: ``airflow dags test`` with retries, real task
instances (try numbers, start dates, max_tries), judged from the emulator's records.

The guarantee: while another try will come, a run is left for that try to reattach to; once
the task has failed for good, no run outlives it.
"""

from __future__ import annotations

import subprocess
import textwrap
from typing import TYPE_CHECKING, Any

import pytest

from tests import oracle
from tests.integration.conftest import AIRFLOW, airflow_env

if TYPE_CHECKING:
    from pathlib import Path

DAG_ID = "dbx_tries"
REFUSED = {"error_code": "PERMISSION_DENIED", "message": "the token lost its grant"}


def dag_file(folder: Path, *, retries: int, fail: bool = False, repair: bool = False, extra: str = "") -> None:
    params: dict[str, Any] = {"emulator_duration": 20 if fail else 250}
    if fail:
        params.update(emulator_result="FAILED", emulator_error="ValueError: bad rows")
    (folder / f"{DAG_ID}.py").write_text(textwrap.dedent(f"""
        import datetime
        from airflow.sdk import DAG
        from airflow_dbx.operators import DatabricksSubmitRunOperator

        with DAG("{DAG_ID}", schedule=None, start_date=datetime.datetime(2026, 1, 1)):
            DatabricksSubmitRunOperator(
                task_id="run", retries={retries}, retry_delay=datetime.timedelta(seconds=2),
                polling_period_seconds=0.5, databricks_retry_limit=1, repair_on_retry={repair}, {extra}
                tasks=[{{"task_key": "a", "existing_cluster_id": "emulator-c",
                        "notebook_task": {{"notebook_path": "/nb", "base_parameters": {params!r}}}}}],
            )
    """))


def dags_test(folder: Path) -> subprocess.CompletedProcess[str]:
    env = airflow_env(AIRFLOW__CORE__DAGS_FOLDER=str(folder))
    return subprocess.run([AIRFLOW, "dags", "test", DAG_ID, "2026-01-01"], env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def cancels(emulator: Any) -> int:
    return sum(r.method == "POST" and r.path.endswith("jobs/runs/cancel") for r in emulator.requests)


@pytest.fixture
def folder(tmp_path: Path, emulator: Any, airflow_db: None) -> Path:
    emulator.time_scale = 0.1  # a 250 s run lasts 25 s: it outlives a try and the retry delay by far
    return tmp_path


def test_a_refused_status_read_leaves_the_run_to_the_next_try(folder: Path, emulator: Any) -> None:
    dag_file(folder, retries=2)
    emulator.fail_next("GET", "jobs/runs/get", count=1, status=403, body=REFUSED)
    result = dags_test(folder)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    (run,) = emulator.runs()
    assert oracle.result(run) == "SUCCESS"
    assert cancels(emulator) == 0
    assert f"Reattaching to Databricks run {run['run_id']}, started by an earlier try" in output
    assert "try_number=2" in output


def test_the_same_refusal_on_the_last_try_cancels_the_run(folder: Path, emulator: Any) -> None:
    dag_file(folder, retries=0)
    emulator.fail_next("GET", "jobs/runs/get", count=1, status=403, body=REFUSED)
    result = dags_test(folder)
    assert result.returncode != 0
    (run,) = emulator.runs()
    assert oracle.result(oracle.finished(emulator, run["run_id"])) == "CANCELED"
    assert cancels(emulator) == 1


def test_a_retry_after_a_failed_run_starts_one_fresh_run(folder: Path, emulator: Any) -> None:
    dag_file(folder, retries=1, fail=True)
    result = dags_test(folder)
    assert result.returncode != 0
    runs = sorted(emulator.runs(), key=lambda r: r["run_id"])
    assert [oracle.result(r) for r in runs] == ["FAILED", "FAILED"]  # one per try, the second a fresh start
    assert runs[0]["end_time"] <= runs[1]["start_time"]
    assert cancels(emulator) == 0


def test_repair_on_retry_reruns_the_failed_run_instead(folder: Path, emulator: Any) -> None:
    dag_file(folder, retries=1, fail=True, repair=True)
    result = dags_test(folder)
    assert result.returncode != 0
    (run,) = emulator.runs()
    repairs = [r for r in run.get("repair_history", ()) if r.get("type") == "REPAIR"]
    assert len(repairs) == 1, run.get("repair_history")
    assert oracle.result(run) == "FAILED"


def test_an_execution_timeout_in_the_worker_cancels_the_run(folder: Path, emulator: Any) -> None:
    dag_file(folder, retries=0, extra="execution_timeout=datetime.timedelta(seconds=3),")
    result = dags_test(folder)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "AirflowTaskTimeout" in output, output[-3000:]
    (run,) = emulator.runs()
    assert oracle.result(oracle.finished(emulator, run["run_id"])) == "CANCELED"
    assert cancels(emulator) == 1
