"""OpenLineage facets and datasets of the operators (imported only when the OpenLineage provider calls)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attr
from airflow.providers.openlineage.extractors import OperatorLineage
from openlineage.client.event_v2 import Dataset
from openlineage.client.facet_v2 import RunFacet, external_query_run, sql_job

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow.sdk import Context

    from airflow_dbx._run_tasks import LineageMixin

PRODUCER = "https://pypi.org/project/airflow-dbx/"


@attr.define
class DatabricksRunFacet(RunFacet):
    """What ran on Databricks for the task: where, which job / run / statement, how it ended."""

    host: str = attr.field(default="")
    job_id: int | None = attr.field(default=None)
    run_id: int | None = attr.field(default=None)
    statement_id: str | None = attr.field(default=None)
    run_page_url: str | None = attr.field(default=None)
    state: str | None = attr.field(default=None)
    error: str | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return f"{PRODUCER}#DatabricksRunFacet"


def namespace_of(host_url: str) -> str:
    """The OpenLineage namespace of a workspace: ``databricks://host[:port]``."""
    return f"databricks://{urlsplit(host_url).netloc}"


def operator_lineage(task: LineageMixin) -> OperatorLineage:  # type: ignore[type-arg]
    """The facets and datasets of a task, from what it recorded while it ran."""
    facts = task.lineage_facts()
    namespace = namespace_of(task.lineage_host_url())
    run_facet = DatabricksRunFacet(host=namespace.removeprefix("databricks://"), **_known(facts))
    run_facets: dict[str, Any] = {"databricks_run": run_facet}
    external_id = facts.get("run_id", facts.get("statement_id"))
    if external_id is not None:
        run_facets["externalQuery"] = external_query_run.ExternalQueryRunFacet(
            externalQueryId=str(external_id), source=namespace
        )
    job_facets: dict[str, Any] = {}  # jobType is the listener's: the job is the Airflow task
    inputs: list[Dataset] = []
    outputs: list[Dataset] = []
    query = task.lineage_query()
    if query:
        job_facets["sql"] = sql_job.SQLJobFacet(query=query)
        inputs, outputs = sql_datasets(query, namespace, *task.lineage_default_names())
    locations, tables = task.lineage_known_datasets()
    inputs += [location_dataset(uri) for uri in locations]
    outputs += [Dataset(namespace=namespace, name=name) for name in qualified(tables, *task.lineage_default_names())]
    return OperatorLineage(inputs=inputs, outputs=outputs, run_facets=run_facets, job_facets=job_facets)


def _known(facts: Mapping[str, Any]) -> dict[str, Any]:
    fields = {field.name for field in attr.fields(DatabricksRunFacet)}
    return {key: value for key, value in facts.items() if key in fields}


def table_names(sql: str, catalog: str | None, schema: str | None) -> tuple[list[str], list[str]]:
    """The tables a statement reads and writes, as ``catalog.schema.table`` (lower case), by the
    OpenLineage SQL parser; an unqualified name takes the given default catalog and schema."""
    from airflow.providers.openlineage.sqlparser import SQLParser

    meta = SQLParser(dialect="databricks", default_schema=schema).parse(sql)
    if meta is None:
        return [], []

    def name(table: Any) -> str:
        parts = (table.database or catalog, table.schema or schema, table.name)
        return ".".join(part for part in parts if part).lower()

    return [name(t) for t in meta.in_tables], [name(t) for t in meta.out_tables]


def qualified(tables: list[str], catalog: str | None, schema: str | None) -> list[str]:
    """``catalog.schema.table`` names, lower case, with the defaults for the parts a name lacks."""
    names = []
    for table in tables:
        parts: list[str | None] = [part.strip("`") for part in table.split(".")]
        if len(parts) == 1:
            parts = [schema, *parts]
        if len(parts) == 2:
            parts = [catalog, *parts]
        names.append(".".join(part for part in parts if part).lower())
    return names


def location_dataset(uri: str) -> Dataset:
    """A storage location as OpenLineage names one: ``scheme://authority`` and the path."""
    parts = urlsplit(uri)
    return Dataset(namespace=f"{parts.scheme}://{parts.netloc}", name=parts.path.strip("/") or "/")


def sql_datasets(
    sql: str, namespace: str, catalog: str | None, schema: str | None
) -> tuple[list[Dataset], list[Dataset]]:
    reads, writes = table_names(sql, catalog, schema)
    return (
        [Dataset(namespace=namespace, name=name) for name in reads],
        [Dataset(namespace=namespace, name=name) for name in writes],
    )


def parent_job_properties(context: Context) -> dict[str, str]:
    """The Airflow task's OpenLineage identity as the Spark properties Databricks' listener reads."""
    from airflow.providers.openlineage.utils.spark import inject_parent_job_information_into_spark_properties

    return {str(k): str(v) for k, v in inject_parent_job_information_into_spark_properties({}, context).items()}
