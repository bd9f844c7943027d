"""The aiohttp application: one catch-all route that authenticates, injects faults and dispatches.

A single route and a dict lookup keep the request path short (no middleware, no per-request
logging); every error, including a handler's own bug, is answered as Jobs API JSON.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import re
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, NamedTuple

from aiohttp import web

from airflow_dbx.emulator import control, runpage
from airflow_dbx.emulator.auth import Credentials
from airflow_dbx.emulator.engine import Engine
from airflow_dbx.emulator.errors import ApiError
from airflow_dbx.emulator.faults import Faults, normalise_path, retry_after_header
from airflow_dbx.emulator.payloads import parse_json_body
from airflow_dbx.emulator.sql_routes import external_result, sql_api
from airflow_dbx.emulator.sql_statements import EXTERNAL_PREFIX, SqlService

log = logging.getLogger(__name__)

ADMIN_PREFIX = "/__emulator__/"
LOG_LIMIT = 100_000
JSON = "application/json"
_API = re.compile(r"^/api/(2\.[012])/(.+?)/?$")
_AZURE = re.compile(r"^/([^/]+)/oauth2/(v2\.0/)?token/?$")
_SECRET_QUERY = frozenset({"token", "access_token", "client_secret", "password", "code"})

Handler = Callable[[Engine, dict[str, Any], str, str], "dict[str, Any] | bytes"]

API_ROUTES: dict[tuple[str, str], Handler] = {
    ("POST", "jobs/runs/submit"): lambda e, d, u, v: e.submit(d, u),
    ("POST", "jobs/run-now"): lambda e, d, u, v: e.run_now(d, u),
    ("GET", "jobs/runs/get"): lambda e, d, u, v: e.get_run(d, v),
    ("GET", "jobs/runs/get-output"): lambda e, d, u, v: e.get_output(d),
    ("POST", "jobs/runs/cancel"): lambda e, d, u, v: control.cancel(e, d),
    ("POST", "jobs/runs/cancel-all"): lambda e, d, u, v: control.cancel_all(e, d),
    ("GET", "jobs/runs/list"): lambda e, d, u, v: e.list_runs(d),
    ("POST", "jobs/runs/repair"): lambda e, d, u, v: control.repair(e, d),
    ("POST", "jobs/runs/delete"): lambda e, d, u, v: control.delete(e, d),
    ("POST", "jobs/create"): lambda e, d, u, v: e.jobs.create(d, u),
    ("POST", "jobs/reset"): lambda e, d, u, v: e.jobs.reset(d),
    ("GET", "jobs/get"): lambda e, d, u, v: e.jobs.get(d, v),
    ("GET", "jobs/list"): lambda e, d, u, v: e.jobs.list(d),
    ("POST", "jobs/delete"): lambda e, d, u, v: e.jobs.delete(d),
}
_API_PATHS = {path for _, path in API_ROUTES}


class RequestRecord(NamedTuple):
    """One request as the emulator saw it; never credentials nor bodies."""

    method: str
    path: str
    query: dict[str, str]
    status: int | None
    time: float  # on the emulator's clock, as the runs' start and end times
    fault: str | None = None


class State:
    """Everything the app and the ``Emulator`` object share; guarded by ``engine.lock``."""

    def __init__(self, time_scale: float = 1.0, clock: Callable[[], float] | None = None) -> None:
        self.engine = Engine(time_scale, clock or time.time)
        self.sql = SqlService(self.engine.clock, time_scale, self.engine.lock)
        self.credentials = Credentials()
        self.faults = Faults()
        self.log: deque[RequestRecord] = deque(maxlen=LOG_LIMIT)
        self.request_counts: Counter[str] = Counter()

    @property
    def lock(self) -> Any:
        return self.engine.lock

    def reset(self) -> None:
        self.engine.reset()
        self.sql.reset()
        self.faults.reset()
        self.log.clear()
        self.request_counts.clear()

    def counters(self) -> dict[str, Any]:
        created = self.engine.created
        return {
            "requests": dict(self.request_counts),
            "faults": dict(self.faults.injected),
            "runs_created": created["runs"],
            "jobs_created": self.engine.jobs.created,
            "jobs_reset": self.engine.jobs.resets,
            "idempotent_replays": created["idempotent_replays"],
            "repairs": created["repairs"],
            "cancels": created["cancels"],
            "deletes": created["deletes"],
        }

    def record(self, request: web.Request, route: str, status: int | None, fault: str | None = None) -> None:
        query = {k: v for k, v in request.query.items() if k.lower() not in _SECRET_QUERY}
        self.log.append(RequestRecord(request.method, request.path, query, status, self.engine.clock(), fault))
        self.request_counts[f"{request.method} {route}"] += 1


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return web.Response(status=status, body=raw, content_type=JSON, headers=headers)


def error_response(error: ApiError) -> web.Response:
    return json_response(error.status, error.body(), error.headers or None)


def _drop(request: web.Request) -> None:
    """Close the connection without an answer, as a proxy or a crashed server would."""
    if request.transport is not None:
        request.transport.close()
    raise asyncio.CancelledError


def make_app(state: State) -> web.Application:
    from airflow_dbx.emulator.admin import admin

    app = web.Application(client_max_size=16 * 1024 * 1024)

    async def dated(request: web.Request, response: web.StreamResponse) -> None:
        # Answers carry the workspace's time, as Databricks' carry its own clock's.
        response.headers["Date"] = email.utils.formatdate(state.engine.clock(), usegmt=True)

    app.on_response_prepare.append(dated)

    async def handle(request: web.Request) -> web.StreamResponse:
        path = request.path
        try:
            if path.startswith(ADMIN_PREFIX):
                with state.lock:
                    user = state.credentials.principal(request.headers.get("Authorization"))
                if user is None:
                    return error_response(_unauthenticated())
                return await admin(state, request, path[len(ADMIN_PREFIX) :])
            return await _serve(state, request)
        except ApiError as exc:
            return error_response(exc)
        except asyncio.CancelledError:
            raise
        except web.HTTPException as exc:  # aiohttp's own refusals, such as a body over the size limit
            code = "MALFORMED_REQUEST" if exc.status < 500 else "INTERNAL_ERROR"
            return json_response(exc.status, {"error_code": code, "message": exc.reason})
        except Exception as exc:  # a bug must not take the server down nor leak a trace
            log.warning("emulator handler failed on %s %s", request.method, path, exc_info=True)
            return json_response(
                500, {"error_code": "INTERNAL_ERROR", "message": f"Emulator error: {type(exc).__name__}"}
            )

    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def _unauthenticated() -> ApiError:
    return ApiError(401, "UNAUTHENTICATED", "Credential was not sent or was of an unsupported type for this API.")


async def _serve(state: State, request: web.Request) -> web.StreamResponse:
    path, method = request.path, request.method
    match = _API.match(path)
    route = match.group(2) if match else normalise_path(path)
    user = ""
    if match:
        with state.lock:
            principal = state.credentials.principal(request.headers.get("Authorization"))
        if principal is None:
            with state.lock:
                state.record(request, route, 401)
            return error_response(_unauthenticated())
        user = principal
    fault, early = await _fault_before(state, request, method, route) if state.faults.active else (None, None)
    if early is not None:
        return early
    response = await (
        _api(state, request, method=method, version=match.group(1), route=route, user=user)
        if match
        else _public(state, request, route)
    )
    if fault is not None and fault.kind == "lose_response":
        with state.lock:
            state.record(request, route, fault.status, fault.kind)
        if fault.status is None:
            _drop(request)
        return json_response(fault.status or 500, fault.error_body(), fault.headers() or None)
    with state.lock:
        state.record(request, route, response.status, fault.kind if fault else None)
    return response


async def _fault_before(
    state: State, request: web.Request, method: str, route: str
) -> tuple[Any, web.StreamResponse | None]:
    """The fault armed for this request, and the answer it gives instead of the API's, if any."""
    with state.lock:
        fault = state.faults.take(method, route)
        wait, form = (0.0, "seconds") if fault else state.faults.throttle(route)
        if wait:
            state.record(request, route, 429, "rate_limited")
    if wait:
        body = {"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "Too many requests; slow down."}
        return None, json_response(429, body, {"Retry-After": retry_after_header(wait, form)})
    if fault is not None and fault.kind == "delay":
        # Read the body first (aiohttp keeps it for the handler): a late answer is still
        # carried out when the client has given up meanwhile, as a slow server would.
        await request.read()
        await asyncio.sleep(fault.seconds)
    elif fault is not None and fault.kind in ("status", "drop"):
        status = fault.status if fault.kind == "status" else None
        with state.lock:
            state.record(request, route, status, fault.kind)
        if status is None:
            _drop(request)
        return fault, json_response(status or 500, fault.error_body(), fault.headers() or None)
    return fault, None


async def _api(state: State, request: web.Request, *, method: str, version: str, route: str, user: str) -> web.Response:
    if version == "2.0" or route.startswith("sql/"):
        return await sql_api(state.sql, request, version=version, route=route, user=user)
    handler = API_ROUTES.get((method, route))
    if handler is None:
        if route in _API_PATHS:
            allowed = ", ".join(m for m, r in API_ROUTES if r == route)
            return json_response(
                405,
                {
                    "error_code": "METHOD_NOT_ALLOWED",
                    "message": f"{method} is not allowed on {request.path}; use {allowed}",
                },
                {"Allow": allowed},
            )
        return json_response(
            404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"No API found for '{method} {request.path}'"}
        )
    if method == "GET":
        data: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            data = {**parse_json_body(await request.read()), **data}
    else:
        data = parse_json_body(await request.read())
    try:
        with state.lock:
            result = handler(state.engine, data, user, version)
    except ApiError as exc:
        return error_response(exc)
    return json_response(200, result)


async def _public(state: State, request: web.Request, route: str) -> web.Response:
    """The token endpoints, the run pages and SQL result links (no API credentials needed), or a 404."""
    if request.path.startswith(EXTERNAL_PREFIX):
        return await external_result(state.sql, request)
    page = runpage.PATH.match(request.path) if request.method == "GET" else None
    if page:
        with state.lock:
            status, text = runpage.render(state.engine, int(page.group(1)), int(page.group(2)))
        return web.Response(status=status, text=text, content_type="text/html", headers=runpage.HEADERS)
    azure = _AZURE.match(request.path)
    if request.method == "GET" and route == "oidc/.well-known/oauth-authorization-server":
        origin = f"{request.scheme}://{request.host}"
        return json_response(
            200,
            {
                "issuer": f"{origin}/oidc",
                "token_endpoint": f"{origin}/oidc/v1/token",
                "authorization_endpoint": f"{origin}/oidc/v1/authorize",
            },
        )
    if request.method == "POST" and (route == "oidc/v1/token" or azure):
        form = {k: str(v) for k, v in (await request.post()).items()}
        header = request.headers.get("Authorization")
        with state.lock:
            if azure:
                status, body = state.credentials.issue_azure(azure.group(1), header, form, bool(azure.group(2)))
            else:
                status, body = state.credentials.issue_oauth(header, form)
        return json_response(status, body)
    return json_response(
        404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"No API found for '{request.method} {request.path}'"}
    )
