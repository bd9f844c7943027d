"""The provider as a person meets it in Airflow's UI: the connection form, its Test button, the run link.

A real ``airflow api-server`` (own AIRFLOW_HOME, sqlite, DAGs from ``dags_examples``) and the
emulator; headless Chromium types into the form, presses the buttons and reads the link. It
writes its screenshots to ``docs/`` (or to ``$AIRFLOW_DBX_SCREENSHOTS``). Run with
``AIRFLOW_DBX_BROWSER=1``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests

from airflow_dbx import CONNECTION_TYPE, HOOK_NAME, get_provider_info
from tests.browser.conftest import REPO

if TYPE_CHECKING:
    from tests.browser.conftest import AirflowStack
    from tests.browser.pages import AirflowUI


def _declared_type() -> dict[str, Any]:
    """This provider's ``dbx`` entry of ``connection-types``, as Airflow reads it."""
    (entry,) = [c for c in get_provider_info()["connection-types"] if c["connection-type"] == CONNECTION_TYPE]
    return entry


pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        "conn-fields" not in _declared_type(), reason="the provider's form fields need Airflow 3.2+ (conn-fields)"
    ),
]

DOCS = Path(os.environ.get("AIRFLOW_DBX_SCREENSHOTS") or REPO / "docs")
CONN_ID = "databricks_default"  # the operators' default, so the example DAG needs no change
DAG_ID = "dbx_notebook_submit"
TASK_ID = "prepare_data"


def test_connection_form_offers_the_dbx_type_and_fields(ui: AirflowUI) -> None:
    declared = _declared_type()
    behaviour = declared["ui-field-behaviour"]
    form = ui.add_connection()
    assert HOOK_NAME in form.type_options()
    form.choose_type(HOOK_NAME)

    host = form.field("host")
    assert (host.label, host.placeholder) == ("Workspace URL", "https://adb-1234567890123456.7.azuredatabricks.net")
    for name, label in behaviour["relabeling"].items():
        assert form.field(name).label == label, name
    for name, placeholder in behaviour["placeholders"].items():
        if name != "extra":  # the Extra JSON editor has no placeholder attribute
            assert form.field(name).placeholder == placeholder, name
    assert form.field("password").input_type == "password"

    form.open_section("Extra Fields")
    token = form.field("token")
    assert token.label == "Personal access token"
    assert token.input_type == "password", "the token must be typed into a masked field"
    assert token.displayed
    for key, spec in declared["conn-fields"].items():
        shown = form.field(key)
        assert shown.displayed, key
        assert shown.label == spec["label"], key
        assert shown.description == spec.get("description", ""), key
        if spec["schema"].get("format") == "password":
            assert shown.input_type == "password", key
    form.close()


def test_connection_saved_from_the_form_tests_ok_and_the_run_link_shows(
    ui: AirflowUI, airflow_stack: AirflowStack
) -> None:
    emu = airflow_stack.emulator
    form = ui.add_connection()
    form.fill("connection_id", CONN_ID)
    form.choose_type(HOOK_NAME)
    form.fill("host", emu.url)
    # Airflow 3.3.2's Test button sends port 0 for a connection without one and the API then
    # refuses the test (fixed upstream by apache/airflow#73298), so the port is given too.
    form.fill("port", str(emu.port))
    form.fill("description", "The local Databricks emulator")
    ui.screenshot(DOCS / "connection-form.png")
    form.open_section("Extra Fields")
    form.fill("token", emu.token)
    ui.screenshot(DOCS / "connection-form-extra-fields.png")
    form.save()

    saved = airflow_stack.api(f"connections/{CONN_ID}")
    assert (saved["conn_type"], saved["host"], saved["port"]) == (CONNECTION_TYPE, emu.url, emu.port)
    assert json.loads(str(saved["extra"]))["token"] == "***", "the API shows the token masked"

    calls_before = len(emu.requests)
    toast = ui.test_connection(CONN_ID)
    assert (toast.kind, toast.title) == ("success", "Test Connection Successful"), toast
    assert toast.description == f"Connected to {emu.url}: the Jobs API answered."
    ui.screenshot(DOCS / "connection-test.png")
    assert [(r.method, r.path, r.status) for r in emu.requests[calls_before:]] == [("GET", "/api/2.2/jobs/list", 200)]

    # The DAG reads the connection saved above from the metadata DB (no AIRFLOW_CONN_* is set).
    airflow_stack.airflow("dags", "test", DAG_ID)
    (dag_run,) = airflow_stack.api(f"dags/{DAG_ID}/dagRuns")["dag_runs"]  # type: ignore[misc]
    assert dag_run["state"] == "success"
    (run,) = [r for r in emu.runs() if r["run_name"] == TASK_ID]
    assert run["run_page_url"].startswith(emu.url)

    ui.task_details(DAG_ID, dag_run["dag_run_id"], TASK_ID)
    link = ui.extra_link("Databricks run")
    assert link.get_attribute("href") == run["run_page_url"]
    ui.screenshot(DOCS / "extra-link.png")


def test_connection_test_reports_a_refused_token_without_showing_it(ui: AirflowUI, airflow_stack: AirflowStack) -> None:
    emu = airflow_stack.emulator
    wrong_token = "dapi-not-a-valid-token-3b9e"
    response = requests.post(
        f"{airflow_stack.url}/api/v2/connections",
        json={
            "connection_id": "dbx_wrong_token",
            "conn_type": CONNECTION_TYPE,
            "host": emu.url,
            "port": emu.port,
            "password": wrong_token,
        },
        timeout=30,
    )
    response.raise_for_status()

    toast = ui.test_connection("dbx_wrong_token")
    assert (toast.kind, toast.title) == ("error", "Test Connection Failed"), toast
    # Databricks answers an unknown token 403 "Invalid access token." (the emulator: 401).
    assert re.search(r"\bHTTP 40[13]\b", toast.description), toast
    assert wrong_token not in toast.description


def test_a_table_written_with_emit_assets_shows_as_an_asset_with_its_event_and_consumer(
    ui: AirflowUI, airflow_stack: AirflowStack
) -> None:
    pytest.importorskip("airflow.providers.openlineage")  # emit_assets reads the SQL with its parser
    emu = airflow_stack.emulator
    host = f"127.0.0.1:{emu.port}"
    env = {"AIRFLOW_CONN_DATABRICKS_DEFAULT": emu.conn_json(), "DATABRICKS_WORKSPACE_HOST": host}
    airflow_stack.airflow("dags", "reserialize", **env)
    airflow_stack.airflow("dags", "unpause", "dbx_assets_consumer", **env)
    airflow_stack.airflow("dags", "test", "dbx_assets_producer", **env)

    uri = f"databricks://{host}/main/shop/region_totals"
    assets: Any = airflow_stack.api("assets?limit=100")["assets"]
    (asset,) = [a for a in assets if a["uri"] == uri]
    assert [ref["dag_id"] for ref in asset["scheduled_dags"]] == ["dbx_assets_consumer"]
    events: Any = airflow_stack.api(f"assets/events?asset_id={asset['id']}")["asset_events"]
    assert [(e["source_dag_id"], e["source_task_id"]) for e in events] == [
        ("dbx_assets_producer", "rebuild_region_totals")
    ]
    ui.asset(asset["id"], "region_totals", "dbx_assets_producer", consumer="dbx_assets_consumer")
    ui.screenshot(DOCS / "asset-events.png")
