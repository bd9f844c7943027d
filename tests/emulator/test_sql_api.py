"""The emulator's SQL Statement Execution and SQL Warehouses APIs, over real HTTP."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import requests

from airflow_dbx.emulator.sql_warehouses import DEFAULT_WAREHOUSE_ID

if TYPE_CHECKING:
    from airflow_dbx.emulator import Emulator

pytest.importorskip("duckdb")
pytest.importorskip("sqlglot")


class Client:
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.headers = {"Authorization": f"Bearer {emu.token}"}

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> requests.Response:
        return requests.request(method, f"{self.emu.url}/api/2.0/{path}", json=body, headers=self.headers, timeout=30)

    def execute(self, statement: str, **fields: Any) -> dict[str, Any]:
        fields.setdefault("warehouse_id", DEFAULT_WAREHOUSE_ID)
        answer = self.call("POST", "sql/statements", {"statement": statement, **fields})
        assert answer.status_code == 200, answer.text
        return answer.json()  # type: ignore[no-any-return]


@pytest.fixture
def client(emulator: Emulator) -> Client:
    return Client(emulator)


def test_statements_really_run_and_results_are_typed_strings(client: Client) -> None:
    assert client.execute("CREATE TABLE sales (id INT, region STRING, amount DECIMAL(10,2), day DATE)")["status"] == {
        "state": "SUCCEEDED"
    }
    inserted = client.execute("INSERT INTO sales VALUES (1, 'eu', 10.5, '2024-05-01'), (2, 'us', NULL, NULL)")
    assert inserted["result"]["data_array"] == [["2", "2"]]
    answer = client.execute(
        "SELECT id, region, amount, day FROM main.default.sales WHERE id >= :low ORDER BY id",
        parameters=[{"name": "low", "value": "1", "type": "INT"}],
    )
    columns = answer["manifest"]["schema"]["columns"]
    assert [(c["name"], c["type_name"]) for c in columns] == [
        ("id", "INT"), ("region", "STRING"), ("amount", "DECIMAL"), ("day", "DATE"),
    ]
    assert columns[2]["type_precision"] == 10 and columns[2]["type_scale"] == 2
    assert answer["result"]["data_array"] == [["1", "eu", "10.50", "2024-05-01"], ["2", "us", None, None]]


def test_parameter_values_never_become_sql(client: Client) -> None:
    client.execute("CREATE TABLE people (name STRING)")
    client.execute("INSERT INTO people VALUES (:name)", parameters=[{"name": "name", "value": "x'); DROP TABLE people; --"}])
    answer = client.execute("SELECT name FROM people")
    assert answer["result"]["data_array"] == [["x'); DROP TABLE people; --"]]


def test_catalogs_and_schemas_are_kept_apart(client: Client) -> None:
    client.execute("CREATE SCHEMA sales_cat.raw")
    client.execute("CREATE TABLE sales_cat.raw.t AS SELECT 1 AS a")
    client.execute("CREATE TABLE t AS SELECT 2 AS a")
    assert client.execute("SELECT a FROM t", catalog="sales_cat", schema="raw")["result"]["data_array"] == [["1"]]
    assert client.execute("SELECT a FROM t")["result"]["data_array"] == [["2"]]


@pytest.mark.parametrize(
    ("statement", "condition"),
    [
        ("SELECT * FROM missing_table", "TABLE_OR_VIEW_NOT_FOUND"),
        ("SELEC 1", "PARSE_SYNTAX_ERROR"),
        ("SELECT :nothing", "UNBOUND_SQL_PARAMETER"),
        ("SELECT 1; SELECT 2", "INVALID_PARAMETER_VALUE"),
    ],
)
def test_failures_carry_databricks_conditions(client: Client, statement: str, condition: str) -> None:
    status = client.execute(statement)["status"]
    assert status["state"] == "FAILED"
    assert status["error"]["error_code"] == "BAD_REQUEST"
    assert status["error"]["message"].startswith(f"[{condition}]")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"wait_timeout": "3s"}, "wait_timeout"),
        ({"on_wait_timeout": "LATER"}, "on_wait_timeout"),
        ({"disposition": "INLINE", "format": "CSV"}, "format"),
        ({"parameters": [{"value": "1"}]}, "parameters"),
        ({"row_limit": -1}, "row_limit"),
    ],
)
def test_requests_the_api_refuses(client: Client, fields: dict[str, Any], field: str) -> None:
    answer = client.call("POST", "sql/statements", {"statement": "SELECT 1", "warehouse_id": DEFAULT_WAREHOUSE_ID, **fields})
    assert answer.status_code == 400
    assert answer.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert field in answer.json()["message"]
    assert client.emu.sql.statements == {}


def test_inline_results_page_through_chunks(client: Client) -> None:
    client.emu.sql.chunk_rows = 3
    answer = client.execute("SELECT i FROM range(7) AS r(i) ORDER BY i")
    assert answer["manifest"]["total_chunk_count"] == 3
    rows, result = [], answer["result"]
    while True:
        rows += result.get("data_array", [])
        if "next_chunk_internal_link" not in result:
            break
        fetched = requests.get(client.emu.url + result["next_chunk_internal_link"], headers=client.headers, timeout=30)
        result = fetched.json()
    assert rows == [[str(i)] for i in range(7)]


def test_external_links_are_fetched_without_the_token(client: Client) -> None:
    client.emu.sql.chunk_rows = 2
    answer = client.execute("SELECT i FROM range(3) AS r(i) ORDER BY i", disposition="EXTERNAL_LINKS")
    link = answer["result"]["external_links"][0]
    assert "data_array" not in answer["result"]
    refused = requests.get(link["external_link"], headers=client.headers, timeout=30)
    assert refused.status_code == 400
    assert requests.get(link["external_link"], timeout=30).json() == [["0"], ["1"]]
    second = client.call("GET", link["next_chunk_internal_link"].split("/api/2.0/", 1)[1]).json()
    assert requests.get(second["external_links"][0]["external_link"], timeout=30).json() == [["2"]]


def test_a_statement_on_a_stopped_warehouse_starts_it(client: Client) -> None:
    assert client.call("POST", f"sql/warehouses/{DEFAULT_WAREHOUSE_ID}/stop").status_code == 200
    warehouse = client.emu.sql.warehouses.items[DEFAULT_WAREHOUSE_ID]
    started = client.execute("SELECT 42 AS answer", wait_timeout="0s")
    assert started["status"]["state"] == "PENDING"
    assert warehouse.starts == 1
    assert client.call("GET", f"sql/warehouses/{DEFAULT_WAREHOUSE_ID}").json()["state"] == "STARTING"
    statement_id = started["statement_id"]
    for _ in range(500):
        view = client.call("GET", f"sql/statements/{statement_id}").json()
        if view["status"]["state"] == "SUCCEEDED":
            break
        requests.get(client.emu.url, timeout=30)  # a pause without sleeping in the test
    assert view["result"]["data_array"] == [["42"]]
    assert [state for _, state in warehouse.events][-2:] == ["STARTING", "RUNNING"]


def test_cancel_stops_a_statement_before_it_runs(client: Client) -> None:
    client.execute("CREATE TABLE once (a INT)")
    started = client.execute(
        "INSERT INTO once VALUES (1)", wait_timeout="0s", query_tags=[{"key": "emulator_duration", "value": "600"}]
    )
    assert started["status"]["state"] in ("PENDING", "RUNNING")
    assert client.call("POST", f"sql/statements/{started['statement_id']}/cancel").status_code == 200
    assert client.call("GET", f"sql/statements/{started['statement_id']}").json()["status"]["state"] == "CANCELED"
    assert client.emu.sql.statements[started["statement_id"]].executions == 0
    assert client.execute("SELECT count(*) FROM once")["result"]["data_array"] == [["0"]]


def test_on_wait_timeout_cancel(client: Client) -> None:
    answer = client.execute(
        "SELECT 1", wait_timeout="5s", on_wait_timeout="CANCEL", query_tags=[{"key": "emulator_duration", "value": "600"}]
    )
    assert answer["status"]["state"] == "CANCELED"


def test_warehouse_crud(client: Client) -> None:
    created = client.call("POST", "sql/warehouses", {"name": "etl", "cluster_size": "Small"})
    warehouse_id = created.json()["id"]
    assert client.call("POST", f"sql/warehouses/{warehouse_id}/edit", {"auto_stop_mins": 30}).status_code == 200
    seen = client.call("GET", f"sql/warehouses/{warehouse_id}").json()
    assert (seen["name"], seen["auto_stop_mins"], seen["state"]) == ("etl", 30, "STARTING")
    assert seen["odbc_params"]["path"] == f"/sql/1.0/warehouses/{warehouse_id}"
    names = [w["name"] for w in client.call("GET", "sql/warehouses").json()["warehouses"]]
    assert sorted(names) == ["Starter Warehouse", "etl"]
    assert client.call("POST", "sql/warehouses", {"name": "x", "cluster_size": "Huge"}).status_code == 400
    assert client.call("DELETE", f"sql/warehouses/{warehouse_id}").status_code == 200
    assert client.call("GET", f"sql/warehouses/{warehouse_id}").status_code == 404


def test_unknown_statement_and_warehouse(client: Client) -> None:
    assert client.call("GET", "sql/statements/01ef0000-0000-0000-0000-000000000000").json()["error_code"] == (
        "RESOURCE_DOES_NOT_EXIST"
    )
    answer = client.call("POST", "sql/statements", {"statement": "SELECT 1", "warehouse_id": "nope"})
    assert answer.status_code == 404


def test_without_the_extra_sql_answers_a_clear_error(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_dbx.emulator import sql_engine

    monkeypatch.setattr(sql_engine, "available", lambda: False)
    answer = client.call("POST", "sql/statements", {"statement": "SELECT 1", "warehouse_id": DEFAULT_WAREHOUSE_ID})
    assert answer.status_code == 501
    assert "airflow-dbx[emulator]" in answer.json()["message"]
    jobs = requests.get(f"{client.emu.url}/api/2.2/jobs/list", headers=client.headers, timeout=30)
    assert jobs.status_code == 200


def test_the_query_history_filters_by_statement_ids_and_statuses(client: Client) -> None:
    done = [client.execute("SELECT 1")["statement_id"] for _ in range(3)]
    running = client.execute("SELECT 2", wait_timeout="0s", query_tags=[
        {"key": "emulator_duration", "value": "60"}])["statement_id"]
    history = f"{client.emu.url}/api/2.0/sql/history/queries"

    def listed(**params: Any) -> dict[str, str]:
        answer = requests.get(history, params=params, headers=client.headers, timeout=30)
        assert answer.status_code == 200, answer.text
        return {q["query_id"]: q["status"] for q in answer.json()["res"]}

    # A list filter repeats its key, as the SDK sends it.
    assert listed(**{"filter_by.statement_ids": [done[0], running]}) == {done[0]: "FINISHED", running: "RUNNING"}
    assert set(listed(**{"filter_by.statuses": "RUNNING"})) == {running}
    assert listed(**{"filter_by.statement_ids": [done[1]], "filter_by.statuses": "RUNNING"}) == {}
