"""One request exchange, written once for both transports, as a plan of effects.

The plan asks its driver for auth headers (:class:`Authorize`), sends a :class:`Request`,
gets back a :class:`Reply` or a :class:`NoReply`, refreshes an OAuth token once on 401,
classifies the answer, and on a retryable failure asks for a :class:`Sleep` and tries again
as the retry policy says. Drivers (``drivers.py``) only perform the effects.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, NamedTuple

import tenacity

from airflow_dbx.errors import DatabricksApiError, TransientApiError, is_retryable
from airflow_dbx.waiting import Plan, Sleep

from .retry import RetryPolicy, exhausted, parse_retry_after

if TYPE_CHECKING:
    from airflow_dbx.auth import Auth

BODY_PREVIEW = 200
_URL_USERINFO = re.compile(r"(://)[^/@\s]+@")

Scrubber = Callable[[str], str]


@dataclass(frozen=True)
class Request:
    """An effect: send this request. ``label`` is how errors and logs name it."""

    method: str
    url: str
    label: str
    params: Mapping[str, str | list[str]] | None = None
    json: Mapping[str, Any] | None = None
    form: Mapping[str, str] | None = field(default=None, repr=False)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)


class Reply(NamedTuple):
    status: int
    content: bytes
    retry_after: str | None


class NoReply(NamedTuple):
    """The request got no HTTP answer. ``kind``: tls, url, timeout or connection."""

    kind: str
    detail: str


class Authorize(NamedTuple):
    """An effect: the headers ``auth`` gives now (which may mean fetching a token)."""

    auth: Auth


class Answer(NamedTuple):
    """A successful exchange: the JSON object, and whether any attempt was throttled (429)."""

    data: dict[str, Any]
    throttled: bool


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` without any of ``secrets``, nor the password of any URL in it (e.g. a proxy's)."""
    text = _URL_USERINFO.sub(r"\1***@", text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def query_params(params: Mapping[str, Any] | None) -> dict[str, str | list[str]] | None:
    """Query parameters as the API spells them: no Nones, booleans in lower case, a list as the
    key repeated (``filter_by.statement_ids=a&filter_by.statement_ids=b``)."""
    if not params:
        return None
    return {k: _query_value(v) for k, v in params.items() if v is not None}


def _query_value(value: Any) -> str | list[str]:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return [str(item) for item in value]
    return str(value)


def read_reply(request: Request, reply: Reply, scrubber: Scrubber) -> dict[str, Any]:
    """The JSON object of a 2xx answer, or the DatabricksApiError (transient if retryable) it means."""
    text = reply.content.decode("utf-8", "replace").strip()
    data, problem = _parse_object(text)
    if 200 <= reply.status < 300:
        if data is not None:
            return data
        if not text:
            return {}  # cancel and friends answer with nothing worth reading
        raise _error(request, reply.status, message=scrubber(problem))
    error_code = message = None
    if data is not None:
        # Databricks says error_code/message; OAuth token endpoints say error/error_description.
        error_code = data.get("error_code") or data.get("error")
        message = data.get("message") or data.get("error_description")
        error_code = str(error_code) if error_code else None
    message = scrubber(str(message) if message else (problem or text[:BODY_PREVIEW]))
    if is_retryable(reply.status, error_code):
        retry_after = parse_retry_after(reply.retry_after)
        raise _error(request, reply.status, error_code, message, transient=True, retry_after=retry_after)
    raise _error(request, reply.status, error_code, message)


def _parse_object(text: str) -> tuple[dict[str, Any] | None, str]:
    """The body's JSON object, or None and what is wrong with the body."""
    if not text:
        return None, "an empty body"
    try:
        data = json.loads(text)
    except ValueError:
        return None, f"a non-JSON body: {text[:BODY_PREVIEW]}"
    if not isinstance(data, dict):
        return None, f"a JSON {type(data).__name__} instead of an object: {text[:BODY_PREVIEW]}"
    return data, ""


def _error(
    request: Request,
    status: int | None,
    error_code: str | None = None,
    message: str = "",
    *,
    transient: bool = False,
    **extra: Any,
) -> DatabricksApiError:
    cls = TransientApiError if transient else DatabricksApiError
    return cls(
        method=request.method, endpoint=request.label, status_code=status, error_code=error_code, message=message,
        **extra,
    )


def no_reply_error(request: Request, failure: NoReply) -> DatabricksApiError:
    """What a request without an answer means: TLS and URL failures are final, the rest transient."""
    if failure.kind == "tls":
        host = request.url.split("/")[2]
        message = (
            f"TLS error talking to {host} (point the extra ca_bundle at the CA that signed "
            f"its certificate if it is private): {failure.detail}"
        )
        return _error(request, None, message=message)
    if failure.kind == "url":
        return _error(request, None, message=failure.detail)
    what = "timed out" if failure.kind == "timeout" else "connection failed"
    return _error(request, None, message=f"{what}: {failure.detail}", transient=True)


def answer_of(request: Request, reply: Reply | NoReply, scrubber: Scrubber) -> dict[str, Any]:
    """The JSON object a request got, or the error its reply (or lack of one) means."""
    if isinstance(reply, NoReply):
        raise no_reply_error(request, reply._replace(detail=scrubber(reply.detail)))
    return read_reply(request, reply, scrubber)


def send_once(request: Request, scrubber: Scrubber) -> Plan[dict[str, Any]]:
    """One unauthenticated attempt (a token request), no retries of its own."""
    return answer_of(request, (yield request), scrubber)


def attempt(request: Request, auth: Auth, scrubber: Scrubber) -> Plan[dict[str, Any]]:
    """One attempt: headers, send, and, when an OAuth token expired mid-run, one more with a fresh token."""
    headers = yield Authorize(auth)
    reply = yield replace(request, headers={**request.headers, **headers})
    if isinstance(reply, Reply) and reply.status == 401 and auth.refreshable:
        auth.invalidate(headers)
        headers = yield Authorize(auth)
        reply = yield replace(request, headers={**request.headers, **headers})
    return answer_of(request, reply, scrubber)


def exchange(request: Request, auth: Auth, policy: RetryPolicy, scrubber: Scrubber) -> Plan[Answer]:
    """The request, retried as ``policy`` says.

    Nearly every request succeeds at its first attempt, so that attempt runs bare; the
    tenacity controller (a fifth of a poll's CPU in the triggerer) is built only when it
    fails, and is handed that failure as its own first attempt, so counting, Retry-After
    waits and the user's retry_args work as if it had run from the start.
    """
    try:
        return Answer((yield from attempt(request, auth, scrubber)), throttled=False)
    except Exception as exc:
        failure: BaseException | None = exc
    controller = policy.controller()
    state = tenacity.RetryCallState(controller, fn=None, args=(), kwargs={})
    throttled = False
    while True:
        try:
            action = controller.iter(state)
        except (DatabricksApiError, tenacity.RetryError) as exc:
            raise exhausted(exc, controller) from None
        if isinstance(action, tenacity.DoAttempt):
            if failure is None:
                try:
                    state.set_result((yield from attempt(request, auth, scrubber)))
                    continue
                except Exception as exc:
                    failure = exc
            throttled = throttled or (isinstance(failure, DatabricksApiError) and failure.throttled)
            state.set_exception((type(failure), failure, failure.__traceback__))
            failure = None
        elif isinstance(action, tenacity.DoSleep):
            state.prepare_for_next_attempt()
            yield Sleep(float(action))
        else:
            return Answer(action, throttled)

