"""The ``databricks`` asset URI scheme as Airflow applies it, ``emit_assets`` checks, the parent job
info merge, and that nothing imports OpenLineage unless the provider calls."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import pytest
from airflow.sdk import Asset, AssetAlias

from airflow_dbx._run_tasks import _with_parent_properties
from airflow_dbx.assets import convert_asset_to_openlineage, create_asset
from airflow_dbx.errors import PayloadError
from airflow_dbx.operators import DatabricksSQLStatementsOperator
from tests.integration.conftest import STRICT_WARNINGS

WAREHOUSE = "a1b2c3d4e5f60718"
PARENT = {
    "spark.openlineage.parentJobNamespace": "ns",
    "spark.openlineage.parentJobName": "dag.task",
    "spark.openlineage.parentRunId": "0190-run",
}


@pytest.mark.parametrize(
    ("uri", "complaint"),
    [
        ("databricks:///main/shop/sales", "names no workspace host"),
        ("databricks://adb-1.azuredatabricks.net/main/shop", "2 name part(s)"),
        ("databricks://adb-1.azuredatabricks.net/main/shop/sales/extra", "4 name part(s)"),
        ("databricks://adb-1.azuredatabricks.net/main//sales", "is empty"),
        ("databricks://adb-1.azuredatabricks.net/{{ var.value.catalog }}/shop/sales", "holds a template"),
        ("databricks://adb_1 bad/main/shop/sales", "invalid character"),
    ],
)
def test_bad_asset_uris_are_refused_with_the_reason(uri: str, complaint: str) -> None:
    with pytest.raises(ValueError, match="is not a Databricks table") as refused:
        Asset(uri)
    assert complaint in str(refused.value)
    assert "databricks://HOST/catalog/schema/table" in str(refused.value)


def test_asset_uris_are_normalised_like_the_hook_host() -> None:
    asset = Asset("databricks://ADB-1.7.AzureDatabricks.NET:443/Main/Shop/Sales/")
    assert asset.uri == "databricks://adb-1.7.azuredatabricks.net:443/main/shop/sales"
    made = create_asset(host="https://ADB-1.7.azuredatabricks.net/", catalog="Main", schema="shop", table="Sales")
    assert made.uri == "databricks://adb-1.7.azuredatabricks.net/main/shop/sales"
    assert create_asset(host="127.0.0.1", port=8080, catalog="a", schema="b", table="c").uri == (
        "databricks://127.0.0.1:8080/a/b/c"
    )


def test_the_provider_registers_the_scheme_and_the_openlineage_converter() -> None:
    pytest.importorskip("airflow.providers.openlineage")
    try:
        from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime as Manager
    except ImportError:  # Airflow before 3.2
        from airflow.providers_manager import ProvidersManager as Manager  # type: ignore[assignment]

    manager = Manager()
    assert manager.asset_factories["databricks"] is create_asset
    dataset = manager.asset_to_openlineage_converters["databricks"](
        Asset("databricks://adb-1.azuredatabricks.net/main/shop/sales"), None
    )
    assert (dataset.namespace, dataset.name) == ("databricks://adb-1.azuredatabricks.net", "main.shop.sales")
    assert convert_asset_to_openlineage(Asset("databricks://h.example.com/a/b/c"), None).name == "a.b.c"


def test_emit_assets_refuses_a_written_table_with_no_catalog_at_parse_time() -> None:
    pytest.importorskip("airflow.providers.openlineage")
    with pytest.raises(PayloadError, match="emit_assets") as refused:
        DatabricksSQLStatementsOperator(task_id="t", warehouse_id=WAREHOUSE, statement="INSERT INTO t SELECT 1",
                                        emit_assets=True)
    assert "'t'" in str(refused.value) and "catalog" in str(refused.value)
    task = DatabricksSQLStatementsOperator(task_id="t", warehouse_id=WAREHOUSE, catalog="c", schema="s",
                                           statement="INSERT INTO t SELECT 1", emit_assets=True)
    assert task.outlets == [AssetAlias("databricks_tables__adhoc_airflow__t")]


def _task(**fields: Any) -> dict[str, Any]:
    return {"task_key": "a", "notebook_task": {"notebook_path": "/n"}, **fields}


def test_parent_job_info_goes_to_new_clusters_and_job_parameters_never_over_the_users() -> None:
    cluster = {"spark_version": "15.4.x-scala2.12", "spark_conf": {"spark.x": "1"}}
    mine = {"spark_version": "15.4.x-scala2.12", "spark_conf": {"spark.openlineage.parentJobName": "mine"}}
    payload = {
        "tasks": [_task(new_cluster=cluster), _task(new_cluster=mine), _task(existing_cluster_id="c1")],
        "job_clusters": [{"job_cluster_key": "k", "new_cluster": cluster}],
    }
    result = _with_parent_properties(payload, PARENT)
    assert result["tasks"][0]["new_cluster"]["spark_conf"] == {**PARENT, "spark.x": "1"}
    assert result["tasks"][1]["new_cluster"] == mine
    assert result["tasks"][2] == _task(existing_cluster_id="c1")
    assert result["job_clusters"][0]["new_cluster"]["spark_conf"] == {**PARENT, "spark.x": "1"}
    assert payload["tasks"][0]["new_cluster"] is cluster and cluster["spark_conf"] == {"spark.x": "1"}

    run_now = _with_parent_properties({"job_id": 1, "job_parameters": {"openlineage_parentRunId": "own"}}, PARENT)
    assert run_now["job_parameters"] == {
        "openlineage_parentJobNamespace": "ns", "openlineage_parentJobName": "dag.task", "openlineage_parentRunId": "own",
    }
    legacy = {"job_id": 1, "notebook_params": {"a": "1"}}
    assert _with_parent_properties(legacy, PARENT) == legacy  # Databricks refuses both kinds together


# ``openlineage`` (the client and SQL parser that every OpenLineage import of this package needs)
# made unimportable: the provider's own package stays, as Airflow reads its provider info.
WITHOUT_OPENLINEAGE = textwrap.dedent("""
    import sys
    sys.modules["openlineage"] = None
    import airflow_dbx.operators, airflow_dbx.sensors, airflow_dbx.sql_sensors, airflow_dbx.assets
    from airflow_dbx.errors import PayloadError
    from airflow_dbx._run_tasks import inject_parent_job_info
    from airflow_dbx.operators import DatabricksSQLStatementsOperator, DatabricksSubmitRunOperator
    payload = {"tasks": [{"task_key": "a", "new_cluster": {"spark_version": "x"}}]}
    assert inject_parent_job_info(payload, {}) is payload
    DatabricksSubmitRunOperator(task_id="s", notebook_task={"notebook_path": "/n"}, existing_cluster_id="c",
                                openlineage_inject_parent_job_info=True)
    try:
        DatabricksSQLStatementsOperator(task_id="q", warehouse_id="a1b2c3d4e5f60718", statement="SELECT 1",
                                        catalog="c", schema="s", emit_assets=True)
    except PayloadError as exc:
        assert "emit_assets" in str(exc) and "airflow-dbx[openlineage]" in str(exc), exc
    else:
        raise AssertionError("emit_assets without a SQL parser was accepted")
    print("ok")
""")


def test_without_the_openlineage_provider_nothing_imports_it_or_warns() -> None:
    result = subprocess.run([sys.executable, *STRICT_WARNINGS, "-c", WITHOUT_OPENLINEAGE], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"
    assert "Warning" not in result.stderr


def test_importing_the_operators_loads_nothing_of_openlineage() -> None:
    # Airflow's configuration reads every installed provider's info (the OpenLineage one too) on its
    # own; what importing the operators adds on top of that must hold nothing of OpenLineage.
    code = (
        "import sys; from airflow.sdk import BaseOperator; from airflow_dbx.compat import conf;"
        "conf.getboolean('operators', 'default_deferrable', fallback=False); before = set(sys.modules);"
        "import airflow_dbx.operators, airflow_dbx.sql_operators, airflow_dbx.sensors, airflow_dbx.assets;"
        "print(sorted(m for m in set(sys.modules) - before if 'openlineage' in m))"
    )
    result = subprocess.run([sys.executable, *STRICT_WARNINGS, "-c", code], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"


def test_copy_into_reports_its_files_and_its_table(set_connection) -> None:
    pytest.importorskip("airflow.providers.openlineage")
    from airflow_dbx.operators import DatabricksCopyIntoOperator

    set_connection(host="https://adb-7.azuredatabricks.net", password="dapi-lineage-copy")
    task = DatabricksCopyIntoOperator(
        task_id="load", warehouse_id=WAREHOUSE, catalog="Main", schema="shop", table_name="Sales",
        file_location="s3://lake/landing/sales/", file_format="CSV",
    )
    lineage = task.get_openlineage_facets_on_start()
    assert [(d.namespace, d.name) for d in lineage.inputs] == [("s3://lake", "landing/sales")]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("databricks://adb-7.azuredatabricks.net", "main.shop.sales")]
    assert lineage.job_facets["sql"].query.startswith("COPY INTO `Sales`")
