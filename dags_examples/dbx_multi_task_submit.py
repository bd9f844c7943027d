"""A multi-task one-time run, its run id passed downstream.

A one-time run cannot share job clusters (Databricks refuses ``job_clusters`` on runs/submit):
each task names its own cluster here. ``dbx_workflow`` shows tasks sharing a job cluster.
"""

from __future__ import annotations

import datetime

from airflow.sdk import DAG, task

from airflow_dbx.operators import DatabricksSubmitRunOperator

CLUSTER = {"spark_version": "15.4.x-scala2.12", "node_type_id": "i3.xlarge", "num_workers": 4}

with DAG(
    dag_id="dbx_multi_task_submit",
    start_date=datetime.datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    tags=["airflow-dbx", "example"],
) as dag:
    pipeline = DatabricksSubmitRunOperator(
        task_id="etl_pipeline",
        run_name="etl {{ ds }}",
        tasks=[
            {
                "task_key": "ingest",
                "new_cluster": CLUSTER,
                "notebook_task": {"notebook_path": "/Shared/ingest", "base_parameters": {"emulator_duration": 2}},
            },
            {
                "task_key": "transform",
                "depends_on": [{"task_key": "ingest"}],
                "new_cluster": CLUSTER,
                "spark_python_task": {
                    "python_file": "dbfs:/jobs/transform.py",
                    "parameters": ["--day", "{{ ds }}", "emulator_duration=2"],
                },
            },
            {
                "task_key": "publish",
                "depends_on": [{"task_key": "transform"}],
                "new_cluster": CLUSTER,
                "notebook_task": {
                    "notebook_path": "/Shared/publish",
                    "base_parameters": {"emulator_duration": 1, "emulator_output": "published"},
                },
            },
        ],
    )

    @task
    def announce(databricks_run_id: int) -> str:
        message = f"pipeline finished as Databricks run {databricks_run_id}"
        print(message)
        return message

    announce(pipeline.output)
