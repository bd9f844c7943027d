"""``DatabricksSqlOperator`` (a script of statements) and ``DatabricksCopyIntoOperator``, on the
Statement Execution API with the official provider's argument names; no SQL driver."""

from __future__ import annotations

import csv
import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_dbx import sql_models
from airflow_dbx.errors import PayloadError
from airflow_dbx.payloads import check_positive, is_literal
from airflow_dbx.sql_operators import WarehouseTask, run_sql

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from airflow.sdk import Context

__all__ = ["DatabricksCopyIntoOperator", "DatabricksSqlOperator", "copy_into_sql"]

log = logging.getLogger("airflow_dbx.operators")

OUTPUT_FORMATS = ("csv", "json", "jsonl")
FILE_FORMATS = ("CSV", "JSON", "PARQUET", "AVRO", "ORC", "TEXT", "BINARYFILE")
COPY_CLAUSES = (
    "files", "pattern", "expression_list", "credential", "storage_credential", "encryption", "format_options",
    "force_copy", "copy_options", "validate",
)
_OPTION_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_.]*$")


class _WarehouseTask(WarehouseTask):
    """A warehouse-bound operator: ``timeout`` bounds each statement's wait (it is then cancelled)."""

    def __init__(self, *, timeout: float = 3600, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_positive("timeout", timeout)
        self.timeout = timeout


class DatabricksSqlOperator(_WarehouseTask):
    """Run SQL statements in order on a SQL warehouse, over REST (no databricks-sql-connector).

    ``sql`` is one string (a ``.sql`` file too), cut at its semicolons, or a list of
    statements. The warehouse is ``warehouse_id``, the one in ``http_path``, or the one named
    ``sql_endpoint_name``. The last statement's rows are returned to XCom as a list of dicts
    (at most ``max_xcom_rows``); with ``return_last=False``, one such list per statement.
    ``output_path`` receives every row of the last statement as csv (with ``csv_params``),
    json or jsonl.
    """

    template_fields: Sequence[str] = (
        "sql", "parameters", "warehouse_id", "http_path", "sql_endpoint_name", "catalog", "schema", "output_path",
        "databricks_conn_id",
    )
    template_ext: Sequence[str] = (".sql",)
    template_fields_renderers: ClassVar[dict[str, str]] = {"sql": "sql", "parameters": "json"}

    def __init__(
        self,
        *,
        sql: str | list[str],
        parameters: list[dict[str, Any]] | dict[str, Any] | None = None,
        output_path: str | None = None,
        output_format: str = "csv",
        csv_params: dict[str, Any] | None = None,
        return_last: bool = True,
        max_xcom_rows: int = 100,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.sql = sql
        self.parameters = parameters
        self.output_path = output_path
        if output_format.lower() not in OUTPUT_FORMATS:
            raise PayloadError("output_format", f"must be one of {', '.join(OUTPUT_FORMATS)}, got {output_format!r}")
        self.output_format = output_format.lower()
        self.csv_params = csv_params or {}
        self.return_last = return_last
        self.max_xcom_rows = sql_models.check_row_bound(max_xcom_rows, "max_xcom_rows")
        if is_literal(sql) and not (isinstance(sql, str) and sql.endswith(tuple(self.template_ext))):
            self.statements()
        if is_literal(parameters):
            sql_models.normalise_parameters(parameters)

    def statements(self) -> list[str]:
        pieces = sql_models.split_statements(self.sql) if isinstance(self.sql, str) else list(self.sql or [])
        if not pieces:
            raise PayloadError("sql", f"has no statement to run: {self.sql!r}")
        return [sql_models.check_statement(piece, "sql") for piece in pieces]

    def lineage_query(self) -> str | None:
        return ";\n".join(self.statements())

    def execute(self, context: Context) -> Any:
        statements = self.statements()
        results = []
        for number, statement in enumerate(statements, 1):
            last = number == len(statements)
            limit = None if last and self.output_path else self.max_xcom_rows
            log.info("Statement %s of %s", number, len(statements))
            results.append(run_sql(self, context, statement, self.parameters, limit, once_as=(number, statement)))
        if self.output_path:
            self._write(results[-1])
            results[-1] = results[-1][: self.max_xcom_rows]
        if not self.do_xcom_push:
            return None
        return results[-1] if self.return_last else results

    def _write(self, rows: list[dict[str, Any]]) -> None:
        path = Path(self.output_path or "")
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as out:
            if self.output_format == "csv":
                fields = list(rows[0]) if rows else []
                writer = csv.DictWriter(out, fieldnames=fields, **self.csv_params)
                writer.writeheader()
                writer.writerows(rows)
            elif self.output_format == "json":
                json.dump(rows, out)
            else:
                out.writelines(json.dumps(row) + "\n" for row in rows)
        log.info("Wrote %s rows to %s", len(rows), path)


def _literal(value: Any) -> str:
    """A Databricks SQL string literal: backslashes and quotes escaped."""
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _options(field_name: str, options: dict[str, Any] | None) -> str:
    if options is None:
        return ""
    if not isinstance(options, dict):
        raise PayloadError(field_name, f"must be a mapping of option names to values, got {options!r}")
    for key in options:
        if not isinstance(key, str) or not _OPTION_KEY.match(key):
            raise PayloadError(field_name, f"{key!r} is not an option name")
    return ", ".join(f"{_literal(k)} = {_literal(v)}" for k, v in options.items())


def copy_into_sql(table_name: str, file_location: str, file_format: str, clauses: Mapping[str, Any]) -> str:
    """The ``COPY INTO`` statement: the table's name checked and back-quoted, every value a
    quoted literal, option names checked; ``expression_list`` is SQL the DAG author writes.

    ``clauses`` holds the optional arguments of :class:`DatabricksCopyIntoOperator` by name.
    """
    files, pattern, validate = clauses.get("files"), clauses.get("pattern"), clauses.get("validate")
    expression_list, force_copy = clauses.get("expression_list"), clauses.get("force_copy")
    credential, storage_credential = clauses.get("credential"), clauses.get("storage_credential")
    encryption, format_options = clauses.get("encryption"), clauses.get("format_options")
    _check_copy(file_location, file_format, files, pattern, validate)
    location = _literal(file_location)
    source = f"(SELECT {expression_list} FROM {location})" if expression_list else location
    access = [
        f"CREDENTIAL {sql_models.quote_identifier(storage_credential)}" if storage_credential else "",
        f"CREDENTIAL ({_options('credential', credential)})" if credential and not storage_credential else "",
        f"ENCRYPTION ({_options('encryption', encryption)})" if encryption else "",
    ]
    copy = {**(clauses.get("copy_options") or {}), **({} if force_copy is None else {"force": force_copy})}
    parts = [
        f"COPY INTO {sql_models.quote_identifier(table_name)}",
        f"FROM {source}" + (f" WITH ({' '.join(a for a in access if a)})" if any(access) else ""),
        f"FILEFORMAT = {file_format.upper()}",
        ("VALIDATE ALL" if validate is True else f"VALIDATE {int(validate)} ROWS") if validate else "",
        ("FILES = (" + ", ".join(_literal(f) for f in files) + ")") if files else "",
        f"PATTERN = {_literal(pattern)}" if pattern else "",
        f"FORMAT_OPTIONS ({_options('format_options', format_options)})" if format_options else "",
        f"COPY_OPTIONS ({_options('copy_options', copy)})" if copy else "",
    ]
    return "\n".join(part for part in parts if part)


def _check_copy(file_location: Any, file_format: Any, files: Any, pattern: Any, validate: Any) -> None:
    if not isinstance(file_format, str) or file_format.upper() not in FILE_FORMATS:
        raise PayloadError("file_format", f"must be one of {', '.join(FILE_FORMATS)}, got {file_format!r}")
    if not isinstance(file_location, str) or not file_location.strip():
        raise PayloadError("file_location", f"must be a storage URI, got {file_location!r}")
    if files is not None and pattern is not None:
        raise PayloadError("files", "give files or pattern, not both")
    if files is not None and (not isinstance(files, list) or not all(isinstance(f, str) and f for f in files)):
        raise PayloadError("files", f"must be a list of file names, got {files!r}")
    if isinstance(validate, int) and not isinstance(validate, bool) and validate <= 0:
        raise PayloadError("validate", f"must be True or a positive number of rows, got {validate!r}")


class DatabricksCopyIntoOperator(_WarehouseTask):
    """Load files into a table with ``COPY INTO``, built safely (see :func:`copy_into_sql`) and
    run as one statement; returns its counts (``num_affected_rows``, ``num_inserted_rows``)."""

    table_name: str
    file_location: str
    file_format: str

    template_fields: Sequence[str] = (
        "table_name", "file_location", "files", "pattern", "expression_list", "format_options", "copy_options",
        "warehouse_id", "http_path", "sql_endpoint_name", "catalog", "schema", "databricks_conn_id",
    )

    def __init__(
        self,
        *,
        table_name: str,
        file_location: str,
        file_format: str,
        files: list[str] | None = None,
        pattern: str | None = None,
        expression_list: str | None = None,
        credential: dict[str, str] | None = None,
        storage_credential: str | None = None,
        encryption: dict[str, str] | None = None,
        format_options: dict[str, Any] | None = None,
        force_copy: bool | None = None,
        copy_options: dict[str, Any] | None = None,
        validate: bool | int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        sql_models.keep_arguments(self, locals())
        if all(is_literal(v) for v in (table_name, file_location, files, pattern, format_options, copy_options)):
            self.statement()

    def lineage_query(self) -> str | None:
        return self.statement()

    def lineage_known_datasets(self) -> tuple[list[str], list[str]]:
        # The OpenLineage SQL parser does not read COPY INTO: its source and target are known.
        return [self.file_location], [self.table_name]

    def statement(self) -> str:
        clauses = {name: getattr(self, name) for name in COPY_CLAUSES}
        table = sql_models.check_table_name(self.table_name)
        return copy_into_sql(table, self.file_location, self.file_format, clauses)

    def execute(self, context: Context) -> Any:
        statement = self.statement()
        rows = run_sql(self, context, statement, limit=1, once_as=(statement,))
        log.info("COPY INTO %s: %s", self.table_name, rows[0] if rows else "no result")
        return rows[0] if rows else {}
