"""Start a run in one task and wait for it in another, deferred, so no worker slot is held.

``submit`` returns as soon as the run started and pushes its id; ``wait`` is a sensor on
that id (``submit.output``). A retry or a clear of ``wait`` only waits again, and killing it
leaves the run running: the sensor never submits nor cancels. Needs a running triggerer
(``airflow triggerer``); ``airflow dags test`` runs the trigger in its own process.
"""

from __future__ import annotations

import datetime

from airflow.sdk import DAG

from airflow_dbx.operators import DatabricksSubmitRunOperator
from airflow_dbx.sensors import DatabricksRunSensor

with DAG(
    dag_id="dbx_submit_then_sense",
    start_date=datetime.datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    tags=["airflow-dbx", "example"],
) as dag:
    submit = DatabricksSubmitRunOperator(
        task_id="submit",
        wait_for_termination=False,
        existing_cluster_id="emulator-etl-cluster",
        # The emulator's run lasts 90 s, long enough to see the sensor defer.
        notebook_task={
            "notebook_path": "/Shared/refresh_sales",
            "base_parameters": {"emulator_duration": 90, "emulator_output": "sales refreshed"},
        },
    )
    DatabricksRunSensor(
        task_id="wait",
        run_id=submit.output,
        deferrable=True,
        poke_interval=30,
        timeout=datetime.timedelta(hours=2),
    )
