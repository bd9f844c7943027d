"""A run whose middle task fails: the Airflow task fails with the run's failure report.

The report names each failed task with its error and the first lines of its trace, and
links the run page. Nothing is retried here, so the report shows once.
"""

from __future__ import annotations

import datetime

from airflow.sdk import DAG

from airflow_dbx.operators import DatabricksSubmitRunOperator

CLUSTER = "emulator-shared-cluster"

with DAG(
    dag_id="dbx_failure_report",
    start_date=datetime.datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    tags=["airflow-dbx", "example"],
) as dag:
    DatabricksSubmitRunOperator(
        task_id="quality_checks",
        tasks=[
            {"task_key": "load", "existing_cluster_id": CLUSTER, "notebook_task": {"notebook_path": "/Shared/load"}},
            {
                "task_key": "check_nulls",
                "existing_cluster_id": CLUSTER,
                "depends_on": [{"task_key": "load"}],
                "notebook_task": {
                    "notebook_path": "/Shared/check_nulls",
                    "base_parameters": {
                        "emulator_result": "FAILED",
                        "emulator_error": "AssertionError: 42 rows have a null customer_id",
                        "emulator_error_trace": (
                            "Traceback (most recent call last):\n"
                            '  File "/Shared/check_nulls", line 12, in <module>\n'
                            "    assert nulls == 0, f'{nulls} rows have a null customer_id'\n"
                            "AssertionError: 42 rows have a null customer_id"
                        ),
                    },
                },
            },
            {
                "task_key": "publish",
                "existing_cluster_id": CLUSTER,
                "depends_on": [{"task_key": "check_nulls"}],
                "notebook_task": {"notebook_path": "/Shared/publish"},
            },
        ],
    )
