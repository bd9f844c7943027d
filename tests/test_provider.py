"""The installed package registers with Airflow as a provider."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import airflow_dbx


def _airflow_minor() -> tuple[int, int]:
    from airflow import __version__

    major, minor = __version__.split(".")[:2]
    return int(major), int(minor)


def test_provider_info_names_the_package_and_connection_type() -> None:
    info = airflow_dbx.get_provider_info()
    assert info["package-name"] == "airflow-dbx"
    (conn,) = info["connection-types"]
    assert conn["connection-type"] == "dbx"
    assert conn["hook-name"] == "Databricks (airflow-dbx)"
    assert conn["hook-class-name"] == "airflow_dbx.hook.DatabricksHook"


def test_providers_manager_lists_provider_and_connection_fields() -> None:
    from airflow.providers_manager import ProvidersManager

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        manager = ProvidersManager()
        assert "airflow-dbx" in manager.providers
        assert manager.providers["airflow-dbx"].version == airflow_dbx.__version__
        try:  # Airflow 3.3 moved hook lookup to the Task SDK
            from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

            hooks = ProvidersManagerTaskRuntime().hooks
        except ImportError:
            hooks = manager.hooks
        assert "dbx" in hooks
        hook_info = hooks["dbx"]
        assert hook_info is not None
        assert hook_info.hook_name == "Databricks (airflow-dbx)"
        assert hook_info.connection_id_attribute_name == "databricks_conn_id"
        widgets = manager.connection_form_widgets
        behaviours = manager.field_behaviours
    if _airflow_minor() >= (3, 2):
        token = widgets["extra__dbx__token"]
        assert token.is_sensitive
        assert token.field["schema"]["title"] == "Personal access token"
        for name in ("auth_type", "service_principal_oauth", "azure_tenant_id", "azure_ad_endpoint"):
            assert f"extra__dbx__{name}" in widgets
        assert "schema" in behaviours["dbx"]["hidden_fields"]
        assert behaviours["dbx"]["relabeling"]["host"] == "Workspace URL"
    else:
        assert not any(name.startswith("extra__dbx__") for name in widgets)


def test_airflow_providers_list_shows_the_package() -> None:
    airflow = os.path.join(os.path.dirname(sys.executable), "airflow")
    result = subprocess.run(
        [airflow, "providers", "list", "--output", "plain"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "airflow-dbx" in result.stdout
    assert "Traceback" not in result.stderr
