"""HTTP routes of the SQL APIs (``/api/2.0/sql/...``) and of external result links."""

from __future__ import annotations

import asyncio
import re
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from airflow_dbx.emulator.errors import ApiError, invalid
from airflow_dbx.emulator.payloads import parse_json_body
from airflow_dbx.emulator.sql_statements import EXTERNAL_PREFIX, TERMINAL

if TYPE_CHECKING:
    from airflow_dbx.emulator.sql_statements import SqlService

_STATEMENT = re.compile(r"^sql/statements(?:/([^/]+)(?:/(cancel|result/chunks/([^/]+)))?)?$")
_WAREHOUSE = re.compile(r"^sql/warehouses(?:/([^/]+)(?:/(edit|start|stop))?)?$")
_WAIT = re.compile(r"^(\d+)s$")
_EXTERNAL = re.compile(r"^([A-Za-z0-9_-]+)/(\d+)$")


def _json(status: int, body: Any) -> web.Response:
    return web.json_response(body, status=status)


def _origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


async def sql_api(sql: SqlService, request: web.Request, *, version: str, route: str, user: str) -> web.Response:
    """Answer one SQL API request; ``route`` is the path after ``/api/<version>/``."""
    try:
        return await _sql_api(sql, request, version, route, user)
    except ApiError as exc:
        return _json(exc.status, exc.body())


async def _sql_api(sql: SqlService, request: web.Request, version: str, route: str, user: str) -> web.Response:
    if version != "2.0":
        raise ApiError(404, "ENDPOINT_NOT_FOUND", f"No API found for '{request.method} {request.path}'")
    body = parse_json_body(await request.read()) if request.method in ("POST", "PATCH") else dict(request.query)
    if match := _STATEMENT.match(route):
        return await _statements(sql, request, match, body, user)
    if route == "sql/history/queries" and request.method == "GET":
        # A list filter repeats its key (filter_by.statement_ids=a&filter_by.statement_ids=b).
        query = {key: ",".join(request.query.getall(key)) for key in request.query}
        with sql.lock:
            return _json(200, {"res": sql.history(query), "has_next_page": False})
    if match := _WAREHOUSE.match(route):
        with sql.lock:
            return _json(200, _warehouses(sql, request, match, body, user))
    raise ApiError(404, "ENDPOINT_NOT_FOUND", f"No API found for '{request.method} {request.path}'")


def _not_allowed(request: web.Request) -> ApiError:
    return ApiError(405, "METHOD_NOT_ALLOWED", f"{request.method} is not allowed on {request.path}")


async def _statements(
    sql: SqlService, request: web.Request, match: re.Match[str], body: dict[str, Any], user: str
) -> web.Response:
    statement_id, action, chunk = match.groups()
    method = request.method
    if statement_id is None:
        if method != "POST":
            raise _not_allowed(request)
        return _json(200, await _execute(sql, body, user, _origin(request)))
    with sql.lock:
        if action is None and method == "GET":
            return _json(200, sql.view(sql.get(statement_id), _origin(request)))
        if action == "cancel" and method == "POST":
            sql.cancel(statement_id)
            return _json(200, {})
        if chunk is not None and method == "GET":
            if not chunk.isdigit():
                raise invalid("chunk_index", f"must be a non-negative integer, got {chunk!r}")
            return _json(200, sql.chunk(sql.get(statement_id), int(chunk), _origin(request)))
    raise _not_allowed(request)


async def _execute(sql: SqlService, body: dict[str, Any], user: str, origin: str) -> dict[str, Any]:
    """Start a statement and wait up to ``wait_timeout`` (scaled) for its end, as execute does."""
    wait = _wait_timeout(body.get("wait_timeout", "10s"))
    on_timeout = body.get("on_wait_timeout", "CONTINUE")
    if on_timeout not in ("CONTINUE", "CANCEL"):
        raise invalid("on_wait_timeout", f"must be CONTINUE or CANCEL, got {on_timeout!r}")
    with sql.lock:
        statement = sql.submit(body, user)
        deadline = time.monotonic() + wait * sql.time_scale
    while wait:
        with sql.lock:
            sql.advance()
            if statement.state in TERMINAL:
                break
            if time.monotonic() >= deadline:
                if on_timeout == "CANCEL":
                    sql.cancel(statement.statement_id)
                break
        await asyncio.sleep(min(0.02, max(deadline - time.monotonic(), 0.0)))
    with sql.lock:
        return sql.view(statement, origin)


def _wait_timeout(value: Any) -> int:
    match = _WAIT.match(value) if isinstance(value, str) else None
    seconds = int(match.group(1)) if match else -1
    if seconds != 0 and not 5 <= seconds <= 50:
        raise invalid("wait_timeout", f"must be 0s or between 5s and 50s, got {value!r}")
    return seconds


def _warehouses(
    sql: SqlService, request: web.Request, match: re.Match[str], body: dict[str, Any], user: str
) -> dict[str, Any]:
    warehouse_id, action = match.groups()
    method, warehouses, host = request.method, sql.warehouses, request.host.split(":")[0]
    if warehouse_id is None:
        if method == "GET":
            return {"warehouses": [warehouses.advance(w).view(host) for w in warehouses.items.values()]}
        if method == "POST":
            return warehouses.create(body, user)
    elif action is None:
        if method == "GET":
            return warehouses.get(warehouse_id).view(host)
        if method == "DELETE":
            return warehouses.delete(warehouse_id)
    elif method == "POST":
        if action == "edit":
            return warehouses.edit(warehouse_id, body)
        return warehouses.start(warehouse_id) if action == "start" else warehouses.stop(warehouse_id)
    raise _not_allowed(request)


async def external_result(sql: SqlService, request: web.Request) -> web.Response:
    """A chunk behind an external link: no workspace credentials allowed, as with a presigned URL."""
    try:
        return await _external_result(sql, request)
    except ApiError as exc:
        return _json(exc.status, exc.body())


async def _external_result(sql: SqlService, request: web.Request) -> web.Response:
    if request.headers.get("Authorization"):
        raise ApiError(400, "InvalidArgument", "Only one auth mechanism allowed; the link is already signed.")
    match = _EXTERNAL.match(request.path[len(EXTERNAL_PREFIX) :])
    try:
        expires = float(request.query.get("expires", "0"))
    except ValueError:
        expires = 0.0
    if match is None or request.method != "GET":
        raise ApiError(404, "NoSuchKey", "The specified key does not exist.")
    with sql.lock:
        content, content_type = sql.external(match.group(1), int(match.group(2)), expires)
    return web.Response(status=200, body=content, content_type=content_type)
