"""Run Databricks jobs from Apache Airflow 3."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

CONNECTION_TYPE = "dbx"
HOOK_NAME = "Databricks (airflow-dbx)"

# Extra fields of a ``dbx`` connection, as the Airflow 3.2+ connection form draws them.
_CONN_FIELDS: dict[str, Any] = {
    "token": {
        "label": "Personal access token",
        "description": "A Databricks personal access token. Or leave Login empty and put it in Password.",
        "schema": {"type": ["string", "null"], "format": "password"},
    },
    "auth_type": {
        "label": "Auth mode",
        "description": (
            "How to authenticate. Empty picks one from the other fields: token, then OAuth or "
            "Azure when their fields are set, then Login/Password as basic auth."
        ),
        "schema": {
            "type": ["string", "null"],
            "enum": [None, "token", "basic", "oauth-m2m", "azure-service-principal", "databricks-sdk"],
        },
    },
    "service_principal_oauth": {
        "label": "Databricks OAuth service principal",
        "description": "Login is the client id and Password the client secret (OAuth machine-to-machine).",
        "schema": {"type": ["boolean", "null"], "default": False},
    },
    "azure_tenant_id": {
        "label": "Azure tenant id",
        "description": "Azure AD service principal: Login is the client id and Password the client secret.",
        "schema": {"type": ["string", "null"]},
    },
    "azure_ad_endpoint": {
        "label": "Azure AD authority",
        "description": "Defaults to https://login.microsoftonline.com; set it for sovereign clouds.",
        "schema": {"type": ["string", "null"], "format": "url"},
    },
    "azure_resource_id": {
        "label": "Azure workspace resource id",
        "description": "Adds the workspace management headers for a service principal that is not a workspace user.",
        "schema": {"type": ["string", "null"]},
    },
    "profile": {
        "label": "Databricks SDK profile",
        "description": "With auth mode databricks-sdk: the ~/.databrickscfg profile to use.",
        "schema": {"type": ["string", "null"]},
    },
    "timeout_seconds": {
        "label": "Request timeout (seconds)",
        "schema": {"type": ["number", "null"], "default": 30, "minimum": 1},
    },
    "ca_bundle": {
        "label": "CA bundle path",
        "description": "A PEM file of CA certificates to verify the workspace's TLS certificate with.",
        "schema": {"type": ["string", "null"]},
    },
    "verify_ssl": {
        "label": "Verify TLS certificates",
        "description": "Turn off only for testing: the connection is then open to interception.",
        "schema": {"type": ["boolean", "null"], "default": True},
    },
    "proxies": {
        "label": "Proxies",
        "description": 'A JSON object such as {"https": "http://proxy.internal:3128"}.',
        "schema": {"type": ["object", "null"]},
    },
}

_UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema"],
    "relabeling": {
        "host": "Workspace URL",
        "login": "Username or client id",
        "password": "Token, password or client secret",
    },
    "placeholders": {
        "host": "https://adb-1234567890123456.7.azuredatabricks.net",
        "login": "empty for a token; a client id for OAuth or Azure",
        "password": "dapi... or a client secret",
        "extra": '{"service_principal_oauth": true}',
    },
}


def _airflow_knows_conn_fields() -> bool:
    """Airflow 3.2 added declarative connection form fields to provider info."""
    from airflow import __version__ as airflow_version

    major, minor = (int(part) for part in airflow_version.split(".")[:2])
    return (major, minor) >= (3, 2)


def get_provider_info() -> dict[str, Any]:
    """Describe this provider to Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""
    connection_type: dict[str, Any] = {
        "connection-type": CONNECTION_TYPE,
        "hook-class-name": "airflow_dbx.hook.DatabricksHook",
        "hook-name": HOOK_NAME,
    }
    if _airflow_knows_conn_fields():
        connection_type["conn-fields"] = _CONN_FIELDS
        connection_type["ui-field-behaviour"] = _UI_FIELD_BEHAVIOUR
    return {
        "package-name": "airflow-dbx",
        "name": "Databricks (airflow-dbx)",
        "description": "Run Databricks jobs and SQL from Apache Airflow 3.",
        "versions": [__version__],
        "connection-types": [connection_type],
        "extra-links": ["airflow_dbx.operators.DatabricksRunLink"],
        "operators": [
            {
                "integration-name": "Databricks",
                "python-modules": [
                    "airflow_dbx.operators", "airflow_dbx.sql_operators", "airflow_dbx.sql_batch",
                    "airflow_dbx.warehouse_operators",
                ],
            },
        ],
        "hooks": [
            {"integration-name": "Databricks", "python-modules": ["airflow_dbx.hook", "airflow_dbx.sql_hook"]},
        ],
        "sensors": [
            {"integration-name": "Databricks", "python-modules": ["airflow_dbx.sensors", "airflow_dbx.sql_sensors"]},
        ],
        "triggers": [
            {"integration-name": "Databricks", "python-modules": ["airflow_dbx.trigger"]},
        ],
        "asset-uris": [
            {
                "schemes": ["databricks"],
                "handler": "airflow_dbx.assets.sanitize_uri",
                "factory": "airflow_dbx.assets.create_asset",
                "to_openlineage_converter": "airflow_dbx.assets.convert_asset_to_openlineage",
            },
        ],
    }
