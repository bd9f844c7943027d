"""Databricks SQL to DuckDB SQL, on sqlglot's syntax tree (imported only with the ``emulator`` extra)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, ParseError

from airflow_dbx.emulator.sql_engine import SqlError

_DML = (exp.Insert, exp.Update, exp.Delete, exp.Merge)
_DDL = (exp.Create, exp.Drop, exp.Alter, exp.TruncateTable, exp.Use)
_SCHEMA_KINDS = ("SCHEMA", "DATABASE")


@dataclass
class Plan:
    """What to run on DuckDB: ``before`` statements, then ``sql``; ``kind`` is query, dml or ddl."""

    sql: str
    kind: str
    inserts: bool = False
    before: list[str] = field(default_factory=list)
    loads: list[str] = field(default_factory=list)  # files a COPY INTO loads
    target: str = ""


def duck_schema(catalog: str, schema: str) -> str:
    return f"{catalog.lower()}__{schema.lower()}"


def parse_one(statement: str) -> exp.Expression:
    """The one statement's tree; a Databricks-like error for none, several or a syntax error."""
    try:
        trees = [tree for tree in sqlglot.parse(statement, read="databricks") if tree is not None]
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        where = f" (line {first.get('line')}, pos {first.get('col')})" if first else ""
        detail = first.get("description") or str(exc).split("\n", 1)[0]
        raise SqlError("PARSE_SYNTAX_ERROR", f"Syntax error: {detail}{where}.", "42601") from None
    if not trees:
        raise SqlError("PARSE_EMPTY_STATEMENT", "Syntax error, unexpected empty statement.", "42617")
    if len(trees) > 1:
        raise SqlError(
            "INVALID_PARAMETER_VALUE", "Only one statement can be executed per request; got several.", "22023"
        )
    return cast("exp.Expression", trees[0])


def translate(
    tree: exp.Expression,
    parameters: list[dict[str, Any]],
    catalog: str,
    schema: str,
    *,
    roots: dict[str, str] | None = None,
    loaded: dict[str, set[str]] | None = None,
) -> Plan:
    """``tree`` as DuckDB SQL, with its tables mapped to DuckDB schemas and its parameters bound."""
    if isinstance(tree, exp.Use):
        return Plan("SELECT 1", "ddl")  # each statement is a session of its own: nothing to keep
    tree = _bind(tree, parameters)
    if isinstance(tree, exp.Copy):
        from airflow_dbx.emulator.sql_copy import copy_plan

        table = tree.this
        key = f"{_map_table(table, catalog, schema, set())}.{table.name.lower()}"
        sql, loads = copy_plan(tree, table.sql(dialect="duckdb"), key, roots or {}, {} if loaded is None else loaded)
        return Plan(sql, "dml", inserts=True, loads=loads, target=key)
    before: list[str] = []
    if isinstance(tree, (exp.Create, exp.Drop)) and str(tree.args.get("kind", "")).upper() in _SCHEMA_KINDS:
        _map_schema(tree, catalog)
    else:
        ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
        targets = {_map_table(table, catalog, schema, ctes) for table in list(tree.find_all(exp.Table))}
        # A catalog's default schema exists as soon as a statement names it.
        defaults = sorted(t for t in targets if t and t.endswith("__default"))
        before = [f'CREATE SCHEMA IF NOT EXISTS "{t}"' for t in defaults]
    kind = "dml" if isinstance(tree, _DML) else "ddl" if isinstance(tree, _DDL) else "query"
    sql = tree.sql(dialect="duckdb", unsupported_level=ErrorLevel.IGNORE)
    return Plan(sql, kind, inserts=isinstance(tree, exp.Insert), before=before)


def _map_schema(tree: exp.Expression, catalog: str) -> None:
    target = tree.this
    if isinstance(target, exp.Table):
        name = target.text("db") or target.name
        schema = duck_schema(target.text("catalog") or catalog, name)
        target.replace(exp.Table(db=exp.to_identifier(schema, quoted=True)))


def _map_table(table: exp.Table, catalog: str, schema: str, ctes: set[str]) -> str | None:
    """Point ``table`` at its DuckDB schema; that schema's name (None for a CTE or a table function)."""
    if not isinstance(table.this, exp.Identifier):
        return None
    if not table.db and table.name.lower() in ctes:
        return None
    target = duck_schema(table.text("catalog") or catalog, table.text("db") or schema)
    table.set("catalog", None)
    table.set("db", exp.to_identifier(target, quoted=True))
    return target


def _bind(tree: exp.Expression, parameters: list[dict[str, Any]]) -> exp.Expression:
    """Every ``:name`` marker replaced by its value as a literal, cast to its type (STRING by default)."""
    values = {str(p["name"]): p for p in parameters}

    def bind(node: exp.Expression) -> exp.Expression:
        if not isinstance(node, exp.Placeholder) or not node.name:
            return node
        parameter = values.get(node.name)
        if parameter is None:
            raise SqlError(
                "UNBOUND_SQL_PARAMETER", f"Found the unbound parameter: {node.name}. Please fix `args`.", "42P02"
            )
        value = parameter.get("value")
        literal: exp.Expression = exp.null() if value is None else exp.Literal.string(str(value))
        type_text = parameter.get("type")
        if not type_text:
            return literal
        try:
            data_type = exp.DataType.build(str(type_text), dialect="databricks")
        except (ParseError, ValueError):
            message = f"Unknown type {type_text!r} of parameter {node.name}."
            raise SqlError("INVALID_PARAMETER_VALUE", message, "22023") from None
        return exp.Cast(this=literal, to=data_type)

    return tree.transform(bind)
