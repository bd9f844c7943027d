"""The emulator's run page in a real browser: what a person sees after following a run_page_url.

Writes ``docs/emulator-run-page.png`` (or into ``$AIRFLOW_DBX_SCREENSHOTS``). Run with
``AIRFLOW_DBX_BROWSER=1``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests

from airflow_dbx.emulator import Emulator
from tests.browser.conftest import REPO

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

DOCS = Path(os.environ.get("AIRFLOW_DBX_SCREENSHOTS") or REPO / "docs")
# Markup in a run name must stay text: if the browser ran it, the page title would change.
RUN_NAME = "nightly <sales> & returns <img src=x onerror=\"document.title='pwned'\">"


def _notebook(**params: str) -> dict[str, Any]:
    return {"notebook_path": "/Shared/nightly", "base_parameters": params}


def _finished_run(emu: Emulator) -> dict[str, Any]:
    tasks = [
        {
            "task_key": "extract",
            "existing_cluster_id": "emulator-1",
            "notebook_task": _notebook(emulator_output='{"rows": 1284, "source": "s3://sales/2026-11-30"}'),
        },
        {
            "task_key": "transform",
            "existing_cluster_id": "emulator-1",
            "depends_on": [{"task_key": "extract"}],
            "notebook_task": _notebook(
                emulator_result="FAILED",
                emulator_error="AnalysisException: column `amount_eur` does not exist",
                emulator_error_trace='Traceback (most recent call last):\n  File "transform.py", line 42, in <module>\n'
                '    df.select("amount_eur")\nAnalysisException: column `amount_eur` does not exist',
            ),
        },
        {
            "task_key": "publish",
            "existing_cluster_id": "emulator-1",
            "depends_on": [{"task_key": "transform"}],
            "notebook_task": _notebook(),
        },
    ]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {emu.token}"
    response = session.post(
        f"{emu.url}/api/2.2/jobs/runs/submit", json={"run_name": RUN_NAME, "tasks": tasks}, timeout=10
    )
    run_id = response.json()["run_id"]
    for _ in range(500):
        run = session.get(f"{emu.url}/api/2.2/jobs/runs/get", params={"run_id": run_id}, timeout=10).json()
        if run["status"]["state"] == "TERMINATED":
            return run
        time.sleep(0.02)
    pytest.fail(f"run {run_id} did not end")


def test_the_run_page_url_opens_a_readable_run_page(browser: WebDriver) -> None:
    from selenium.webdriver.common.by import By

    with Emulator(time_scale=0.02) as emu:
        run = _finished_run(emu)
        browser.get(run["run_page_url"])
        assert browser.current_url == run["run_page_url"]
        assert browser.title == f"Run {run['run_id']} - Databricks emulator"  # no script ran
        text = browser.find_element(By.TAG_NAME, "body").text
        assert RUN_NAME in text  # shown verbatim, as text
        assert not browser.find_elements(By.TAG_NAME, "img")
        assert "TERMINATED / FAILED" in text and "TERMINATED / SUCCESS" in text
        assert "SKIPPED / UPSTREAM_FAILED" in text
        assert "AnalysisException: column `amount_eur` does not exist" in text
        assert 'File "transform.py", line 42' in text
        assert '"rows": 1284' in text
        headings = [h.text for h in browser.find_elements(By.TAG_NAME, "h3")]
        assert headings == ["extract", "transform", "publish"]
        DOCS.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(DOCS / "emulator-run-page.png"))

        task_run = run["tasks"][1]
        browser.get(task_run["run_page_url"])
        assert browser.find_element(By.TAG_NAME, "h1").text == f"Task run {task_run['run_id']} of run {run['run_id']}"
