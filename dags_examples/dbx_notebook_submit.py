"""Submit a one-time notebook run, in both styles the operator accepts.

Against the emulator, ``emulator_*`` keys in ``base_parameters`` set how the run behaves
(here: run for three seconds and return a result); a real workspace passes them to the
notebook as ordinary widgets.
"""

from __future__ import annotations

import datetime

from airflow.sdk import DAG

from airflow_dbx.operators import DatabricksSubmitRunOperator

NEW_CLUSTER = {"spark_version": "15.4.x-scala2.12", "node_type_id": "i3.xlarge", "num_workers": 2}

with DAG(
    dag_id="dbx_notebook_submit",
    start_date=datetime.datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    tags=["airflow-dbx", "example"],
) as dag:
    # 1. The whole runs/submit body as ``json``.
    prepare = DatabricksSubmitRunOperator(
        task_id="prepare_data",
        json={
            "new_cluster": NEW_CLUSTER,
            "notebook_task": {
                "notebook_path": "/Shared/prepare_data",
                "base_parameters": {"day": "{{ ds }}", "emulator_duration": 3, "emulator_output": "1204 rows"},
            },
        },
    )

    # 2. The same through named parameters; they override the keys of ``json``.
    report = DatabricksSubmitRunOperator(
        task_id="build_report",
        json={"timeout_seconds": 3600},
        new_cluster=NEW_CLUSTER,
        notebook_task={
            "notebook_path": "/Shared/build_report",
            "base_parameters": {"rows": "{{ ti.xcom_pull('prepare_data', key='notebook_output') }}"},
        },
        run_name="nightly report for {{ ds }}",
    )

    prepare >> report
