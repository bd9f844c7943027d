"""A multi-task one-time run on a shared job cluster, its run id passed downstream."""

from __future__ import annotations

import datetime

from airflow.sdk import DAG, task

from airflow_dbx.operators import DatabricksSubmitRunOperator

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
        job_clusters=[
            {
                "job_cluster_key": "shared",
                "new_cluster": {"spark_version": "15.4.x-scala2.12", "node_type_id": "i3.xlarge", "num_workers": 4},
            }
        ],
        tasks=[
            {
                "task_key": "ingest",
                "job_cluster_key": "shared",
                "notebook_task": {"notebook_path": "/Shared/ingest", "base_parameters": {"emulator_duration": 2}},
            },
            {
                "task_key": "transform",
                "depends_on": [{"task_key": "ingest"}],
                "job_cluster_key": "shared",
                "spark_python_task": {
                    "python_file": "dbfs:/jobs/transform.py",
                    "parameters": ["--day", "{{ ds }}", "emulator_duration=2"],
                },
            },
            {
                "task_key": "publish",
                "depends_on": [{"task_key": "transform"}],
                "job_cluster_key": "shared",
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
