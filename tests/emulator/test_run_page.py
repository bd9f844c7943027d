"""The run page behind ``run_page_url``: plain, escaped, read-only HTML with what runs/get shows."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import requests

from tests.emulator.conftest import Api, task

if TYPE_CHECKING:
    from airflow_dbx.emulator import Emulator

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def _page(url: str) -> requests.Response:
    response = requests.get(url, timeout=10)  # no credentials: a browser following the link has none
    assert response.headers["Content-Type"].startswith("text/html")
    return response


def test_run_page_shows_the_run_its_tasks_errors_and_output(emu: Emulator, api: Api) -> None:
    ok = task("load", emulator_output="42 rows loaded")
    bad = task("check", "load", emulator_result="FAILED", emulator_error="row count <0> & wrong")
    bad["notebook_task"]["base_parameters"]["emulator_error_trace"] = "Traceback: <frame> line 7"
    run = api.wait(api.submit({"run_name": HOSTILE, "tasks": [ok, bad]}))
    url = run["run_page_url"]
    assert url == f"{emu.url}/jobs/{run['job_id']}/runs/{run['run_id']}"
    response = _page(url)
    assert response.status_code == 200
    html = response.text
    assert f"Run {run['run_id']}" in html and str(run["job_id"]) in html
    assert "TERMINATED / FAILED" in html and "TERMINATED / SUCCESS" in html
    for text in (
        "load",
        "check",
        "42 rows loaded",
        "row count &lt;0&gt; &amp; wrong",
        "Traceback: &lt;frame&gt; line 7",
    ):
        assert text in html, text
    # the hostile run name is shown as text, never as markup
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "<script" not in html.lower() and "<img" not in html.lower()
    tags = re.findall(r"<[^>]*>", html)
    assert not [t for t in tags if re.search(r"\b(src|href|action)\s*=", t, re.IGNORECASE)]  # nothing loaded
    assert "url(" not in html and "@import" not in html
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]


def test_task_run_page_and_unknown_runs(emu: Emulator, api: Api) -> None:
    run = api.wait(api.submit({"run_name": "one", "tasks": [task("only", emulator_output="fine")]}))
    [only] = run["tasks"]
    page = _page(only["run_page_url"])
    assert page.status_code == 200
    assert f"Task run {only['run_id']} of run {run['run_id']}" in page.text and "fine" in page.text
    missing = _page(f"{emu.url}/jobs/{run['job_id']}/runs/99")
    assert missing.status_code == 404 and "Run 99 does not exist." in missing.text
    assert _page(f"{emu.url}/jobs/1/runs/{run['run_id']}").status_code == 404  # not a run of that job
    assert requests.post(run["run_page_url"], timeout=10).status_code == 404  # read-only
