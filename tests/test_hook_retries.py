"""One retry policy, two transports: each class of failure injected into the emulator, and
the errors a user reads when retrying is not possible or runs out."""

from __future__ import annotations

import time

import pytest
import tenacity

from airflow_dbx._http import retry
from airflow_dbx.errors import DatabricksApiError
from airflow_dbx.hook import DatabricksHook

RUNS_GET = "/api/2.2/jobs/runs/get"
NOTEBOOK_RUN = {
    "run_name": "retry-test",
    "tasks": [{"task_key": "t", "notebook_task": {"notebook_path": "/x"}, "existing_cluster_id": "emulator-1"}],
}


@pytest.fixture
def run_id(emulator_conn) -> int:
    return DatabricksHook().submit_run(NOTEBOOK_RUN)


def runs_get_statuses(emulator) -> list[int | None]:
    return [r.status for r in emulator.requests if r.path == RUNS_GET]


def test_503_burst_is_retried(emulator_conn, run_id, call) -> None:
    emulator_conn.fail_next("GET", "jobs/runs/get", count=2, status=503)
    state = call(DatabricksHook(retry_limit=3, retry_delay=0.01), "get_run_state", run_id)
    assert state.life_cycle_state in {"QUEUED", "PENDING", "RUNNING"}
    assert runs_get_statuses(emulator_conn) == [503, 503, 200]


@pytest.mark.parametrize("status", [429, 500, 502, 504])
def test_each_retryable_status_is_retried(emulator_conn, run_id, call, status) -> None:
    emulator_conn.fail_next("GET", "jobs/runs/get", status=status)
    call(DatabricksHook(retry_delay=0.01), "get_run_state", run_id)
    assert runs_get_statuses(emulator_conn) == [status, 200]


def test_retry_after_as_an_http_date_is_honoured(emulator_conn, run_id, call) -> None:
    # The date has a resolution of one second, rounded up by the emulator: at least 1 s away.
    emulator_conn.fail_next("GET", "jobs/runs/get", status=429, retry_after=1.5, retry_after_format="http-date")
    call(DatabricksHook(retry_delay=0.01), "get_run_state", run_id)
    gets = [r for r in emulator_conn.requests if r.path == RUNS_GET]
    assert [r.status for r in gets] == [429, 200]
    assert gets[1].time - gets[0].time >= 1.0


def test_retry_after_is_honoured(emulator_conn, run_id, call) -> None:
    emulator_conn.fail_next("GET", "jobs/runs/get", status=429, retry_after=1)
    started = time.monotonic()
    call(DatabricksHook(retry_delay=0.01), "get_run_state", run_id)
    gets = [r for r in emulator_conn.requests if r.path == RUNS_GET]
    assert [r.status for r in gets] == [429, 200]
    assert gets[1].time - gets[0].time >= 0.95
    assert time.monotonic() - started < 5


def test_dropped_connection_is_retried(emulator_conn, run_id, call) -> None:
    emulator_conn.drop_next("GET", "jobs/runs/get")
    call(DatabricksHook(retry_delay=0.01), "get_run_state", run_id)
    assert runs_get_statuses(emulator_conn) == [None, 200]


def test_timeout_is_retried(emulator, set_connection, call) -> None:
    set_connection(host=emulator.url, password=emulator.token, extra={"timeout_seconds": 0.3})
    run_id = DatabricksHook().submit_run(NOTEBOOK_RUN)
    emulator.delay_next("GET", "jobs/runs/get", seconds=1.0)
    started = time.monotonic()
    call(DatabricksHook(retry_delay=0.01), "get_run_state", run_id)
    assert time.monotonic() - started < 1.0  # the second attempt did not wait for the slow first one
    # The emulator records the slow request when it finally answers it, a little later.
    deadline = time.monotonic() + 5
    while len([r for r in emulator.requests if r.path == RUNS_GET]) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len([r for r in emulator.requests if r.path == RUNS_GET]) == 2  # the timed-out attempt, then one more


def test_lost_submit_answer_is_retried_without_a_second_run(emulator_conn, call) -> None:
    emulator_conn.lose_response_next("POST", "jobs/runs/submit")
    hook = DatabricksHook(retry_delay=0.01)
    run_id = hook.submit_run({**NOTEBOOK_RUN, "idempotency_token": "retry-test-token-1"})
    assert len(emulator_conn.runs()) == 1
    assert emulator_conn.runs()[0]["run_id"] == run_id


def test_could_not_acquire_lock_is_retried(emulator_conn, run_id, call) -> None:
    body = {"error_code": "COULD_NOT_ACQUIRE_LOCK", "message": "try again"}
    emulator_conn.fail_next("GET", "jobs/runs/get", status=400, body=body)
    call(DatabricksHook(retry_delay=0.01), "get_run_state", run_id)
    assert runs_get_statuses(emulator_conn) == [400, 200]


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_other_4xx_are_never_retried(emulator_conn, run_id, call, status) -> None:
    body = {"error_code": "NOPE", "message": f"refused with {status}"}
    emulator_conn.fail_next("GET", "jobs/runs/get", status=status, body=body)
    with pytest.raises(DatabricksApiError) as info:
        call(DatabricksHook(retry_limit=5, retry_delay=0.01), "get_run_state", run_id)
    assert runs_get_statuses(emulator_conn) == [status]
    error = info.value
    assert (error.status_code, error.error_code, error.attempts) == (status, "NOPE", 1)
    assert str(error) == f"GET {RUNS_GET} failed: HTTP {status} NOPE: refused with {status}"


def test_unknown_run_is_a_400_with_databricks_message(emulator_conn, call) -> None:
    # Databricks answers an unknown run id 400 INVALID_PARAMETER_VALUE "Run N does not exist."
    with pytest.raises(DatabricksApiError) as info:
        call(DatabricksHook(), "get_run_state", 987654321)
    assert (info.value.status_code, info.value.error_code) == (400, "INVALID_PARAMETER_VALUE")
    assert "Run 987654321 does not exist." in str(info.value)
    assert len(emulator_conn.requests) == 1


def test_exhaustion_names_endpoint_status_and_attempts(emulator_conn, run_id, call) -> None:
    emulator_conn.fail_next("GET", "jobs/runs/get", count=10, status=503)
    with pytest.raises(DatabricksApiError) as info:
        call(DatabricksHook(retry_limit=3, retry_delay=0.01), "get_run_state", run_id)
    error = info.value
    assert (error.method, error.endpoint, error.status_code, error.attempts) == ("GET", RUNS_GET, 503, 3)
    assert str(error).startswith(f"GET {RUNS_GET} failed after 3 attempts: HTTP 503")
    assert runs_get_statuses(emulator_conn) == [503, 503, 503]


def test_exhausted_connection_failures_say_so(set_connection, call) -> None:
    set_connection(host="http://127.0.0.1:9", password="dapi-tok-123")
    with pytest.raises(DatabricksApiError) as info:
        call(DatabricksHook(retry_limit=2, retry_delay=0.01), "get_run_state", 1)
    assert info.value.status_code is None
    assert "failed after 2 attempts: no HTTP answer: connection failed" in str(info.value)


def test_html_error_page_gives_a_readable_message(emulator_conn, run_id, call) -> None:
    page = b"<html><body><h1>502 Bad Gateway</h1>" + b"x" * 5000 + b"</body></html>"
    emulator_conn.fail_next("GET", "jobs/runs/get", count=5, status=502, body=page)
    with pytest.raises(DatabricksApiError) as info:
        call(DatabricksHook(retry_limit=2, retry_delay=0.01), "get_run_state", run_id)
    text = str(info.value)
    assert "HTTP 502: a non-JSON body: <html><body><h1>502 Bad Gateway</h1>" in text
    assert len(text) < 600


@pytest.mark.parametrize(
    ("body", "expected"),
    [(b"", "an empty body"), (b"{not json", "a non-JSON body: {not json"), (b"[1, 2]", "a JSON list instead of an object: [1, 2]")],
)
def test_empty_or_malformed_json_error_bodies(emulator_conn, run_id, call, body, expected) -> None:
    emulator_conn.fail_next("GET", "jobs/runs/get", status=403, body=body)
    with pytest.raises(DatabricksApiError) as info:
        call(DatabricksHook(), "get_run_state", run_id)
    assert str(info.value) == f"GET {RUNS_GET} failed: HTTP 403: {expected}"


def test_retry_args_replace_the_default_policy(emulator_conn, run_id, call) -> None:
    emulator_conn.fail_next("GET", "jobs/runs/get", count=3, status=503)
    hook = DatabricksHook(retry_limit=10, retry_args={"stop": tenacity.stop_after_attempt(2), "wait": tenacity.wait_none()})
    with pytest.raises(DatabricksApiError) as info:
        call(hook, "get_run_state", run_id)
    assert info.value.attempts == 2
    assert runs_get_statuses(emulator_conn) == [503, 503]


def test_rate_limit_is_ridden_out(emulator_conn, run_id, call) -> None:
    emulator_conn.set_rate_limit("jobs/runs/get", per_second=20, burst=1)
    hook = DatabricksHook(retry_limit=10, retry_delay=0.01)
    for _ in range(2):  # the second is throttled, told to come back, and does
        call(hook, "get_run_state", run_id)
    assert runs_get_statuses(emulator_conn).count(200) == 2


# ---------------------------------------------------------------------- pure parts of the policy


def test_total_time_is_bounded(monkeypatch, emulator_conn, run_id) -> None:
    monkeypatch.setattr(retry, "RETRY_TOTAL_SECONDS", 0.2)
    emulator_conn.fail_next("GET", "jobs/runs/get", count=100, status=503)
    with pytest.raises(DatabricksApiError) as info:
        DatabricksHook(retry_limit=100, retry_delay=0.05).get_run_state(run_id)
    assert 1 < info.value.attempts < 100


def test_a_final_refusal_after_retries_counts_every_attempt(emulator_conn, call) -> None:
    emulator_conn.fail_next("GET", "jobs/runs/get", status=503)
    with pytest.raises(DatabricksApiError) as info:
        call(DatabricksHook(retry_delay=0.01), "get_run_state", 987654321)  # then 400: no such run
    assert (info.value.status_code, info.value.attempts) == (400, 2)
    assert "failed after 2 attempts: HTTP 400" in str(info.value)


@pytest.mark.parametrize(("body", "seen"), [(b"", "{}"), (b'{"number_in_job": 3}', '{"number_in_job": 3}')])
def test_a_submit_answer_without_run_id_is_an_api_error(emulator_conn, body, seen) -> None:
    emulator_conn.fail_next("POST", "jobs/runs/submit", status=200, body=body)
    with pytest.raises(DatabricksApiError) as info:
        DatabricksHook().submit_run(NOTEBOOK_RUN)
    assert str(info.value) == f"POST /api/2.2/jobs/runs/submit failed: HTTP 200: the answer has no run_id: {seen}"


def test_a_run_answer_without_run_id_is_an_api_error(emulator_conn, call) -> None:
    emulator_conn.fail_next("GET", "jobs/runs/get", status=200, body={"status": {"state": "RUNNING"}})
    with pytest.raises(DatabricksApiError, match="HTTP 200: the answer has no run_id"):
        call(DatabricksHook(), "get_run", 1)
