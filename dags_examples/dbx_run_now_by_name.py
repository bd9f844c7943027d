"""Trigger an existing job by its name, with notebook and job parameters.

The job must exist in the workspace; the demo creates ``nightly-sales`` in the emulator.
"""

from __future__ import annotations

import datetime

from airflow.sdk import DAG

from airflow_dbx.operators import DatabricksRunNowOperator

with DAG(
    dag_id="dbx_run_now_by_name",
    start_date=datetime.datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    tags=["airflow-dbx", "example"],
) as dag:
    DatabricksRunNowOperator(
        task_id="nightly_sales",
        job_name="nightly-sales",
        job_parameters={"day": "{{ ds }}", "dry_run": False, "emulator_duration": 3},
        notebook_params={"region": "emea"},
        polling_period_seconds=10,
    )
