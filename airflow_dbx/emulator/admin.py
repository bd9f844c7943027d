"""The admin API under ``/__emulator__/``: drive faults, credentials and the clock from another process.

Every route needs the same credentials as the Jobs API; bodies and answers are JSON objects.

=======================  =====================================================================
``GET health``           ``{"ok": true, "url", "time_scale"}``
``POST faults``          ``{"kind": "status"|"delay"|"drop"|"lose_response", "method": "POST",
                         "path": "jobs/runs/submit", "count": 1, "status": 503, "retry_after": 2,
                         "body": {...}, "seconds": 2.0, "retry_after_format": "seconds"|"http-date"}``;
                         ``path``/``method`` may be ``"*"``
``GET faults``           the pending faults and the rate limits; ``DELETE faults`` drops them and every rate limit
``POST rate_limit``      ``{"path": "jobs/runs/get" or null, "per_second": 5, "burst": 5,
                         "retry_after_format": "seconds"|"http-date"}``; ``per_second`` null or 0
                         removes the limit; ``{"preset": "databricks"}`` sets Databricks'
                         documented per-endpoint limits (``faults.RATE_LIMIT_PRESETS``)
``GET requests``         ``{"requests": [RequestRecord as a dict, ...], "next": N}``; ``?since=N``
                         returns only the records after the first N
``GET runs``             ``{"runs": [snapshot, ...]}``; ``?run_id=N`` returns one snapshot
``GET counters``         requests per "METHOD path", faults per kind, runs/jobs created, ...
``POST reset``           forget runs, jobs, faults, the request log and the counters
``GET|POST time_scale``  ``{"time_scale": 0.1}`` (applies to runs and repairs started later)
``GET|POST cancel_terminating_seconds``  ``{"cancel_terminating_seconds": 0.5}``: how long a
                         cancelled run stays TERMINATING (clock seconds, not scaled)
``POST tokens``          ``{"token"}``; ``POST basic_users`` ``{"user", "password"}``
``POST oauth_clients``   ``{"client_id", "secret", "ttl_seconds"}``
``POST azure_clients``   ``{"tenant", "client_id", "secret", "ttl_seconds"}``
``POST clusters``        ``{"cluster_id"}``: an ``existing_cluster_id`` to accept
``POST expire_oauth_tokens``  every issued OAuth / Azure token is refused from now on
=======================  =====================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from airflow_dbx.emulator.app import State, json_response
from airflow_dbx.emulator.auth import Client
from airflow_dbx.emulator.errors import ApiError
from airflow_dbx.emulator.payloads import get_int, parse_json_body

if TYPE_CHECKING:
    from aiohttp import web


async def admin(state: State, request: web.Request, route: str) -> web.Response:
    method = request.method
    body = parse_json_body(await request.read()) if method in ("POST", "PUT", "DELETE") else {}
    key = f"{method} {route.rstrip('/')}"
    with state.lock:
        try:
            result = _dispatch(state, request, key, body)
        except (ValueError, TypeError, KeyError) as exc:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"{type(exc).__name__}: {exc}") from None
    if result is None:
        raise ApiError(404, "ENDPOINT_NOT_FOUND", f"No admin API '{method} {request.path}'")
    return json_response(200, result)


def _dispatch(state: State, request: web.Request, key: str, body: dict[str, Any]) -> dict[str, Any] | None:
    handler = _ROUTES.get(key)
    return None if handler is None else handler(state, request, body)


Route = Callable[[State, "web.Request", dict[str, Any]], dict[str, Any]]


def _add_fault(state: State, request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
    kind = body.pop("kind")
    fault = state.faults.add(kind, body.pop("method", "*"), body.pop("path"), int(body.pop("count", 1)), **body)
    return {"fault": vars(fault)}


def _set_rate_limit(state: State, request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
    if body.get("preset") is not None:
        state.faults.set_rate_limit_preset(body["preset"])
        return {}
    form = body.get("retry_after_format", "seconds")
    state.faults.set_rate_limit(body.get("path"), body.get("per_second"), body.get("burst"), form)
    return {}


def _requests(state: State, request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
    since = get_int(request.query, "since", default=0, minimum=0) or 0
    records = list(state.log)[since:]
    return {"requests": [r._asdict() for r in records], "next": since + len(records)}


def _runs(state: State, request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
    if "run_id" in request.query:
        return state.engine.snapshot(get_int(request.query, "run_id", required=True) or 0)
    return {"runs": state.engine.snapshots()}


def _set_time_scale(state: State, request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
    state.engine.time_scale = _positive(body.get("time_scale"), "time_scale")
    return {"time_scale": state.engine.time_scale}


def _set_cancel_terminating(state: State, request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
    seconds = body.get("cancel_terminating_seconds")
    engine = state.engine
    engine.cancel_terminating_seconds = 0.0 if seconds == 0 else _positive(seconds, "cancel_terminating_seconds")
    return {"cancel_terminating_seconds": engine.cancel_terminating_seconds}


def _add_oauth_client(state: State, request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
    ttl = _positive(body.get("ttl_seconds", 3600), "ttl_seconds")
    state.credentials.oauth_clients[_text(body, "client_id")] = Client(_text(body, "secret"), ttl)
    return {}


def _add_azure_client(state: State, request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
    ttl = _positive(body.get("ttl_seconds", 3600), "ttl_seconds")
    key = (_text(body, "tenant"), _text(body, "client_id"))
    state.credentials.azure_clients[key] = Client(_text(body, "secret"), ttl)
    return {}


def _done(action: Callable[[State, dict[str, Any]], Any]) -> Route:
    """A route that acts on the state and answers ``{}``."""
    def route(state: State, request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
        action(state, body)
        return {}

    return route


_ROUTES: dict[str, Route] = {
    "GET health": lambda state, request, body: {
        "ok": True, "url": state.engine.base_url, "time_scale": state.engine.time_scale
    },
    "POST faults": _add_fault,
    "GET faults": lambda state, request, body: {
        "faults": [vars(f) for f in state.faults.rules],
        "rate_limits": {path or "*": bucket.per_second for path, bucket in state.faults.limits.items()},
    },
    "DELETE faults": _done(lambda state, body: state.faults.clear()),
    "POST rate_limit": _set_rate_limit,
    "GET requests": _requests,
    "GET runs": _runs,
    "GET counters": lambda state, request, body: state.counters(),
    "POST reset": _done(lambda state, body: state.reset()),
    "GET time_scale": lambda state, request, body: {"time_scale": state.engine.time_scale},
    "POST time_scale": _set_time_scale,
    "GET cancel_terminating_seconds": lambda state, request, body: {
        "cancel_terminating_seconds": state.engine.cancel_terminating_seconds
    },
    "POST cancel_terminating_seconds": _set_cancel_terminating,
    "POST tokens": _done(lambda state, body: state.credentials.pats.add(_text(body, "token"))),
    "POST basic_users": _done(
        lambda state, body: state.credentials.add_basic_user(_text(body, "user"), _text(body, "password"))
    ),
    "POST oauth_clients": _add_oauth_client,
    "POST azure_clients": _add_azure_client,
    "POST clusters": _done(lambda state, body: state.engine.clusters.add(_text(body, "cluster_id"))),
    "POST expire_oauth_tokens": _done(lambda state, body: state.credentials.expire_issued()),
}


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    return value


def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)
