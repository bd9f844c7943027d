"""Three notebooks as one Databricks job run on a shared job cluster.

The group's tasks become the tasks of one job (``<dag_id>.<group_id>``), created or reset by
the group's ``launch`` task, which starts one run of it per DAG run. Each Airflow task then
follows its own task run; ``report`` waits in the triggerer. Clearing a failed task repairs
it, and what depends on it, inside the same Databricks run.
"""

from __future__ import annotations

import datetime

from airflow.sdk import DAG

from airflow_dbx.operators import DatabricksNotebookOperator, DatabricksWorkflowTaskGroup

JOB_CLUSTER = {
    "job_cluster_key": "shared",
    "new_cluster": {"spark_version": "15.4.x-scala2.12", "node_type_id": "i3.xlarge", "num_workers": 2},
}

with DAG(
    dag_id="dbx_workflow",
    start_date=datetime.datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    tags=["airflow-dbx", "example"],
) as dag, DatabricksWorkflowTaskGroup(
    group_id="sales",
    databricks_conn_id="databricks_default",
    job_clusters=[JOB_CLUSTER],
    notebook_params={"day": "{{ ds }}"},
) as sales:
    extract = DatabricksNotebookOperator(
        task_id="extract",
        notebook_path="/Shared/sales/extract",
        source="WORKSPACE",
        job_cluster_key="shared",
        notebook_params={"emulator_duration": 2},
    )
    clean = DatabricksNotebookOperator(
        task_id="clean",
        notebook_path="/Shared/sales/clean",
        source="WORKSPACE",
        job_cluster_key="shared",
        max_retries=1,
    )
    report = DatabricksNotebookOperator(
        task_id="report",
        notebook_path="/Shared/sales/report",
        source="WORKSPACE",
        job_cluster_key="shared",
        deferrable=True,
        notebook_params={"emulator_duration": 150, "emulator_output": "report ready"},
    )
    extract >> clean >> report
