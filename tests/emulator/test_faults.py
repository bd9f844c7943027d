"""Fault injection (status, delay, drop, lost response), rate limits, and the admin HTTP API."""

from __future__ import annotations

import email.utils
import time
from typing import TYPE_CHECKING

import pytest
import requests

from tests.emulator.conftest import Api, notebook

if TYPE_CHECKING:
    from airflow_dbx.emulator import Emulator

SUBMIT = {"run_name": "x", "notebook_task": notebook()}


def test_fail_next_answers_the_status_with_retry_after_and_no_effect(emu: Emulator, api: Api) -> None:
    emu.fail_next("POST", "jobs/runs/submit", count=2, status=503, retry_after=7)
    for _ in range(2):
        response = api.post("jobs/runs/submit", SUBMIT)
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "7"
        assert response.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert emu.runs() == []
    assert api.submit(SUBMIT)  # the faults are used up
    assert emu.counters["faults"] == {"status": 2}
    assert [r.status for r in emu.requests] == [503, 503, 200]
    assert [r.fault for r in emu.requests] == ["status", "status", None]


def test_fail_next_matches_any_version_prefix_and_custom_body(emu: Emulator) -> None:
    emu.fail_next(
        "GET", "/api/2.2/jobs/runs/get", count=2, status=403, body={"error_code": "PERMISSION_DENIED", "message": "no"}
    )
    for version in ("2.1", "2.2"):
        response = Api(emu, version).get("jobs/runs/get", run_id=1)
        assert response.status_code == 403 and response.json() == {"error_code": "PERMISSION_DENIED", "message": "no"}
    assert Api(emu).get("jobs/runs/get", run_id=1).status_code == 400  # the real answer again (no such run)


def test_fail_next_only_matches_its_method_and_path(emu: Emulator, api: Api) -> None:
    emu.fail_next("POST", "jobs/runs/submit", status=500)
    assert api.get("jobs/runs/list").status_code == 200
    assert api.post("jobs/runs/submit", SUBMIT).status_code == 500


def test_delay_next_answers_late(emu: Emulator, api: Api) -> None:
    emu.delay_next("GET", "jobs/runs/list", seconds=0.3)
    started = time.monotonic()
    assert api.get("jobs/runs/list").status_code == 200
    assert time.monotonic() - started >= 0.3
    assert api.get("jobs/runs/list").status_code == 200
    assert emu.counters["faults"] == {"delay": 1}  # used up by the first request
    with pytest.raises(requests.Timeout):
        emu.delay_next("GET", "jobs/runs/list", seconds=0.4)
        api.session.get(api.base + "jobs/runs/list", timeout=0.1)


def test_drop_next_closes_the_connection_without_effect(emu: Emulator, api: Api) -> None:
    emu.drop_next("POST", "jobs/runs/submit")
    with pytest.raises(requests.ConnectionError):
        api.post("jobs/runs/submit", SUBMIT)
    assert emu.runs() == []
    assert api.submit(SUBMIT)  # the server keeps serving
    assert emu.requests[0].status is None and emu.requests[0].fault == "drop"


def test_lost_response_creates_the_run_but_drops_the_answer(emu: Emulator, api: Api) -> None:
    emu.lose_response_next("POST", "jobs/runs/submit")
    with pytest.raises(requests.ConnectionError):
        api.post("jobs/runs/submit", dict(SUBMIT, idempotency_token="once"))
    [run] = emu.runs()
    # a retry with the same token finds the run the lost answer carried
    assert api.submit(dict(SUBMIT, idempotency_token="once")) == run["run_id"]
    assert len(emu.runs()) == 1


def test_lost_response_with_a_status_answers_it_after_acting(emu: Emulator, api: Api) -> None:
    emu.lose_response_next("POST", "jobs/runs/submit", status=504)
    assert api.post("jobs/runs/submit", SUBMIT).status_code == 504
    assert len(emu.runs()) == 1


def test_rate_limit_answers_429_with_retry_after(emu: Emulator, api: Api) -> None:
    emu.set_rate_limit("jobs/runs/get", per_second=0.5, burst=3)
    codes = [api.get("jobs/runs/get", run_id=1).status_code for _ in range(5)]
    assert codes == [400, 400, 400, 429, 429]
    limited = api.get("jobs/runs/get", run_id=1)
    assert limited.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    assert limited.headers["Retry-After"] == "2"  # one token every 2 s
    assert api.get("jobs/runs/list").status_code == 200  # other paths are not limited
    assert emu.counters["faults"]["rate_limited"] == 3
    emu.set_rate_limit("jobs/runs/get", None)
    assert {api.get("jobs/runs/get", run_id=1).status_code for _ in range(5)} == {400}


def test_rate_limit_tokens_come_back_at_the_rate(emu: Emulator, api: Api) -> None:
    emu.set_rate_limit("jobs/runs/get", per_second=5, burst=1)
    assert api.get("jobs/runs/get", run_id=1).status_code == 400
    time.sleep(0.25)
    assert api.get("jobs/runs/get", run_id=1).status_code == 400


def test_workspace_rate_limit_covers_every_path(emu: Emulator, api: Api) -> None:
    emu.set_rate_limit(None, per_second=0.1, burst=1)
    assert api.get("jobs/runs/list").status_code == 200
    assert api.get("jobs/list").status_code == 429


class Admin:
    def __init__(self, emu: Emulator) -> None:
        self.base = f"{emu.url}/__emulator__/"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {emu.token}"

    def __call__(self, method: str, path: str, body: object = None, **params: object) -> object:
        response = self.session.request(method, self.base + path, json=body, params=params, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()


def test_admin_api_drives_faults_and_reads_state(emu: Emulator, api: Api) -> None:
    admin = Admin(emu)
    admin(
        "POST",
        "faults",
        {"kind": "status", "method": "POST", "path": "jobs/runs/submit", "status": 429, "retry_after": 2},
    )
    assert api.post("jobs/runs/submit", SUBMIT).status_code == 429
    admin(
        "POST",
        "faults",
        {"kind": "lose_response", "method": "POST", "path": "/api/2.1/jobs/runs/submit", "status": 502},
    )
    assert api.post("jobs/runs/submit", SUBMIT).status_code == 502
    [run] = admin("GET", "runs")["runs"]
    assert admin("GET", "runs", run_id=run["run_id"])["run_id"] == run["run_id"]
    log = admin("GET", "requests")
    assert [r["status"] for r in log["requests"]] == [429, 502]
    assert admin("GET", "requests", since=1)["requests"][0]["status"] == 502
    counters = admin("GET", "counters")
    assert counters["requests"] == {"POST jobs/runs/submit": 2} and counters["runs_created"] == 1
    admin("POST", "rate_limit", {"path": None, "per_second": 0.1, "burst": 1})
    api.get("jobs/runs/list")
    assert api.get("jobs/runs/list").status_code == 429
    admin("DELETE", "faults")
    assert api.get("jobs/runs/list").status_code == 200
    assert admin("POST", "time_scale", {"time_scale": 0.5}) == {"time_scale": 0.5}
    assert emu.time_scale == 0.5
    admin("POST", "reset")
    assert emu.runs() == [] and emu.requests == [] and admin("GET", "counters")["runs_created"] == 0


def test_admin_api_registers_credentials_and_clusters(emu: Emulator) -> None:
    admin = Admin(emu)
    admin("POST", "tokens", {"token": "dapi-second"})
    admin("POST", "clusters", {"cluster_id": "0101-known"})
    second = Api(emu, token="dapi-second")
    run = second.wait(
        second.submit({"run_name": "x", "existing_cluster_id": "0101-known", "notebook_task": notebook()})
    )
    assert run["state"]["result_state"] == "SUCCESS"


def test_admin_api_refuses_bad_requests(emu: Emulator) -> None:
    session = requests.Session()
    url = f"{emu.url}/__emulator__/"
    assert session.get(url + "counters", timeout=5).status_code == 401
    session.headers["Authorization"] = f"Bearer {emu.token}"
    bad = session.post(url + "faults", json={"kind": "explode", "path": "x"}, timeout=5)
    assert bad.status_code == 400 and "kind" in bad.json()["message"]
    assert (
        session.post(url + "faults", json={"kind": "status", "path": "x", "status": 42}, timeout=5).status_code == 400
    )
    assert session.get(url + "nothing", timeout=5).status_code == 404
    assert session.post(url + "time_scale", json={"time_scale": -1}, timeout=5).status_code == 400


def _date_seconds_ahead(header: str) -> float:
    """Seconds from now to a Retry-After given as an HTTP-date; fails on a number of seconds."""
    assert not header.isdigit(), header
    assert header.endswith(" GMT"), header  # IMF-fixdate, RFC 7231 section 7.1.1.1
    return email.utils.parsedate_to_datetime(header).timestamp() - time.time()


def test_retry_after_as_an_http_date(emu: Emulator, api: Api) -> None:
    emu.fail_next("POST", "jobs/runs/submit", status=503, retry_after=30, retry_after_format="http-date")
    response = api.post("jobs/runs/submit", SUBMIT)
    assert response.status_code == 503
    assert 28 < _date_seconds_ahead(response.headers["Retry-After"]) <= 31
    assert emu.runs() == []
    emu.set_rate_limit("jobs/runs/get", per_second=0.1, burst=1, retry_after_format="http-date")
    api.get("jobs/runs/get", run_id=1)
    limited = api.get("jobs/runs/get", run_id=1)
    assert limited.status_code == 429
    assert 8 < _date_seconds_ahead(limited.headers["Retry-After"]) <= 11  # one token every 10 s
    with pytest.raises(ValueError, match="retry_after_format"):
        emu.fail_next("GET", "jobs/runs/get", retry_after=1, retry_after_format="tomorrow")


def test_admin_api_sends_retry_after_as_an_http_date(emu: Emulator, api: Api) -> None:
    admin = Admin(emu)
    fault = {"kind": "status", "method": "GET", "path": "jobs/runs/list", "status": 429, "retry_after": 5}
    admin("POST", "faults", {**fault, "retry_after_format": "http-date"})
    response = api.get("jobs/runs/list")
    assert response.status_code == 429 and 3 < _date_seconds_ahead(response.headers["Retry-After"]) <= 6
    admin("POST", "rate_limit", {"path": "jobs/list", "per_second": 0.2, "burst": 1, "retry_after_format": "http-date"})
    api.get("jobs/list")
    assert 3 < _date_seconds_ahead(api.get("jobs/list").headers["Retry-After"]) <= 6
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {emu.token}"
    bad = session.post(f"{emu.url}/__emulator__/faults", json={**fault, "retry_after_format": "soon"}, timeout=5)
    assert bad.status_code == 400 and "retry_after_format" in bad.json()["message"]


def test_admin_api_sets_how_long_a_cancel_stays_terminating(emu: Emulator) -> None:
    admin = Admin(emu)
    assert admin("POST", "cancel_terminating_seconds", {"cancel_terminating_seconds": 2.5}) == {
        "cancel_terminating_seconds": 2.5
    }
    assert emu.cancel_terminating_seconds == 2.5
    assert admin("GET", "cancel_terminating_seconds") == {"cancel_terminating_seconds": 2.5}
