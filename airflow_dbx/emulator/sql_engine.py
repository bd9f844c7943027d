"""Databricks SQL run for real: translated by sqlglot, executed by an embedded DuckDB.

Needs the ``emulator`` extra (``pip install 'airflow-dbx[emulator]'``); without it the
emulator serves everything else and answers SQL statements with a clear error.

Mapping: Databricks' ``catalog.schema.table`` becomes DuckDB's ``"catalog__schema".table``
(lower case), so every catalog and schema lives in one DuckDB database per emulator. A
catalog's ``default`` schema exists as soon as a statement names that catalog. Named
parameter markers (``:name``) are replaced in the syntax tree by typed literals (a value
never becomes SQL text). Results come back typed as the Statement Execution API types them
(``type_name``, ``type_text``) with every value a string, as in ``JSON_ARRAY``.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

DEFAULT_CATALOG = "main"
DEFAULT_SCHEMA = "default"
MISSING_EXTRA = (
    "The emulator runs SQL with sqlglot and DuckDB, which are not installed: "
    "pip install 'airflow-dbx[emulator]'"
)

# DuckDB type (without parameters) -> (Databricks type_name, type_text)
_TYPES = {
    "BOOLEAN": ("BOOLEAN", "BOOLEAN"),
    "TINYINT": ("BYTE", "TINYINT"),
    "SMALLINT": ("SHORT", "SMALLINT"),
    "INTEGER": ("INT", "INT"),
    "BIGINT": ("LONG", "BIGINT"),
    "HUGEINT": ("LONG", "BIGINT"),  # DuckDB widens SUM(BIGINT); Databricks keeps BIGINT
    "UTINYINT": ("SHORT", "SMALLINT"),
    "USMALLINT": ("INT", "INT"),
    "UINTEGER": ("LONG", "BIGINT"),
    "UBIGINT": ("DECIMAL", "DECIMAL(20,0)"),
    "FLOAT": ("FLOAT", "FLOAT"),
    "DOUBLE": ("DOUBLE", "DOUBLE"),
    "VARCHAR": ("STRING", "STRING"),
    "UUID": ("STRING", "STRING"),
    "BLOB": ("BINARY", "BINARY"),
    "DATE": ("DATE", "DATE"),
    "TIMESTAMP": ("TIMESTAMP_NTZ", "TIMESTAMP_NTZ"),
    "TIMESTAMP WITH TIME ZONE": ("TIMESTAMP", "TIMESTAMP"),
    "INTERVAL": ("INTERVAL", "INTERVAL"),
    "NULL": ("NULL", "VOID"),
    '"NULL"': ("NULL", "VOID"),
}
_DECIMAL = re.compile(r"^DECIMAL\((\d+),\s*(\d+)\)$")


class SqlError(Exception):
    """A statement that failed as Databricks would fail it: ``error_code`` and a message with its condition."""

    def __init__(self, condition: str, message: str, sql_state: str, error_code: str = "BAD_REQUEST") -> None:
        super().__init__(f"[{condition}] {message} SQLSTATE: {sql_state}")
        self.error_code = error_code


@dataclass(frozen=True)
class Column:
    name: str
    type_name: str
    type_text: str
    precision: int | None = None
    scale: int | None = None

    def manifest(self, position: int) -> dict[str, Any]:
        column: dict[str, Any] = {
            "name": self.name, "position": position, "type_name": self.type_name, "type_text": self.type_text,
        }
        if self.precision is not None:
            column["type_precision"], column["type_scale"] = self.precision, self.scale
        return column


@dataclass(frozen=True)
class Result:
    columns: list[Column]
    rows: list[list[str | None]]


def available() -> bool:
    try:
        import duckdb  # noqa: F401
        import sqlglot  # noqa: F401
    except ImportError:
        return False
    return True


class Database:
    """One DuckDB database (in memory) for the emulator's whole workspace."""

    def __init__(self, storage_roots: dict[str, str]) -> None:
        import duckdb

        self.storage_roots = storage_roots
        self.loaded: dict[str, set[str]] = {}  # files COPY INTO loaded, per table
        self._duckdb = duckdb
        self._connection = duckdb.connect(":memory:")
        self._lock = threading.Lock()

    def close(self) -> None:
        self._connection.close()

    def execute(
        self, statement: str, parameters: list[dict[str, Any]], catalog: str | None, schema: str | None
    ) -> Result:
        """Run one Databricks SQL statement; a :class:`SqlError` when it fails."""
        from airflow_dbx.emulator import sql_translate

        catalog = (catalog or DEFAULT_CATALOG).lower()
        schema = (schema or DEFAULT_SCHEMA).lower()
        tree = sql_translate.parse_one(statement)
        plan = sql_translate.translate(
            tree, parameters, catalog, schema, roots=self.storage_roots, loaded=self.loaded
        )
        with self._lock:
            cursor = self._connection.cursor()
            try:
                cursor.execute(f'CREATE SCHEMA IF NOT EXISTS "{sql_translate.duck_schema(catalog, DEFAULT_SCHEMA)}"')
                for before in plan.before:
                    cursor.execute(before)
                cursor.execute(plan.sql)
                described = cursor.description or []
                rows = cursor.fetchall() if described else []
                self.loaded.setdefault(plan.target, set()).update(plan.loads)
            except self._duckdb.Error as exc:
                raise _sql_error(exc) from None
            finally:
                cursor.close()
        if plan.kind == "dml":
            count = str(rows[0][0]) if rows else "0"
            names = ("num_affected_rows", "num_inserted_rows") if plan.inserts else ("num_affected_rows",)
            return Result([Column(name, "LONG", "BIGINT") for name in names], [[count] * len(names)])
        if plan.kind == "ddl":
            return Result([], [])
        return Result([_column(d[0], str(d[1])) for d in described], [[_text(v) for v in row] for row in rows])


def _column(name: str, duck_type: str) -> Column:
    if match := _DECIMAL.match(duck_type):
        precision, scale = int(match.group(1)), int(match.group(2))
        return Column(name, "DECIMAL", f"DECIMAL({precision},{scale})", precision, scale)
    if duck_type.endswith("[]"):
        inner = _column(name, duck_type[:-2])
        return Column(name, "ARRAY", f"ARRAY<{inner.type_text}>")
    if duck_type.startswith("STRUCT"):
        return Column(name, "STRUCT", "STRUCT")
    if duck_type.startswith("MAP"):
        return Column(name, "MAP", "MAP")
    type_name, type_text = _TYPES.get(duck_type, ("STRING", "STRING"))
    return Column(name, type_name, type_text)


def _text(value: Any) -> str | None:
    """A value as JSON_ARRAY carries it: a string (nested values as JSON), or null."""
    if value is None:
        return None
    for kind, render in _RENDER:
        if isinstance(value, kind):
            return render(value)
    return str(value)


def _timestamp(value: datetime.datetime) -> str:
    if value.tzinfo is not None:
        utc = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return f"{utc.isoformat(timespec='milliseconds')}Z"
    return str(value.isoformat(timespec="milliseconds"))


# In order: bool before int-like values, datetime before date.
_RENDER: tuple[tuple[type | tuple[type, ...], Callable[[Any], str]], ...] = (
    (bool, lambda value: "true" if value else "false"),
    (datetime.datetime, _timestamp),
    ((datetime.date, datetime.time), lambda value: value.isoformat()),
    (bytes, lambda value: base64.b64encode(value).decode()),
    ((list, tuple, dict), lambda value: json.dumps(value, default=str, separators=(",", ":"))),
    (decimal.Decimal, lambda value: format(value, "f")),
)


_ERRORS = (
    # (DuckDB message pattern, Databricks error condition, SQLSTATE)
    (re.compile(r"does not exist because schema (\S+) does not exist"), "SCHEMA_NOT_FOUND", "42704"),
    (re.compile(r"Schema with name (\S+) does not exist"), "SCHEMA_NOT_FOUND", "42704"),
    (re.compile(r"Table with name (\S+) does not exist"), "TABLE_OR_VIEW_NOT_FOUND", "42P01"),
    (re.compile(r"Table with name (\S+) already exists"), "TABLE_OR_VIEW_ALREADY_EXISTS", "42P07"),
    (re.compile(r"Schema with name (\S+) already exists"), "SCHEMA_ALREADY_EXISTS", "42P06"),
    (re.compile(r"Referenced column (\S+) not found"), "UNRESOLVED_COLUMN.WITHOUT_SUGGESTION", "42703"),
    (re.compile(r"Could not convert"), "CAST_INVALID_INPUT", "22018"),
    (re.compile(r"Division by zero", re.IGNORECASE), "DIVIDE_BY_ZERO", "22012"),
    (re.compile(r"Parser Error"), "PARSE_SYNTAX_ERROR", "42601"),
)


def _sql_error(exc: Exception) -> SqlError:
    text = str(exc).split("\n", 1)[0]
    for pattern, condition, sql_state in _ERRORS:
        if pattern.search(text):
            return SqlError(condition, text, sql_state)
    return SqlError("INTERNAL_ERROR", text, "XX000")
