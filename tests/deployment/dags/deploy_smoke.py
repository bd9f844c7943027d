"""Standard operators only: proves the deployment itself (worker slot, triggerer, REST API) works."""

from __future__ import annotations

import datetime

from airflow.providers.standard.operators.python import PythonOperator
from airflow.providers.standard.sensors.time_delta import TimeDeltaSensor
from airflow.sdk import DAG

with DAG(dag_id="deploy_smoke", start_date=datetime.datetime(2026, 1, 1), schedule=None, catchup=False) as dag:
    wait = TimeDeltaSensor(task_id="wait", delta=datetime.timedelta(seconds=3), deferrable=True)
    wait >> PythonOperator(task_id="hello", python_callable=lambda: "hello")
