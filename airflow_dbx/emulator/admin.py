"""The admin API under ``/__emulator__/``: drive faults, credentials and the clock from another process.

Every route needs the same credentials as the Jobs API; bodies and answers are JSON objects.

=======================  =====================================================================
``GET health``           ``{"ok": true, "url", "time_scale"}``
``POST faults``          ``{"kind": "status"|"delay"|"drop"|"lose_response", "method": "POST",
                         "path": "jobs/runs/submit", "count": 1, "status": 503, "retry_after": 2,
                         "body": {...}, "seconds": 2.0, "retry_after_format": "seconds"|"http-date"}``;
                         ``path``/``method`` may be ``"*"``
``GET faults``           the pending faults; ``DELETE faults`` drops them and every rate limit
``POST rate_limit``      ``{"path": "jobs/runs/get" or null, "per_second": 5, "burst": 5,
                         "retry_after_format": "seconds"|"http-date"}``; ``per_second`` null or 0
                         removes the limit
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
    engine, creds = state.engine, state.credentials
    if key == "GET health":
        return {"ok": True, "url": engine.base_url, "time_scale": engine.time_scale}
    if key == "POST faults":
        kind = body.pop("kind")
        fault = state.faults.add(kind, body.pop("method", "*"), body.pop("path"), int(body.pop("count", 1)), **body)
        return {"fault": vars(fault)}
    if key == "GET faults":
        return {"faults": [vars(f) for f in state.faults.rules]}
    if key == "DELETE faults":
        state.faults.clear()
        return {}
    if key == "POST rate_limit":
        form = body.get("retry_after_format", "seconds")
        state.faults.set_rate_limit(body.get("path"), body.get("per_second"), body.get("burst"), form)
        return {}
    if key == "GET requests":
        since = get_int(request.query, "since", default=0, minimum=0) or 0
        records = list(state.log)[since:]
        return {"requests": [r._asdict() for r in records], "next": since + len(records)}
    if key == "GET runs":
        if "run_id" in request.query:
            return engine.snapshot(get_int(request.query, "run_id", required=True) or 0)
        return {"runs": engine.snapshots()}
    if key == "GET counters":
        return state.counters()
    if key == "POST reset":
        state.reset()
        return {}
    if key == "GET time_scale":
        return {"time_scale": engine.time_scale}
    if key == "POST time_scale":
        engine.time_scale = _positive(body.get("time_scale"), "time_scale")
        return {"time_scale": engine.time_scale}
    if key == "POST cancel_terminating_seconds":
        seconds = body.get("cancel_terminating_seconds")
        engine.cancel_terminating_seconds = 0.0 if seconds == 0 else _positive(seconds, "cancel_terminating_seconds")
    if key in ("GET cancel_terminating_seconds", "POST cancel_terminating_seconds"):
        return {"cancel_terminating_seconds": engine.cancel_terminating_seconds}
    if key == "POST tokens":
        creds.pats.add(_text(body, "token"))
        return {}
    if key == "POST basic_users":
        creds.add_basic_user(_text(body, "user"), _text(body, "password"))
        return {}
    if key == "POST oauth_clients":
        ttl = _positive(body.get("ttl_seconds", 3600), "ttl_seconds")
        creds.oauth_clients[_text(body, "client_id")] = Client(_text(body, "secret"), ttl)
        return {}
    if key == "POST azure_clients":
        ttl = _positive(body.get("ttl_seconds", 3600), "ttl_seconds")
        creds.azure_clients[(_text(body, "tenant"), _text(body, "client_id"))] = Client(_text(body, "secret"), ttl)
        return {}
    if key == "POST clusters":
        engine.clusters.add(_text(body, "cluster_id"))
        return {}
    if key == "POST expire_oauth_tokens":
        creds.expire_issued()
        return {}
    return None


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    return value


def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)
