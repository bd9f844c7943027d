"""SQL on a Databricks SQL warehouse over the REST API, with no SQL driver installed.

Start the warehouse, create a partitioned table, insert a day of sales with statement
parameters, wait for that day's partition, query it (the rows go to XCom as dicts), then
stop the warehouse. Against the emulator the SQL really runs (DuckDB), so the query returns
what the insert wrote. Replace ``WAREHOUSE_ID`` with one of your warehouses' ids.
"""

from __future__ import annotations

import datetime

from airflow.sdk import DAG

from airflow_dbx.operators import (
    DatabricksSqlOperator,
    DatabricksSQLStatementsOperator,
    DatabricksStartWarehouseOperator,
    DatabricksStopWarehouseOperator,
)
from airflow_dbx.sensors import DatabricksPartitionSensor

WAREHOUSE_ID = "a1b2c3d4e5f60718"  # the emulator's "Starter Warehouse"

with DAG(
    dag_id="dbx_sql",
    start_date=datetime.datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    tags=["airflow-dbx", "example", "sql"],
) as dag:
    start = DatabricksStartWarehouseOperator(task_id="start_warehouse", warehouse_id=WAREHOUSE_ID,
                                             polling_period_seconds=5)
    create = DatabricksSqlOperator(
        task_id="create_table",
        warehouse_id=WAREHOUSE_ID,
        sql="""
            CREATE SCHEMA IF NOT EXISTS main.shop;
            CREATE TABLE IF NOT EXISTS main.shop.sales (day STRING, region STRING, amount DECIMAL(10, 2))
              PARTITIONED BY (day);
        """,
    )
    insert = DatabricksSQLStatementsOperator(
        task_id="insert_rows",
        warehouse_id=WAREHOUSE_ID,
        catalog="main",
        schema="shop",
        statement="INSERT INTO sales VALUES (:day, 'eu', 120.50), (:day, 'us', 99.99)",
        parameters=[{"name": "day", "value": "{{ ds }}", "type": "STRING"}],
        polling_period_seconds=5,
    )
    partition = DatabricksPartitionSensor(
        task_id="wait_for_partition",
        warehouse_id=WAREHOUSE_ID,
        table_name="main.shop.sales",
        partitions={"day": "{{ ds }}"},
        poke_interval=5,
        timeout=600,
    )
    query = DatabricksSQLStatementsOperator(
        task_id="query",
        warehouse_id=WAREHOUSE_ID,
        statement="SELECT region, amount FROM main.shop.sales WHERE day = :day ORDER BY region",
        parameters=[{"name": "day", "value": "{{ ds }}"}],
        polling_period_seconds=5,
    )
    stop = DatabricksStopWarehouseOperator(task_id="stop_warehouse", warehouse_id=WAREHOUSE_ID,
                                           polling_period_seconds=5)
    start >> create >> insert >> partition >> query >> stop
