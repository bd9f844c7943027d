"""OpenLineage events and asset events from real ``airflow dags test`` runs against the emulator.

The OpenLineage provider's file transport writes every event it emits to a file; the tests
read that file, the emulator's records and Airflow's metadata DB, never the package's classes.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import AIRFLOW, airflow_env

pytest.importorskip("airflow.providers.openlineage")

EXAMPLES = Path(__file__).resolve().parents[2] / "dags_examples"


def _host(emulator: Any) -> str:
    return f"127.0.0.1:{emulator.port}"


def dags_test(dag_id: str, events_file: Path, emulator: Any, dags_folder: Path = EXAMPLES, **extra: str) -> str:
    """``airflow dags test`` with OpenLineage writing to ``events_file``; the command's output."""
    env = airflow_env(
        AIRFLOW__CORE__DAGS_FOLDER=str(dags_folder),
        AIRFLOW__OPENLINEAGE__TRANSPORT=json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
        AIRFLOW__OPENLINEAGE__NAMESPACE="lineage-tests",
        DATABRICKS_WORKSPACE_HOST=_host(emulator),
        **extra,
    )
    result = subprocess.run([AIRFLOW, "dags", "test", dag_id, "2026-01-01"], env=env, capture_output=True,
                            text=True, timeout=300, check=False)
    output = result.stdout + result.stderr
    return output if result.returncode == 0 else f"FAILED {result.returncode}\n{output}"


def read_events(events_file: Path, job_name: str) -> dict[str, dict[str, Any]]:
    """The task's events by type (START, COMPLETE, FAIL), as the transport wrote them: the first
    START (a deferred task starts again when it resumes, under the same run id) and the one end."""
    found: dict[str, dict[str, Any]] = {}
    for line in events_file.read_text().splitlines():
        event = json.loads(line)
        if event["job"]["name"] != job_name:
            continue
        kind = event["eventType"]
        if kind == "START" and kind in found:
            assert event["run"]["runId"] == found[kind]["run"]["runId"]
            continue
        assert kind not in found, f"two {kind} events for {job_name}"
        found[kind] = event
    return found


def _datasets(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((item["namespace"], item["name"]) for item in items)


def _airflow_db(sql: str) -> list[tuple[Any, ...]]:
    from airflow.configuration import conf

    url = conf.get("database", "sql_alchemy_conn")
    assert url.startswith("sqlite:///"), url
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        return db.execute(sql).fetchall()


def test_asset_example_pair_emits_lineage_and_schedules_the_consumer(emulator, airflow_db, tmp_path: Path) -> None:
    pytest.importorskip("duckdb")
    events_file = tmp_path / "events.jsonl"
    # The consumer must be known to Airflow, and not paused, for the asset event to queue a run of it.
    env = airflow_env(AIRFLOW__CORE__DAGS_FOLDER=str(EXAMPLES), DATABRICKS_WORKSPACE_HOST=_host(emulator))
    for command in (["dags", "reserialize"], ["dags", "unpause", "dbx_assets_consumer"]):
        done = subprocess.run([AIRFLOW, *command], capture_output=True, text=True, timeout=300, check=False, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
    before = _airflow_db("SELECT COALESCE(MAX(id), 0) FROM asset_event")[0][0]
    output = dags_test("dbx_assets_producer", events_file, emulator)
    assert not output.startswith("FAILED"), output[-3000:]

    with emulator.sql.lock:
        statements = {s.statement_id: s for s in emulator.sql.statements.values()}
    rebuild = [s for s in statements.values() if "CREATE OR REPLACE TABLE region_totals" in s.statement]
    assert len(rebuild) == 1 and rebuild[0].state == "SUCCEEDED" and rebuild[0].executions == 1

    namespace = f"databricks://{_host(emulator)}"
    uri = f"{namespace}/main/shop/region_totals"
    asset_events = _airflow_db(
        "SELECT a.uri, e.source_dag_id, e.source_task_id FROM asset_event e JOIN asset a ON a.id = e.asset_id "
        f"WHERE e.id > {before}"
    )
    assert asset_events == [(uri, "dbx_assets_producer", "rebuild_region_totals")]
    queued = _airflow_db(
        "SELECT q.target_dag_id FROM asset_dag_run_queue q JOIN asset a ON a.id = q.asset_id "
        f"WHERE a.uri = '{uri}'"
    )
    assert queued == [("dbx_assets_consumer",)]

    events = read_events(events_file, "dbx_assets_producer.rebuild_region_totals")
    assert set(events) == {"START", "COMPLETE"}
    complete = events["COMPLETE"]
    assert _datasets(complete["inputs"]) == [(namespace, "main.shop.sales")]
    assert _datasets(complete["outputs"]) == [(namespace, "main.shop.region_totals")]
    run_facet = complete["run"]["facets"]["databricks_run"]
    assert run_facet["statement_id"] == rebuild[0].statement_id
    assert run_facet["state"] == "SUCCEEDED" and run_facet["host"] == _host(emulator)
    assert complete["run"]["facets"]["externalQuery"]["externalQueryId"] == rebuild[0].statement_id
    assert complete["job"]["facets"]["sql"]["query"].startswith("CREATE OR REPLACE TABLE region_totals")
    load = read_events(events_file, "dbx_assets_producer.load_sales")["COMPLETE"]
    assert _datasets(load["outputs"]) == [(namespace, "main.shop.sales")]

    output = dags_test("dbx_assets_consumer", events_file, emulator)
    assert not output.startswith("FAILED"), output[-3000:]
    with emulator.sql.lock:
        read = [s for s in emulator.sql.statements.values() if "FROM main.shop.region_totals" in s.statement]
    assert len(read) == 1 and read[0].result is not None
    assert read[0].result.rows == [["eu", "120.50"], ["us", "99.99"]]
    consumer = read_events(events_file, "dbx_assets_consumer.read_region_totals")["COMPLETE"]
    assert (namespace, "main.shop.region_totals") in _datasets(consumer["inputs"])
    assert consumer["outputs"] == []


@pytest.mark.parametrize(
    ("dag_id", "deferrable", "succeeds"),
    [("dbx_notebook_submit", False, True), ("dbx_deferrable", True, True), ("dbx_failure_report", False, False)],
)
def test_run_operators_report_their_run(dag_id: str, deferrable: bool, succeeds: bool, emulator, airflow_db,
                                        tmp_path: Path) -> None:
    events_file = tmp_path / "events.jsonl"
    dags_test(dag_id, events_file, emulator, AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE=str(deferrable))
    runs = {run["run_id"]: run for run in emulator.runs()}
    assert runs
    ends = [json.loads(line) for line in events_file.read_text().splitlines()]
    ends = [e for e in ends if e["eventType"] in ("COMPLETE", "FAIL") and "databricks_run" in e["run"]["facets"]]
    assert len(ends) == len(runs)
    for event in ends:
        facet = event["run"]["facets"]["databricks_run"]
        run = runs[facet["run_id"]]
        assert facet["run_page_url"] == run["run_page_url"]
        assert facet["host"] == _host(emulator)
        assert facet["state"] == run["state"]["result_state"]
        assert event["run"]["facets"]["externalQuery"]["externalQueryId"] == str(run["run_id"])
        if succeeds:
            assert event["eventType"] == "COMPLETE" and "error" not in facet
        else:
            assert event["eventType"] == "FAIL" and facet["state"] == "FAILED"
            assert run["run_page_url"] in facet["error"]
        task_events = read_events(events_file, event["job"]["name"])
        assert task_events["START"]["run"]["runId"] == event["run"]["runId"]


PARENT_DAG = '''
import datetime
from airflow.sdk import DAG
from airflow_dbx.operators import DatabricksRunNowOperator, DatabricksSubmitRunOperator

CLUSTER = {"spark_version": "15.4.x-scala2.12", "node_type_id": "i3.xlarge", "num_workers": 1}
with DAG(dag_id="lineage_parent", start_date=datetime.datetime(2026, 1, 1), schedule=None):
    DatabricksSubmitRunOperator(
        task_id="injected", openlineage_inject_parent_job_info=True,
        new_cluster={**CLUSTER, "spark_conf": {"spark.sql.shuffle.partitions": "8"}},
        notebook_task={"notebook_path": "/etl"},
    )
    DatabricksSubmitRunOperator(
        task_id="users_own", openlineage_inject_parent_job_info=True,
        new_cluster={**CLUSTER, "spark_conf": {"spark.openlineage.parentRunId": "mine"}},
        notebook_task={"notebook_path": "/etl"},
    )
    DatabricksSubmitRunOperator(
        task_id="by_config", new_cluster=CLUSTER, notebook_task={"notebook_path": "/etl"},
    )
    DatabricksRunNowOperator(
        task_id="run_now", job_id=JOB_ID, openlineage_inject_parent_job_info=True,
        job_parameters={"openlineage_parentJobName": "kept"},
    )
'''


@pytest.mark.parametrize("config_switch", [False, True], ids=["config-off", "config-on"])
def test_parent_job_info_reaches_the_run_and_never_overwrites(config_switch: bool, emulator, airflow_db,
                                                              tmp_path: Path) -> None:
    job_id = emulator.create_job({"name": "parent-info", "tasks": [
        {"task_key": "a", "existing_cluster_id": "emulator-c", "notebook_task": {"notebook_path": "/a"}}]})
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "lineage_parent.py").write_text(textwrap.dedent(PARENT_DAG).replace("JOB_ID", str(job_id)))
    events_file = tmp_path / "events.jsonl"
    output = dags_test("lineage_parent", events_file, emulator, dags_folder=dags,
                       AIRFLOW__OPENLINEAGE__SPARK_INJECT_PARENT_JOB_INFO=str(config_switch))
    assert not output.startswith("FAILED"), output[-3000:]
    by_name = {run["run_name"]: run for run in emulator.runs()}

    def spark_conf(name: str) -> dict[str, str]:
        return by_name[name]["tasks"][0]["new_cluster"].get("spark_conf", {})

    start = read_events(events_file, "lineage_parent.injected")["START"]
    injected = spark_conf("injected")
    assert injected["spark.openlineage.parentRunId"] == start["run"]["runId"]
    assert injected["spark.openlineage.parentJobName"] == "lineage_parent.injected"
    assert injected["spark.openlineage.parentJobNamespace"] == "lineage-tests"
    assert injected["spark.sql.shuffle.partitions"] == "8"
    assert spark_conf("users_own") == {"spark.openlineage.parentRunId": "mine"}
    assert ("spark.openlineage.parentRunId" in spark_conf("by_config")) is config_switch
    params = by_name["parent-info"]["overriding_parameters"]["job_parameters"]
    run_now_start = read_events(events_file, "lineage_parent.run_now")["START"]
    assert params["openlineage_parentRunId"] == run_now_start["run"]["runId"]
    assert params["openlineage_parentJobName"] == "kept"


def test_workflow_tasks_the_launcher_and_the_sensor_report_their_runs(emulator, airflow_db, tmp_path: Path) -> None:
    events_file = tmp_path / "events.jsonl"
    for dag_id in ("dbx_workflow", "dbx_submit_then_sense"):
        output = dags_test(dag_id, events_file, emulator)
        assert not output.startswith("FAILED"), output[-3000:]
    # Every run and task run the emulator holds, by id: the job run's own page, or the task run's.
    known = {}
    for run in emulator.runs():
        known[run["run_id"]] = (run["run_page_url"], run["state"].get("result_state"))
        for task in run.get("tasks", []):
            known[task["run_id"]] = (task["run_page_url"], task["state"].get("result_state"))
    tasks = {
        "dbx_workflow.sales.launch": None,  # it starts the group's run and does not wait for it
        "dbx_workflow.sales.extract": "SUCCESS",
        "dbx_workflow.sales.clean": "SUCCESS",
        "dbx_workflow.sales.report": "SUCCESS",
        "dbx_submit_then_sense.submit": None,  # wait_for_termination=False; the sensor waits
        "dbx_submit_then_sense.wait": "SUCCESS",
    }
    for job_name, state in tasks.items():
        facet = read_events(events_file, job_name)["COMPLETE"]["run"]["facets"]["databricks_run"]
        page, result = known[facet["run_id"]]
        assert facet["run_page_url"] == page, job_name
        assert facet.get("state") == state, job_name
        if state is not None:
            assert result == state, job_name
    launched = read_events(events_file, "dbx_workflow.sales.launch")["COMPLETE"]["run"]["facets"]["databricks_run"]
    extract = read_events(events_file, "dbx_workflow.sales.extract")["COMPLETE"]["run"]["facets"]["databricks_run"]
    assert launched["job_id"] == extract["job_id"]  # the group's tasks are task runs of the launched job run
    submitted = read_events(events_file, "dbx_submit_then_sense.submit")["COMPLETE"]["run"]["facets"]
    sensed = read_events(events_file, "dbx_submit_then_sense.wait")["COMPLETE"]["run"]["facets"]
    assert submitted["databricks_run"]["run_id"] == sensed["databricks_run"]["run_id"]
