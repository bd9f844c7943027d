"""_http.exchange: one request's plan -- headers, 401 refresh, answer classification, retries --
driven by a scripted transport, so retry decisions and waits are checked without sleeping."""

from __future__ import annotations

import email.utils
import time
from typing import Any

import pytest
import tenacity

from airflow_dbx._http import retry
from airflow_dbx._http.drivers import ServerClock
from airflow_dbx._http.exchange import Answer, Authorize, NoReply, Reply, Request, exchange
from airflow_dbx._http.retry import RetryPolicy
from airflow_dbx.auth import Auth, StaticAuth
from airflow_dbx.errors import DatabricksApiError
from airflow_dbx.waiting import Sleep

REQUEST = Request("GET", "https://h/api/2.2/jobs/runs/get", "/api/2.2/jobs/runs/get", params={"run_id": "1"})


class RotatingAuth(Auth):
    """OAuth-like: a new token after each invalidation."""

    refreshable = True

    def __init__(self) -> None:
        self.generation = 1
        self.invalidated: list[str] = []

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer token-{self.generation}"}

    def invalidate(self, headers: Any) -> None:
        self.invalidated.append(headers["Authorization"])
        self.generation += 1


def reply(status: int, body: str = "{}", retry_after: str | None = None) -> Reply:
    return Reply(status, body.encode(), retry_after)


class Transport:
    """Answers each Request with the next scripted reply; records what was sent and slept."""

    def __init__(self, *replies: Reply | NoReply) -> None:
        self.replies = list(replies)
        self.sent: list[Request] = []
        self.sleeps: list[float] = []

    def run(self, plan: Any) -> Any:
        result = None
        while True:
            try:
                effect = plan.send(result)
            except StopIteration as done:
                return done.value
            if isinstance(effect, Authorize):
                result = effect.auth.headers()
            elif isinstance(effect, Request):
                self.sent.append(effect)
                result = self.replies.pop(0)
            else:
                assert isinstance(effect, Sleep), effect
                self.sleeps.append(effect.seconds)
                result = None


def send(transport: Transport, policy: RetryPolicy | None = None, auth: Auth | None = None) -> Answer:
    return transport.run(exchange(REQUEST, auth or RotatingAuth(), policy or RetryPolicy(), lambda text: text))


def test_a_first_success_builds_no_retry_controller(monkeypatch) -> None:
    monkeypatch.setattr(RetryPolicy, "controller", lambda self: pytest.fail("controller built"))
    transport = Transport(reply(200, '{"run_id": 1}'))
    assert send(transport) == Answer({"run_id": 1}, throttled=False)
    assert transport.sent[0].headers["Authorization"] == "Bearer token-1"


@pytest.mark.parametrize(
    ("failure", "code"), [(500, None), (502, None), (503, None), (504, None), (400, "COULD_NOT_ACQUIRE_LOCK")]
)
def test_retryable_answers_are_sent_again(failure: int, code: str | None) -> None:
    body = f'{{"error_code": "{code}"}}' if code else "{}"
    transport = Transport(reply(failure, body), reply(failure, body), reply(200, '{"ok": 1}'))
    assert send(transport, RetryPolicy(limit=3, delay=1.0)).data == {"ok": 1}
    assert len(transport.sent) == 3
    assert len(transport.sleeps) == 2
    assert transport.sleeps[0] <= 1.0 and transport.sleeps[1] <= 2.0  # full jitter under 1 s, 2 s


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_other_client_errors_are_final_at_once(status: int) -> None:
    transport = Transport(reply(status, '{"error_code": "NOPE", "message": "no"}'))
    with pytest.raises(DatabricksApiError) as caught:
        send(transport, auth=StaticAuth.token("t0k3n"))  # not refreshable: a 401 is final
    assert (caught.value.status_code, caught.value.error_code, caught.value.attempts) == (status, "NOPE", 1)
    assert type(caught.value) is DatabricksApiError
    assert transport.sleeps == []


def test_retries_run_out_with_the_attempts_counted() -> None:
    transport = Transport(*[reply(503, '{"message": "busy"}')] * 3)
    with pytest.raises(DatabricksApiError, match="after 3 attempts: HTTP 503: busy") as caught:
        send(transport, RetryPolicy(limit=3, delay=0.1))
    assert caught.value.attempts == 3 and not isinstance(caught.value, retry.TransientApiError)
    assert len(transport.sent) == 3


def test_retry_after_is_a_floor_and_throttling_is_reported() -> None:
    transport = Transport(reply(429, "{}", retry_after="5"), reply(200))
    answer = send(transport, RetryPolicy(limit=3, delay=0.1))
    assert answer.throttled
    assert 5.0 <= transport.sleeps[0] <= 7.5  # the server's wait, jittered up by at most half


def test_retry_after_as_an_http_date() -> None:
    when = email.utils.formatdate(time.time() + 20, usegmt=True)
    transport = Transport(reply(503, "{}", retry_after=when), reply(200))
    send(transport, RetryPolicy(limit=2, delay=0.1))
    assert 18.0 <= transport.sleeps[0] <= 30.0


def test_backoff_is_capped() -> None:
    transport = Transport(*[reply(502)] * 11, reply(200))
    send(transport, RetryPolicy(limit=12, delay=100.0))
    assert max(transport.sleeps) <= retry.BACKOFF_CAP_SECONDS
    assert len(transport.sleeps) == 11


def test_retry_after_is_capped() -> None:
    transport = Transport(reply(429, "{}", retry_after="86400"), reply(200))
    send(transport, RetryPolicy(limit=2, delay=0.1))
    assert transport.sleeps[0] <= retry.RETRY_AFTER_CAP_SECONDS * 1.5


def test_users_retry_args_replace_the_policy() -> None:
    transport = Transport(*[reply(503)] * 5, reply(200))
    policy = RetryPolicy(limit=2, overrides={"stop": tenacity.stop_after_attempt(6), "wait": tenacity.wait_fixed(3)})
    send(transport, policy)
    assert transport.sleeps == [3, 3, 3, 3, 3]


def test_an_expired_token_is_refreshed_once_without_spending_a_retry() -> None:
    auth = RotatingAuth()
    transport = Transport(reply(401), reply(200, '{"ok": 1}'))
    assert send(transport, RetryPolicy(limit=1), auth=auth).data == {"ok": 1}
    assert auth.invalidated == ["Bearer token-1"]
    assert [r.headers["Authorization"] for r in transport.sent] == ["Bearer token-1", "Bearer token-2"]


def test_a_second_401_is_final() -> None:
    transport = Transport(reply(401), reply(401, '{"error_code": "UNAUTHENTICATED"}'))
    with pytest.raises(DatabricksApiError, match="HTTP 401 UNAUTHENTICATED"):
        send(transport, RetryPolicy(limit=3))
    assert len(transport.sent) == 2


@pytest.mark.parametrize(("kind", "final"), [("timeout", False), ("connection", False), ("tls", True), ("url", True)])
def test_no_answer_is_retried_unless_tls_or_url(kind: str, final: bool) -> None:
    transport = Transport(NoReply(kind, "boom"), reply(200))
    if final:
        with pytest.raises(DatabricksApiError, match="no HTTP answer"):
            send(transport, RetryPolicy(limit=2, delay=0.01))
        assert len(transport.sent) == 1
    else:
        assert send(transport, RetryPolicy(limit=2, delay=0.01)).data == {}
        assert len(transport.sent) == 2


@pytest.mark.parametrize(
    ("body", "problem"),
    [("not json", "a non-JSON body"), ("[1]", "a JSON list instead of an object")],
)
def test_a_malformed_success_is_an_error_not_data(body: str, problem: str) -> None:
    with pytest.raises(DatabricksApiError, match=problem):
        send(Transport(reply(200, body)))


def test_an_empty_success_is_an_empty_object() -> None:
    assert send(Transport(reply(200, ""))).data == {}


class TestServerClock:
    """The workspace's clock against this machine's, bounded by the Date headers of its answers."""

    @staticmethod
    def dated(second: float) -> str:
        return email.utils.formatdate(second, usegmt=True)

    def test_nothing_is_known_before_a_dated_answer(self) -> None:
        clock = ServerClock()
        clock.saw(None, 100.0, 100.1)
        clock.saw("", 100.0, 100.1)
        assert clock.earliest(1_000.0) is None

    @pytest.mark.parametrize("ahead", [0.0, 0.4, 27.88, -25.03, 3600.0])
    def test_one_answer_bounds_the_offset_within_its_second(self, ahead: float) -> None:
        clock = ServerClock()
        sent = 1_800_000_000.25
        clock.saw(self.dated(sent + 0.01 + ahead), sent, sent + 0.02)
        assert clock.low <= ahead <= clock.high
        assert clock.high - clock.low <= 1.02

    def test_answers_across_a_second_boundary_narrow_it_to_their_latency(self) -> None:
        ahead, clock = 7.3, ServerClock()
        for local in (1_800_000_000.05, 1_800_000_000.35, 1_800_000_000.65, 1_800_000_000.95, 1_800_000_001.25):
            clock.saw(self.dated(local + 0.005 + ahead), local, local + 0.01)
        assert clock.low <= ahead <= clock.high
        assert clock.high - clock.low <= 0.31
        assert clock.earliest(1_800_000_100.0) == pytest.approx(1_800_000_100.0 + clock.low)

    def test_an_answer_that_does_not_fit_starts_afresh(self) -> None:
        clock, local = ServerClock(), 1_800_000_000.5
        clock.saw(self.dated(local + 10), local, local + 0.01)
        clock.saw(self.dated(local + 1 - 100), local + 1, local + 1.01)  # the workspace's clock was set back
        assert clock.low <= -100 <= clock.high

    @pytest.mark.parametrize("header", ["yesterday-ish", "Mon, 99 Foo 2026 25:61:61 GMT"])
    def test_an_unreadable_header_changes_nothing(self, header: str) -> None:
        clock = ServerClock()
        clock.saw(header, 100.0, 100.1)
        assert clock.earliest(100.0) is None
