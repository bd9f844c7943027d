"""The SQL Statement Execution API (2.0) of the emulator: statements that queue, run and keep results.

Life cycle: a statement is PENDING while its warehouse starts (a STOPPED warehouse is started
by the statement), RUNNING for its duration, then SUCCEEDED or FAILED; a cancel before the
end makes it CANCELED and it never runs. The SQL runs (``sql_engine``) at the end of the
RUNNING phase, statements one at a time in the order they were sent. States advance on every
SQL API request, from the clock.

``duration``: RUNNING lasts ``query_tags`` ``emulator_duration`` seconds (default 0.2),
times ``time_scale``, like every wait of the emulator, including ``wait_timeout``.

Results are cut into chunks of ``chunk_rows`` rows (default 10,000); with EXTERNAL_LINKS each
chunk is served at a link outside the API that must be fetched without the workspace's
credentials, as a presigned cloud URL must, for 15 minutes. ``storage_roots`` maps cloud
URI prefixes (``s3://bucket/path``) to local folders, for ``COPY INTO``.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_dbx.emulator import sql_engine
from airflow_dbx.emulator.errors import ApiError, invalid
from airflow_dbx.emulator.sql_warehouses import Warehouses

if TYPE_CHECKING:
    from collections.abc import Callable

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELED", "CLOSED"})
LINK_LIFETIME = 15 * 60.0
EXTERNAL_PREFIX = "/__external__/sql-results/"
DISPOSITIONS = ("INLINE", "EXTERNAL_LINKS")
FORMATS = ("JSON_ARRAY", "ARROW_STREAM", "CSV")
DEFAULT_DURATION = 0.2
_HISTORY_STATUS = {"PENDING": "QUEUED", "SUCCEEDED": "FINISHED", "CLOSED": "FINISHED"}


@dataclass
class Statement:
    """One statement as the emulator keeps it; ``executions`` counts how often its SQL really ran."""

    statement_id: str
    warehouse_id: str
    statement: str
    user: str
    submitted: float
    catalog: str | None = None
    schema: str | None = None
    parameters: list[dict[str, Any]] = field(default_factory=list)
    disposition: str = "INLINE"
    format: str = "JSON_ARRAY"
    row_limit: int | None = None
    query_tags: dict[str, str | None] = field(default_factory=dict)
    duration: float = DEFAULT_DURATION
    state: str = "PENDING"
    run_at: float | None = None
    error: dict[str, str] | None = None
    result: sql_engine.Result | None = None
    truncated: bool = False
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    executions: int = 0
    cancels: int = 0


class SqlService:
    """Warehouses, statements and the DuckDB database of one emulator; callers hold ``lock``."""

    def __init__(self, clock: Callable[[], float], time_scale: float, lock: Any) -> None:
        self.clock = clock
        self.time_scale = time_scale
        self.lock = lock
        self.chunk_rows = 10_000
        self.storage_roots: dict[str, str] = {}
        self.warehouses = Warehouses(clock, time_scale)
        self._database: sql_engine.Database | None = None
        self.statements: dict[str, Statement] = {}

    def reset(self) -> None:
        self.warehouses.reset()
        self.statements = {}
        if self._database is not None:
            self._database.close()
            self._database = None

    @property
    def database(self) -> sql_engine.Database:
        if self._database is None:
            self._database = sql_engine.Database(self.storage_roots)
        return self._database

    # ------------------------------------------------------------------ statements

    def submit(self, body: dict[str, Any], user: str) -> Statement:
        """A new statement from an execute request's body, checked as the API checks it."""
        if not sql_engine.available():
            raise ApiError(501, "NOT_IMPLEMENTED", sql_engine.MISSING_EXTRA)
        text = body.get("statement")
        if not isinstance(text, str) or not text.strip():
            raise invalid("statement", "a non-empty SQL statement is required")
        warehouse_id = body.get("warehouse_id")
        if not isinstance(warehouse_id, str) or not warehouse_id:
            raise invalid("warehouse_id", "the id of a SQL warehouse is required")
        warehouse = self.warehouses.get(warehouse_id)
        disposition = _choice(body, "disposition", DISPOSITIONS)
        result_format = _choice(body, "format", FORMATS)
        if disposition == "INLINE" and result_format != "JSON_ARRAY":
            raise invalid("format", f"{result_format} needs the EXTERNAL_LINKS disposition; INLINE is JSON_ARRAY only")
        if result_format == "ARROW_STREAM":
            raise ApiError(501, "NOT_IMPLEMENTED", "The emulator serves JSON_ARRAY and CSV results, not ARROW_STREAM.")
        tags = _query_tags(body.get("query_tags"))
        statement = Statement(
            statement_id=_statement_id(),
            warehouse_id=warehouse_id,
            statement=text,
            user=user,
            submitted=self.clock(),
            catalog=_optional_str(body, "catalog"),
            schema=_optional_str(body, "schema"),
            parameters=_parameters(body.get("parameters")),
            disposition=disposition,
            format=result_format,
            row_limit=_row_limit(body.get("row_limit")),
            query_tags=tags,
            duration=_duration(tags.get("emulator_duration")) * self.time_scale,
        )
        self.warehouses.ensure_started(warehouse)
        self.statements[statement.statement_id] = statement
        self.advance()
        return statement

    def get(self, statement_id: str) -> Statement:
        self.advance()
        statement = self.statements.get(statement_id)
        if statement is None:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Statement {statement_id} does not exist.")
        return statement

    def cancel(self, statement_id: str) -> None:
        statement = self.get(statement_id)
        if statement.state not in TERMINAL:
            statement.state = "CANCELED"
            statement.cancels += 1

    def advance(self) -> None:
        """Move every statement on as far as the clock says, in the order they were sent."""
        now = self.clock()
        for statement in self.statements.values():
            if statement.state == "PENDING":
                warehouse = self.warehouses.items.get(statement.warehouse_id)
                ready = self.warehouses.ready_at(warehouse, now) if warehouse else None
                if ready is None:
                    self._fail(statement, "RESOURCE_DOES_NOT_EXIST", "Its warehouse stopped or was deleted.")
                    continue
                if ready > now:
                    continue
                statement.state, statement.run_at = "RUNNING", max(ready, statement.submitted) + statement.duration
            if statement.state == "RUNNING" and statement.run_at is not None and now >= statement.run_at:
                self._run(statement)

    def _run(self, statement: Statement) -> None:
        statement.executions += 1
        try:
            result = self.database.execute(
                statement.statement, statement.parameters, statement.catalog, statement.schema
            )
        except sql_engine.SqlError as exc:
            self._fail(statement, exc.error_code, str(exc))
            return
        if statement.row_limit is not None and len(result.rows) > statement.row_limit:
            result = sql_engine.Result(result.columns, result.rows[: statement.row_limit])
            statement.truncated = True
        statement.result = result
        statement.state = "SUCCEEDED"

    def _fail(self, statement: Statement, error_code: str, message: str) -> None:
        statement.state = "FAILED"
        statement.error = {"error_code": error_code, "message": message}

    def history(self, query: dict[str, str]) -> list[dict[str, Any]]:
        """Query history entries (no paging), filtered by ``filter_by.warehouse_ids``,
        ``filter_by.statement_ids``, ``filter_by.statuses`` and start time."""
        self.advance()

        def listed(name: str) -> set[str]:
            return {value for value in query.get(f"filter_by.{name}", "").split(",") if value}

        warehouses, ids, statuses = listed("warehouse_ids"), listed("statement_ids"), listed("statuses")
        since = float(query.get("filter_by.query_start_time_range.start_time_ms") or 0) / 1000
        return [
            {
                "query_id": s.statement_id,
                "status": _HISTORY_STATUS.get(s.state, s.state),
                "query_text": s.statement,
                "warehouse_id": s.warehouse_id,
                "user_name": s.user,
                "query_start_time_ms": int(s.submitted * 1000),
            }
            for s in (self.statements.values() if not ids else
                      [self.statements[i] for i in sorted(ids) if i in self.statements])
            if (not warehouses or s.warehouse_id in warehouses) and s.submitted >= since
            and (not statuses or _HISTORY_STATUS.get(s.state, s.state) in statuses)
        ]

    # ------------------------------------------------------------------ answers

    def view(self, statement: Statement, origin: str) -> dict[str, Any]:
        """The statement as execute and get answer it."""
        status: dict[str, Any] = {"state": statement.state}
        if statement.error:
            status["error"] = dict(statement.error)
        view: dict[str, Any] = {"statement_id": statement.statement_id, "status": status}
        if statement.state == "SUCCEEDED" and statement.result is not None:
            view["manifest"] = self._manifest(statement)
            view["result"] = self.chunk(statement, 0, origin)
        return view

    def _manifest(self, statement: Statement) -> dict[str, Any]:
        assert statement.result is not None
        columns = statement.result.columns
        chunks = [
            {"chunk_index": index, "row_offset": offset, "row_count": len(rows), "byte_count": _size(rows)}
            for index, (offset, rows) in enumerate(self._chunks(statement))
        ]
        return {
            "format": statement.format,
            "schema": {"column_count": len(columns), "columns": [c.manifest(i) for i, c in enumerate(columns)]},
            "total_chunk_count": len(chunks),
            "chunks": chunks,
            "total_row_count": len(statement.result.rows),
            "total_byte_count": sum(c["byte_count"] for c in chunks),
            "truncated": statement.truncated,
        }

    def _chunks(self, statement: Statement) -> list[tuple[int, list[list[str | None]]]]:
        rows = statement.result.rows if statement.result else []
        size = max(self.chunk_rows, 1)
        return [(offset, rows[offset : offset + size]) for offset in range(0, len(rows), size)] or [(0, [])]

    def chunk(self, statement: Statement, index: int, origin: str) -> dict[str, Any]:
        """Chunk ``index`` of a succeeded statement's result, inline or as an external link."""
        if statement.state != "SUCCEEDED":
            message = f"Statement {statement.statement_id} is {statement.state}; it has no result."
            raise ApiError(400, "INVALID_STATE", message)
        chunks = self._chunks(statement)
        if not 0 <= index < len(chunks):
            raise invalid("chunk_index", f"the result has chunks 0 to {len(chunks) - 1}, not {index}")
        offset, rows = chunks[index]
        piece: dict[str, Any] = {"chunk_index": index, "row_offset": offset, "row_count": len(rows)}
        if index + 1 < len(chunks):
            piece["next_chunk_index"] = index + 1
            internal = f"/api/2.0/sql/statements/{statement.statement_id}/result/chunks/{index + 1}"
            piece["next_chunk_internal_link"] = internal
        if statement.disposition == "INLINE":
            return {**piece, "data_array": rows} if rows else piece
        expiration = self.clock() + LINK_LIFETIME
        link = {
            **piece,
            "byte_count": _size(rows),
            "external_link": f"{origin}{EXTERNAL_PREFIX}{statement.secret}/{index}?expires={int(expiration)}",
            "expiration": _iso(expiration),
        }
        return {"external_links": [link]}

    def external(self, secret: str, index: int, expires: float) -> tuple[bytes, str]:
        """The content behind an external link, and its content type."""
        self.advance()
        statement = next((s for s in self.statements.values() if s.secret == secret), None)
        if statement is None or statement.state != "SUCCEEDED":
            raise ApiError(404, "NoSuchKey", "The specified key does not exist.")
        if self.clock() > expires:
            raise ApiError(403, "AccessDenied", "Request has expired.")
        chunks = self._chunks(statement)
        if not 0 <= index < len(chunks):
            raise ApiError(404, "NoSuchKey", "The specified key does not exist.")
        rows = chunks[index][1]
        if statement.format == "CSV":
            out = io.StringIO()
            csv.writer(out).writerows(rows)
            return out.getvalue().encode(), "text/csv"
        return json.dumps(rows).encode(), "application/json"


def _statement_id() -> str:
    """An id shaped like Databricks' (a UUID whose first group starts 01ef)."""
    u = uuid.uuid4().hex
    return f"01ef{u[:4]}-{u[4:8]}-{u[8:12]}-{u[12:16]}-{u[16:28]}"


def _iso(epoch: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).isoformat(timespec="milliseconds")


def _size(rows: list[list[str | None]]) -> int:
    return len(json.dumps(rows))


def _choice(body: dict[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    value = body.get(key, allowed[0])
    if value not in allowed:
        raise invalid(key, f"must be one of {', '.join(allowed)}, got {value!r}")
    return str(value)


def _optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise invalid(key, f"must be a string, got {type(value).__name__}")
    return value or None


def _parameters(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid("parameters", "must be a list of {name, value, type} objects")
    names: set[str] = set()
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise invalid("parameters", f"each parameter needs a name, got {item!r}")
        if item["name"] in names:
            raise invalid("parameters", f"the parameter {item['name']!r} is given twice")
        if item.get("value") is not None and not isinstance(item["value"], str):
            raise invalid("parameters", f"the value of {item['name']!r} must be a string")
        names.add(item["name"])
    return value


def _row_limit(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise invalid("row_limit", f"must be a non-negative integer, got {value!r}")
    return value


def _query_tags(value: Any) -> dict[str, str | None]:
    if value is None:
        return {}
    if not isinstance(value, list) or not all(isinstance(t, dict) and isinstance(t.get("key"), str) for t in value):
        raise invalid("query_tags", "must be a list of {key, value} objects")
    return {t["key"]: t.get("value") for t in value}


def _duration(value: str | None) -> float:
    if value is None:
        return DEFAULT_DURATION
    try:
        return max(float(value), 0.0)
    except ValueError:
        raise invalid("query_tags", f"emulator_duration must be a number of seconds, got {value!r}") from None
