"""The SQL APIs' objects as the package reads them: endpoints, statements, warehouses; and the
checks of what a DAG gives them (statements, parameters, identifiers), written once for every
SQL operator and sensor. No I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_dbx.errors import DatabricksError, PayloadError
from airflow_dbx.models import Endpoint

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

EXECUTE_STATEMENT = Endpoint("POST", "sql/statements", "2.0")
LIST_WAREHOUSES = Endpoint("GET", "sql/warehouses", "2.0")
QUERY_HISTORY = Endpoint("GET", "sql/history/queries", "2.0")


def statement_endpoint(statement_id: str, action: str = "", method: str = "GET") -> Endpoint:
    return Endpoint(method, f"sql/statements/{statement_id}{action}", "2.0")


def warehouse_endpoint(warehouse_id: str, action: str = "", method: str = "GET") -> Endpoint:
    return Endpoint(method, f"sql/warehouses/{warehouse_id}{action}", "2.0")


_TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELED", "CLOSED"})
WAREHOUSE_STABLE = {"start": "RUNNING", "stop": "STOPPED"}
_IDENTIFIER = re.compile(r"^(?:`(?:[^`]|``)+`|[A-Za-z_][A-Za-z0-9_]*)$")
_HTTP_PATH = re.compile(r"/sql/[0-9.]+/warehouses/([0-9A-Za-z]+)/?$|/sql/protocolv1/o/\d+/([0-9A-Za-z-]+)$")


@dataclass(frozen=True)
class StatementState:
    """Where a statement is; a state added to the API later counts as still running."""

    state: str
    error_code: str | None = None
    message: str = ""

    @property
    def outcome(self) -> str:
        return self.state

    @property
    def is_terminal(self) -> bool:
        return self.state in _TERMINAL

    @property
    def is_successful(self) -> bool:
        return self.state == "SUCCEEDED"


@dataclass(frozen=True)
class Statement:
    """A statement as execute and get answer it: its state, its columns and its first chunk."""

    statement_id: str
    state: StatementState
    columns: list[str] = field(default_factory=list)
    total_row_count: int = 0
    first_chunk: dict[str, Any] = field(default_factory=dict)
    truncated: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Statement:
        status = data.get("status") or {}
        error = status.get("error") or {}
        manifest = data.get("manifest") or {}
        columns = ((manifest.get("schema") or {}).get("columns")) or []
        return cls(
            statement_id=str(data.get("statement_id", "")),
            state=StatementState(
                str(status.get("state", "PENDING")), error.get("error_code"), error.get("message", "")
            ),
            columns=[str(c.get("name")) for c in sorted(columns, key=lambda c: c.get("position", 0))],
            total_row_count=int(manifest.get("total_row_count") or 0),
            first_chunk=dict(data.get("result") or {}),
            truncated=bool(manifest.get("truncated")),
        )

    def report(self) -> str:
        """What a failed statement says, for the task log and the exception."""
        code = f" ({self.state.error_code})" if self.state.error_code else ""
        return f"Databricks SQL statement {self.statement_id} ended {self.state.state}{code}: {self.state.message}"


class DatabricksSqlFailed(DatabricksError):
    """A statement ended without succeeding; the text says why."""

    def __init__(self, statement: Statement) -> None:
        self.statement_id = statement.statement_id
        self.state = statement.state.state
        self.error_code = statement.state.error_code
        super().__init__(statement.report())


def keep_arguments(obj: object, values: Mapping[str, Any]) -> None:
    """Store a constructor's arguments (its ``locals()``) as attributes of the same names."""
    for name, value in values.items():
        if name not in ("self", "kwargs", "__class__"):
            setattr(obj, name, value)


def as_dicts(columns: list[str], rows: Iterable[list[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(columns, row, strict=False)) for row in rows]


_MARKER = re.compile(r"^/\* (airflow-dbx-[0-9a-z-]+) \*/\n")


def marked(statement: str, marker: str) -> str:
    """``statement`` with ``marker`` in a leading comment, by which the query history finds it."""
    return f"/* {marker} */\n{statement}"


def marker_of(statement: str) -> str | None:
    match = _MARKER.match(statement)
    return match.group(1) if match else None


# ------------------------------------------------------------------ what DAGs give


def check_statement(value: Any, field_name: str = "statement") -> str:
    if not isinstance(value, str) or not value.strip():
        raise PayloadError(field_name, f"must be a non-empty SQL statement, got {value!r}")
    return value


def check_warehouse_id(value: Any, field_name: str = "warehouse_id") -> str:
    if not isinstance(value, str) or not value.strip():
        raise PayloadError(field_name, f"must be a warehouse id (a non-empty string), got {value!r}")
    return value


def check_row_bound(value: Any, field_name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PayloadError(field_name, f"must be an integer of at least 0, got {value!r}")
    return value


def normalise_parameters(value: Any, field_name: str = "parameters") -> list[dict[str, Any]]:
    """``[{"name", "value", "type"?}]`` with string values (None stays NULL), as the API takes them.

    A mapping ``{name: value}`` is accepted too. Duplicate names and items without a name are refused.
    """
    if value is None:
        return []
    items = [{"name": k, "value": v} for k, v in value.items()] if isinstance(value, dict) else value
    if not isinstance(items, (list, tuple)):
        raise PayloadError(field_name, f"must be a list of {{'name': ..., 'value': ...}} items, got {value!r}")
    seen: set[str] = set()
    result = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or "value" not in item:
            raise PayloadError(field_name, f"each parameter must be {{'name': ..., 'value': ...}}, got {item!r}")
        unknown = set(item) - {"name", "value", "type"}
        if unknown:
            raise PayloadError(field_name, f"parameter {item['name']!r} has unknown keys {sorted(unknown)}")
        if item["name"] in seen:
            raise PayloadError(field_name, f"the parameter name {item['name']!r} is given twice")
        seen.add(item["name"])
        raw = item["value"]
        text = None if raw is None else ("true" if raw is True else "false" if raw is False else str(raw))
        result.append({**item, "value": text})
    return result


def query_tag_list(tags: Mapping[str, str | None] | None) -> list[dict[str, Any]]:
    return [{"key": str(k), "value": None if v is None else str(v)} for k, v in (tags or {}).items()]


def check_table_name(value: Any, field_name: str = "table_name") -> str:
    """A table name of one to three identifiers (plain or back-quoted), returned as given."""
    if not isinstance(value, str) or not value:
        raise PayloadError(field_name, f"must be a table name, got {value!r}")
    parts = split_identifier(value)
    if not 1 <= len(parts) <= 3 or not all(_IDENTIFIER.match(p) for p in parts):
        expected = "[catalog.][schema.]table of plain or `quoted` identifiers"
        raise PayloadError(field_name, f"must be {expected}, got {value!r}")
    return value


def split_identifier(name: str) -> list[str]:
    """``a.`b.c`.d`` -> ``["a", "`b.c`", "d"]``: dots inside back quotes do not split."""
    parts, current, quoted = [], "", False
    for char in name:
        if char == "`":
            quoted = not quoted
        if char == "." and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def quote_identifier(name: str) -> str:
    """A checked table name with every part back-quoted (safe to put in SQL)."""
    quoted = []
    for part in split_identifier(check_table_name(name)):
        bare = part[1:-1].replace("``", "`") if part.startswith("`") else part
        quoted.append("`" + bare.replace("`", "``") + "`")
    return ".".join(quoted)


def warehouse_id_from_http_path(http_path: str) -> str:
    match = _HTTP_PATH.search(http_path or "")
    if match is None:
        raise PayloadError("http_path", f"is not a SQL warehouse path like /sql/1.0/warehouses/<id>: {http_path!r}")
    return match.group(1) or match.group(2)


def split_statements(sql: str) -> list[str]:
    """A script cut at its semicolons, except those inside quotes and comments; empty pieces dropped."""
    pieces, current, i, quote = [], [], 0, ""
    while i < len(sql):
        char, pair = sql[i], sql[i : i + 2]
        if quote:
            current.append(char)
            if char == "\\" and quote != "`" and i + 1 < len(sql):
                current.append(sql[i + 1])
                i += 1
            elif char == quote:
                quote = ""
        elif pair in ("--", "/*"):
            end = sql.find("\n" if pair == "--" else "*/", i + 2)
            end = len(sql) if end < 0 else end + (0 if pair == "--" else 2)
            current.append(sql[i:end])
            i = end - 1
        elif char in "'\"`":
            quote = char
            current.append(char)
        elif char == ";":
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    pieces.append("".join(current))
    return [p.strip() for p in pieces if _has_code(p)]


def _has_code(piece: str) -> bool:
    without_comments = re.sub(r"--[^\n]*|/\*.*?\*/", "", piece, flags=re.DOTALL)
    return bool(without_comments.strip())
