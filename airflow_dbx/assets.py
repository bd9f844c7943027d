"""The ``databricks`` asset URI scheme: ``databricks://HOST/catalog/schema/table``.

Airflow calls :func:`sanitize_uri` for every asset of the scheme (refusing a bad one), the
OpenLineage provider calls :func:`convert_asset_to_openlineage`; :func:`create_asset` builds one.
The host is normalised as the hook normalises a connection's host, and everything is lower-cased,
as Unity Catalog names are, so one table has one URI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, urlsplit

if TYPE_CHECKING:
    from airflow.sdk import Asset

SCHEME = "databricks"
_FORM = "databricks://HOST/catalog/schema/table"


def _bad(uri: str, why: str) -> ValueError:
    return ValueError(f"asset URI {uri!r} is not a Databricks table: {why} (expected {_FORM})")


def table_netloc(host: str) -> str:
    """The ``host[:port]`` of a workspace, as the hook reads a connection's host (ValueError if bad)."""
    from airflow_dbx._http.settings import parse_host
    from airflow_dbx.errors import InvalidConnectionError

    try:
        return urlsplit(parse_host(host)).netloc
    except InvalidConnectionError as exc:
        raise ValueError(str(exc)) from None


def table_parts(uri: SplitResult) -> tuple[str, str, str, str]:
    """``(netloc, catalog, schema, table)`` of a ``databricks://`` URI, normalised, or ValueError."""
    text = uri.geturl()
    if "{{" in text or "{%" in text:
        raise _bad(text, "it holds a template, and asset URIs are not rendered")
    if uri.query or uri.fragment:
        raise _bad(text, "a query or fragment is not part of a table's name")
    if not uri.netloc:
        raise _bad(text, "it names no workspace host")
    names = uri.path.split("/")[1:]
    if len(names) != 3:
        raise _bad(text, f"it has {len(names)} name part(s) after the host, not catalog, schema and table")
    if not all(name.strip() for name in names):
        raise _bad(text, "a catalog, schema or table name is empty")
    catalog, schema, table = (name.strip().lower() for name in names)
    try:
        return table_netloc(uri.netloc), catalog, schema, table
    except ValueError as exc:
        raise _bad(text, str(exc)) from None


def sanitize_uri(uri: SplitResult) -> SplitResult:
    """Airflow's URI handler for the scheme: the normalised URI, or ValueError naming what is wrong."""
    netloc, catalog, schema, table = table_parts(uri)
    return SplitResult(SCHEME, netloc, f"/{catalog}/{schema}/{table}", "", "")


def table_uri(host: str, catalog: str, schema: str, table: str) -> str:
    """The asset URI of one table of a workspace."""
    return sanitize_uri(urlsplit(f"{SCHEME}://{table_netloc(host)}/{catalog}/{schema}/{table}")).geturl()


def create_asset(
    *, host: str, catalog: str, schema: str, table: str, port: int | None = None, extra: dict[str, Any] | None = None
) -> Asset:
    """An Airflow asset for a Unity Catalog table (the provider's asset factory)."""
    from airflow.sdk import Asset

    netloc = f"{host}:{port}" if port else host
    return Asset(uri=table_uri(netloc, catalog, schema, table), extra=extra)


def convert_asset_to_openlineage(asset: Asset, lineage_context: Any) -> Any:
    """The OpenLineage dataset of an asset: namespace ``databricks://HOST``, name ``catalog.schema.table``."""
    from openlineage.client.event_v2 import Dataset

    netloc, catalog, schema, table = table_parts(urlsplit(asset.uri))
    return Dataset(namespace=f"{SCHEME}://{netloc}", name=f"{catalog}.{schema}.{table}")


def alias_name(dag_id: str, task_id: str) -> str:
    """The asset alias through which a task's written tables become asset events."""
    return f"databricks_tables__{dag_id}__{task_id}"


def written_tables(sql: str, catalog: str | None, schema: str | None) -> list[tuple[str, str, str]]:
    """The ``(catalog, schema, table)`` names a statement writes; PayloadError for ``emit_assets``
    when the parser is missing or a written table's catalog or schema is unknown."""
    from airflow_dbx.errors import PayloadError

    try:
        from airflow_dbx._openlineage import table_names
    except ImportError:
        raise PayloadError(
            "emit_assets", "needs the OpenLineage SQL parser: install airflow-dbx[openlineage]"
        ) from None
    names = []
    for name in table_names(sql, catalog, schema)[1]:
        parts = name.split(".")
        if len(parts) != 3:
            raise PayloadError(
                "emit_assets",
                f"the statement writes {name!r}, which names no catalog or schema: "
                "qualify it as catalog.schema.table or set the operator's catalog and schema",
            )
        names.append((parts[0], parts[1], parts[2]))
    return names


def emit_table_events(context: Any, alias: str, host_url: str, tables: list[tuple[str, str, str]]) -> list[str]:
    """Record an asset event for each written table through the task's alias; the URIs."""
    from airflow.sdk import Asset, AssetAlias

    uris = [table_uri(host_url, *table) for table in tables]
    for uri in uris:
        context["outlet_events"][AssetAlias(alias)].add(Asset(uri))
    return uris
