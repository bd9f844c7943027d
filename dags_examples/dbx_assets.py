"""A Databricks table as an Airflow asset: one DAG writes it, another runs when it changes.

``dbx_assets_producer`` loads a day of sales and rebuilds ``main.shop.region_totals`` from them
with ``emit_assets=True``: when that statement succeeds, the task records an asset event for
each table it writes (``databricks://HOST/main/shop/region_totals``). ``dbx_assets_consumer``
is scheduled on that asset, so it runs after each rebuild. With the OpenLineage provider
configured, both DAGs' SQL tasks also report the tables they read and write.

``HOST`` must be the workspace host of the ``databricks_default`` connection (the asset URI
names it); it is read from ``DATABRICKS_WORKSPACE_HOST`` here. Replace ``WAREHOUSE_ID`` with
one of your warehouses' ids.
"""

from __future__ import annotations

import datetime
import os

from airflow.sdk import DAG

from airflow_dbx.assets import create_asset
from airflow_dbx.operators import DatabricksSqlOperator, DatabricksSQLStatementsOperator

WAREHOUSE_ID = "a1b2c3d4e5f60718"  # the emulator's "Starter Warehouse"
HOST = os.environ.get("DATABRICKS_WORKSPACE_HOST", "adb-1234567890123456.7.azuredatabricks.net")
REGION_TOTALS = create_asset(host=HOST, catalog="main", schema="shop", table="region_totals")

with DAG(
    dag_id="dbx_assets_producer",
    start_date=datetime.datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    tags=["airflow-dbx", "example", "assets"],
):
    load = DatabricksSqlOperator(
        task_id="load_sales",
        warehouse_id=WAREHOUSE_ID,
        sql="""
            CREATE SCHEMA IF NOT EXISTS main.shop;
            CREATE TABLE IF NOT EXISTS main.shop.sales (day STRING, region STRING, amount DECIMAL(10, 2));
            INSERT INTO main.shop.sales VALUES ('{{ ds }}', 'eu', 120.50), ('{{ ds }}', 'us', 99.99);
        """,
    )
    totals = DatabricksSQLStatementsOperator(
        task_id="rebuild_region_totals",
        warehouse_id=WAREHOUSE_ID,
        catalog="main",
        schema="shop",
        statement=(
            "CREATE OR REPLACE TABLE region_totals AS "
            "SELECT region, SUM(amount) AS total FROM sales GROUP BY region"
        ),
        emit_assets=True,
        polling_period_seconds=5,
    )
    load >> totals

with DAG(
    dag_id="dbx_assets_consumer",
    start_date=datetime.datetime(2026, 1, 1),
    schedule=[REGION_TOTALS],
    catchup=False,
    tags=["airflow-dbx", "example", "assets"],
):
    DatabricksSQLStatementsOperator(
        task_id="read_region_totals",
        warehouse_id=WAREHOUSE_ID,
        statement="SELECT region, total FROM main.shop.region_totals ORDER BY region",
        inlets=[REGION_TOTALS],
        polling_period_seconds=5,
    )
