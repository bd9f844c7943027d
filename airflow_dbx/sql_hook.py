"""DatabricksSqlHook: the SQL Statement Execution and SQL Warehouses APIs (2.0), no driver needed.

Like the run endpoints, each endpoint is written once as a plan; the plain methods send it
with requests, the ``a_*`` ones with aiohttp through the shared session pool.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from airflow_dbx._http.exchange import NoReply, Request
from airflow_dbx._http.retry import RetryPolicy
from airflow_dbx.errors import DatabricksApiError, PayloadError
from airflow_dbx.hook import MAX_PAGES, DatabricksHook
from airflow_dbx.sql_models import (
    EXECUTE_STATEMENT,
    LIST_WAREHOUSES,
    QUERY_HISTORY,
    WAREHOUSE_STABLE,
    DatabricksSqlFailed,
    Statement,
    marker_of,
    statement_endpoint,
    warehouse_endpoint,
    warehouse_id_from_http_path,
)
from airflow_dbx.waiting import Plan, Watcher, patiently, watch

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["DatabricksSqlHook"]

log = logging.getLogger("airflow_dbx.hook")

HISTORY_PAGE = 1000
CLOCK_SKEW_SECONDS = 60.0  # the history's clock is the workspace's; look a little further back
SEND_ONCE = RetryPolicy(1, 0.0)


class _Warehouse:
    """A warehouse's state, shaped for ``watch``."""

    def __init__(self, data: Mapping[str, Any], target: str) -> None:
        self.data = dict(data)
        self.state = _WarehouseState(str(data.get("state", "")), target)


class _WarehouseState:
    def __init__(self, outcome: str, target: str) -> None:
        self.outcome = outcome
        self.is_terminal = outcome == target or outcome in ("DELETED", "DELETING")


class DatabricksSqlHook(DatabricksHook):
    """SQL on a Databricks workspace over REST: statements, their results, warehouses.

    Same connection and retry arguments as :class:`~airflow_dbx.hook.DatabricksHook`.
    """

    hook_name = "Databricks SQL (airflow-dbx)"

    # ------------------------------------------------------------------ statements

    def execute_statement(self, body: Mapping[str, Any]) -> Statement:
        """POST sql/statements: the new statement, as far as it got within ``wait_timeout``.

        The API has no idempotency token, so a request whose answer is lost is not sent again
        blindly: the statement's text must contain a marker (:func:`marked`); after a failure
        worth retrying, the query history is searched for it first, and a statement found
        there is the one this request started.
        """
        marker = marker_of(str(body.get("statement", "")))
        since_ms = int((time.time() - CLOCK_SKEW_SECONDS) * 1000)
        for attempt in range(1, self.retry_limit + 1):
            try:
                answer = self._api.run(self._api.call(EXECUTE_STATEMENT, body=body, policy=SEND_ONCE))
                return Statement.from_dict(answer.data)
            except DatabricksApiError as exc:
                if not exc.retryable or attempt == self.retry_limit or not marker:
                    raise
                pause = getattr(exc, "retry_after", None) or min(self.retry_delay * 2 ** (attempt - 1), 60.0)
                log.info("Executing a statement failed (%s); checking the history in %.1fs", exc, pause)
                time.sleep(pause)
            found = self._patient_history(marker, str(body.get("warehouse_id")), since_ms)
            if found:
                log.info("The lost request started statement %s; not sending it again", found[0]["query_id"])
                return self.get_statement(str(found[0]["query_id"]))
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _patient_history(self, marker: str, warehouse_id: str, since_ms: int) -> list[dict[str, Any]]:
        return self._api.run(patiently(functools.partial(self._history, marker, warehouse_id, since_ms)))

    def get_statement(self, statement_id: str) -> Statement:
        return self._api.run(self._statement(statement_id))[0]

    def cancel_statement(self, statement_id: str) -> None:
        self._api.run(self._data(statement_endpoint(statement_id, "/cancel", "POST"), body={}))

    async def a_cancel_statement(self, statement_id: str) -> None:
        await self._api.arun(self._data(statement_endpoint(statement_id, "/cancel", "POST"), body={}))

    def wait_for_statement(self, statement_id: str, watcher: Watcher) -> Statement | None:
        """Check the statement on ``watcher``'s schedule until it ends, or None once the deadline passed."""
        return self._api.run(watch(statement_id, lambda: self._statement(statement_id), watcher, "statement"))

    async def a_wait_for_statement(self, statement_id: str, watcher: Watcher) -> Statement | None:
        return await self._api.arun(watch(statement_id, lambda: self._statement(statement_id), watcher, "statement"))

    async def a_get_statement(self, statement_id: str) -> Statement:
        return (await self._api.arun(self._statement(statement_id)))[0]

    def read_rows(self, statement: Statement, limit: int | None = None) -> list[list[Any]]:
        """The rows of a succeeded statement, chunk after chunk, up to ``limit`` rows; external
        links are fetched without the workspace's credentials, as presigned URLs require."""
        return self._api.run(self._rows(statement, limit))

    async def a_statement_statuses(self, statement_ids: list[str]) -> dict[str, str]:
        """The query history's status (QUEUED, RUNNING, FINISHED, FAILED, CANCELED) of each of
        ``statement_ids`` it lists: one request for up to a hundred statements."""
        params = {"filter_by.statement_ids": statement_ids, "max_results": len(statement_ids)}
        answer = await self._api.arun(self._data(QUERY_HISTORY, params=params))
        return {str(q["query_id"]): str(q.get("status")) for q in answer.get("res") or [] if q.get("query_id")}

    def find_statements(self, marker: str, warehouse_id: str, since_ms: int) -> list[dict[str, Any]]:
        """Query history entries whose text contains ``marker``, newest first."""
        return self._api.run(self._history(marker, warehouse_id, since_ms))

    def see_through(self, statement: Statement, watcher: Watcher, *, leave_on_api_error: bool = False) -> Statement:
        """Wait in this process until a started statement ends; past ``watcher``'s deadline it
        is cancelled and :class:`TimeoutError` raised. Raises DatabricksSqlFailed when it did
        not succeed. ``leave_on_api_error``: an API error leaves the statement running (for
        the task's next try to reattach to) instead of cancelling it."""
        if not statement.state.is_terminal:
            try:
                ended = self.wait_for_statement(statement.statement_id, watcher)
            except BaseException as exc:  # the task's execution_timeout, a kill: the statement must not go on
                if not (leave_on_api_error and isinstance(exc, DatabricksApiError)):
                    self.cancel_statement(statement.statement_id)
                raise
            if ended is None:
                self.cancel_statement(statement.statement_id)
                raise TimeoutError(f"Databricks SQL statement {statement.statement_id} was cancelled: timeout")
            statement = ended
        if not statement.state.is_successful:
            raise DatabricksSqlFailed(statement)
        return statement

    def resolve_warehouse(
        self, warehouse_id: str | None, http_path: str | None, name: str | None, name_field: str
    ) -> str:
        """The warehouse id given, or read from an HTTP path, or found by name."""
        if warehouse_id:
            return warehouse_id
        if http_path:
            return warehouse_id_from_http_path(http_path)
        if name:
            return self.find_warehouse_id(name, name_field)
        raise PayloadError(name_field, "give warehouse_id, http_path or the warehouse's name")

    # ------------------------------------------------------------------ warehouses

    def list_warehouses(self) -> list[dict[str, Any]]:
        return list(self._api.run(self._data(LIST_WAREHOUSES)).get("warehouses") or [])

    def get_warehouse(self, warehouse_id: str) -> dict[str, Any]:
        return self._api.run(self._data(warehouse_endpoint(warehouse_id)))

    def find_warehouse_id(self, name: str, field_name: str = "sql_endpoint_name") -> str:
        """The id of the one warehouse called ``name``."""
        ids = [str(w["id"]) for w in self.list_warehouses() if w.get("name") == name]
        if len(ids) != 1:
            problem = "no SQL warehouse is" if not ids else f"{len(ids)} SQL warehouses are"
            raise PayloadError(field_name, f"{problem} named {name!r}")
        return ids[0]

    def change_warehouse(self, warehouse_id: str, action: str) -> None:
        """POST sql/warehouses/{id}/start or /stop."""
        self._api.run(self._data(warehouse_endpoint(warehouse_id, f"/{action}", "POST"), body={}))

    def wait_for_warehouse(self, warehouse_id: str, action: str, watcher: Watcher) -> str | None:
        """Wait until a start or stop took effect: the final state, or None after the deadline."""
        check = lambda: self._warehouse(warehouse_id, WAREHOUSE_STABLE[action])  # noqa: E731
        ended = self._api.run(watch(warehouse_id, check, watcher, "warehouse"))
        return None if ended is None else ended.state.outcome

    async def a_wait_for_warehouse(self, warehouse_id: str, action: str, watcher: Watcher) -> str | None:
        check = lambda: self._warehouse(warehouse_id, WAREHOUSE_STABLE[action])  # noqa: E731
        ended = await self._api.arun(watch(warehouse_id, check, watcher, "warehouse"))
        return None if ended is None else ended.state.outcome

    # ------------------------------------------------------------------ plans

    def _statement(self, statement_id: str) -> Plan[tuple[Statement, bool]]:
        data, throttled = yield from self._call(statement_endpoint(statement_id))
        return Statement.from_dict(data), throttled

    def _warehouse(self, warehouse_id: str, target: str) -> Plan[tuple[_Warehouse, bool]]:
        data, throttled = yield from self._call(warehouse_endpoint(warehouse_id))
        return _Warehouse(data, target), throttled

    def _history(self, marker: str, warehouse_id: str, since_ms: int) -> Plan[list[dict[str, Any]]]:
        params = {
            "filter_by.warehouse_ids": warehouse_id,
            "filter_by.query_start_time_range.start_time_ms": since_ms,
            "max_results": HISTORY_PAGE,
        }
        found: list[dict[str, Any]] = []
        token = None
        for _ in range(MAX_PAGES):
            answer = yield from self._data(QUERY_HISTORY, params={**params, "page_token": token})
            found += [q for q in answer.get("res") or [] if marker in str(q.get("query_text", ""))]
            token = answer.get("next_page_token")
            if not token or not answer.get("has_next_page", True):
                break
        return sorted(found, key=lambda q: q.get("query_start_time_ms", 0), reverse=True)

    def _rows(self, statement: Statement, limit: int | None) -> Plan[list[list[Any]]]:
        rows: list[list[Any]] = []
        chunk = statement.first_chunk
        for _ in range(MAX_PAGES * 10):
            if chunk.get("external_links"):
                for link in chunk["external_links"]:
                    rows += yield from patiently(functools.partial(_fetch_link, link["external_link"]))
                chunk = chunk["external_links"][-1]
            else:
                rows += chunk.get("data_array") or []
            index = chunk.get("next_chunk_index")
            if index is None or (limit is not None and len(rows) >= limit):
                break
            endpoint = statement_endpoint(statement.statement_id, f"/result/chunks/{int(index)}")
            chunk = yield from patiently(functools.partial(self._data, endpoint))
        return rows[:limit] if limit is not None else rows


def _fetch_link(url: str) -> Plan[list[list[Any]]]:
    """GET one external link with no Authorization header: a JSON array of rows."""
    request = Request("GET", url, "an external result link")
    reply = yield request
    label = url.split("?", 1)[0]
    if isinstance(reply, NoReply):
        raise DatabricksApiError(method="GET", endpoint=label, status_code=None, message=reply.detail, attempts=1)
    if reply.status != 200:
        status, message = reply.status, reply.content[:200].decode("utf-8", "replace")
        error = DatabricksApiError(method="GET", endpoint=label, status_code=status, message=message)
        raise error
    rows = json.loads(reply.content)
    if not isinstance(rows, list):
        raise DatabricksApiError(method="GET", endpoint=label, status_code=200, message="not a JSON array of rows")
    return rows
