"""``COPY INTO`` for the emulator: files under a cloud URI, mapped to a local folder, loaded into a table.

The emulator's ``storage_roots`` (``emu.sql.storage_roots["s3://bucket/landing"] = "/tmp/landing"``)
say where a cloud URI's files are. CSV, JSON (one object per line) and PARQUET files load;
``FILES`` and ``PATTERN`` choose among them; a file already loaded into the table is skipped
unless ``COPY_OPTIONS ('force' = 'true')``, as Databricks does; ``VALIDATE`` loads nothing.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

from sqlglot import exp

from airflow_dbx.emulator.sql_engine import SqlError

_READERS = {"CSV": "read_csv", "JSON": "read_json_auto", "PARQUET": "read_parquet"}


def copy_plan(
    tree: exp.Copy, target: str, key: str, roots: dict[str, str], loaded: dict[str, set[str]]
) -> tuple[str, list[str]]:
    """The DuckDB statement that loads the files, and the files it loads (to remember once it succeeded).

    ``target`` is the table as DuckDB names it (already mapped to its schema), ``key`` the
    table's name in ``loaded``.
    """
    params = {str(p.this).upper(): p for p in tree.args.get("params") or []}
    file_format = str(params["FILEFORMAT"].expression).upper() if "FILEFORMAT" in params else ""
    if file_format not in _READERS:
        message = f"The emulator cannot COPY INTO from {file_format or 'no'} files."
        raise SqlError("UNSUPPORTED_FEATURE", message, "0A000")
    source = tree.args["files"][0]
    select: exp.Select | None = source.this if isinstance(source, exp.Subquery) else None
    uri = select.args["from_"].this.name if select is not None else source.name
    folder = _local_folder(uri, roots)
    files = _chosen(folder, params)
    options = _options(params.get("FORMAT_OPTIONS"))
    force = _options(params.get("COPY_OPTIONS")).get("force", "false").lower() == "true"
    done = loaded.get(key, set())
    new = [str(f) for f in files if force or str(f) not in done]
    if "VALIDATE" in params or not new:
        return "SELECT 0", []
    reader = _reader(_READERS[file_format], new, options)
    columns = ", ".join(e.sql(dialect="duckdb") for e in select.expressions) if select is not None else "*"
    by_name = " BY NAME" if file_format != "CSV" or options.get("header", "false").lower() == "true" else ""
    return f"INSERT INTO {target}{by_name} SELECT {columns} FROM {reader}", new


def _local_folder(uri: str, roots: dict[str, str]) -> Path:
    for prefix in sorted(roots, key=len, reverse=True):
        if uri.rstrip("/") == prefix.rstrip("/") or uri.startswith(prefix.rstrip("/") + "/"):
            folder = Path(roots[prefix]) / uri[len(prefix.rstrip("/")) :].lstrip("/")
            if folder.exists():
                return folder
            break
    raise SqlError("PATH_NOT_FOUND", f"Path does not exist: {uri}.", "42K03")


def _chosen(folder: Path, params: dict[str, Any]) -> list[Path]:
    if folder.is_file():
        return [folder]
    candidates = sorted(p for p in folder.rglob("*") if p.is_file())
    if "FILES" in params:
        listed = params["FILES"].expression
        names = {lit.name for lit in (listed.expressions if isinstance(listed, exp.Tuple) else [listed.unnest()])}
        candidates = [p for p in candidates if p.relative_to(folder).as_posix() in names]
    if "PATTERN" in params:
        pattern = params["PATTERN"].expression.name
        candidates = [p for p in candidates if fnmatch.fnmatch(p.relative_to(folder).as_posix(), pattern)]
    return candidates


def _options(param: Any) -> dict[str, str]:
    if param is None:
        return {}
    return {
        prop.this.name.lower(): prop.args["value"].name
        for prop in param.expressions
        if isinstance(prop, exp.Property)
    }


def _reader(function: str, files: list[str], options: dict[str, str]) -> str:
    paths = exp.Array(expressions=[exp.Literal.string(f) for f in files]).sql(dialect="duckdb")
    if function != "read_csv":
        return f"{function}({paths})"
    header = "true" if options.get("header", "false").lower() == "true" else "false"
    delimiter = exp.Literal.string(options.get("sep") or options.get("delimiter") or ",").sql(dialect="duckdb")
    return f"read_csv({paths}, header = {header}, delim = {delimiter})"
