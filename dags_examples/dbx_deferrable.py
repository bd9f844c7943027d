"""Wait for a long run in the triggerer, so the task holds no worker slot meanwhile.

Needs a running triggerer (``airflow triggerer``); ``airflow dags test`` runs the trigger
in its own process.
"""

from __future__ import annotations

import datetime

from airflow.sdk import DAG

from airflow_dbx.operators import DatabricksSubmitRunOperator

with DAG(
    dag_id="dbx_deferrable",
    start_date=datetime.datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    tags=["airflow-dbx", "example"],
) as dag:
    DatabricksSubmitRunOperator(
        task_id="train_model",
        deferrable=True,
        existing_cluster_id="emulator-gpu-cluster",
        spark_python_task={"python_file": "dbfs:/jobs/train.py", "parameters": ["emulator_duration=6"]},
        execution_timeout=datetime.timedelta(hours=2),
    )
