"""The SQL statement operator and its trigger against the emulator, judged from the emulator's records."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from airflow_dbx.emulator.sql_warehouses import DEFAULT_WAREHOUSE_ID
from airflow_dbx.errors import PayloadError
from airflow_dbx.operators import DatabricksSQLStatementsOperator
from airflow_dbx.sql_models import DatabricksSqlFailed
from airflow_dbx.trigger import DatabricksSQLStatementExecutionTrigger
from tests.integration.conftest import TaskDeferred

pytest.importorskip("duckdb")
pytest.importorskip("sqlglot")

SLOW = {"emulator_duration": "60"}


def statement_op(statement: str, **kwargs: Any) -> DatabricksSQLStatementsOperator:
    kwargs.setdefault("task_id", "t")
    kwargs.setdefault("polling_period_seconds", 1)
    kwargs.setdefault("warehouse_id", DEFAULT_WAREHOUSE_ID)
    return DatabricksSQLStatementsOperator(statement=statement, **kwargs)


def executions(emulator: Any) -> list[tuple[str, int, str]]:
    with emulator.sql.lock:
        return [(s.statement.split("*/", 1)[-1].strip(), s.executions, s.state) for s in emulator.sql.statements.values()]


def seed(emulator: Any, try_context: Any) -> None:
    statement_op("CREATE TABLE sales (id INT, region STRING)").execute(try_context())
    statement_op("INSERT INTO sales VALUES (1, 'eu'), (2, 'us'), (3, 'eu')").execute(try_context())


def test_rows_come_back_as_dicts_across_chunks(emulator, try_context) -> None:
    seed(emulator, try_context)
    emulator.sql.chunk_rows = 1
    ctx = try_context()
    rows = statement_op(
        "SELECT id, region FROM sales WHERE region = :region ORDER BY id", parameters=[{"name": "region", "value": "eu"}]
    ).execute(ctx)
    assert rows == [{"id": "1", "region": "eu"}, {"id": "3", "region": "eu"}]
    assert ctx.xcom["statement_id"] in emulator.sql.statements
    assert ctx.xcom["query_history_url"].endswith(f"/sql/history?queryId={ctx.xcom['statement_id']}")


def test_external_links_are_read_too_and_the_row_bound_holds(emulator, try_context) -> None:
    emulator.sql.chunk_rows = 2
    rows = statement_op(
        "SELECT i FROM range(7) AS r(i) ORDER BY i", disposition="EXTERNAL_LINKS", max_xcom_rows=5
    ).execute(try_context())
    assert rows == [{"i": str(i)} for i in range(5)]
    external = [r for r in emulator.requests if r.path.startswith("/__external__/")]
    assert len(external) == 3 and all(r.status == 200 for r in external)


def test_a_failed_statement_raises_its_error(emulator, try_context) -> None:
    with pytest.raises(DatabricksSqlFailed, match=r"FAILED \(BAD_REQUEST\).*TABLE_OR_VIEW_NOT_FOUND"):
        statement_op("SELECT * FROM nowhere").execute(try_context())


def test_waits_past_the_apis_own_wait(emulator, try_context) -> None:
    rows = statement_op("SELECT 7 AS n", query_tags={"emulator_duration": "150"}).execute(try_context())
    assert rows == [{"n": "7"}]
    polls = [r for r in emulator.requests if r.method == "GET" and "/sql/statements/" in r.path]
    assert polls


def test_timeout_cancels_the_statement(emulator, try_context) -> None:
    from airflow_dbx.compat import AirflowTaskTimeout

    statement_op("CREATE TABLE t1 (a INT)").execute(try_context())
    with pytest.raises(AirflowTaskTimeout):
        statement_op("INSERT INTO t1 VALUES (1)", query_tags=SLOW, timeout=2).execute(try_context())
    assert executions(emulator)[-1] == ("INSERT INTO t1 VALUES (1)", 0, "CANCELED")


def test_a_retry_reattaches_instead_of_running_the_sql_twice(emulator, try_context) -> None:
    statement_op("CREATE TABLE once (a INT)").execute(try_context())
    make = lambda **kw: statement_op("INSERT INTO once VALUES (1)", task_id="ins", query_tags={"emulator_duration": "100"}, **kw)  # noqa: E731
    first = make(wait_for_termination=False).execute(try_context(1, task_id="ins"))
    assert make().execute(try_context(2, task_id="ins")) == [{"num_affected_rows": "1", "num_inserted_rows": "1"}]
    inserts = [e for e in executions(emulator) if e[0].startswith("INSERT")]
    assert inserts == [("INSERT INTO once VALUES (1)", 1, "SUCCEEDED")]
    assert first in emulator.sql.statements
    assert statement_op("SELECT count(*) AS n FROM once").execute(try_context()) == [{"n": "1"}]


def test_a_retry_after_a_failure_runs_it_again(emulator, try_context) -> None:
    with pytest.raises(DatabricksSqlFailed):
        statement_op("SELECT * FROM later", task_id="q").execute(try_context(1, task_id="q"))
    statement_op("CREATE TABLE later AS SELECT 1 AS a").execute(try_context())
    assert statement_op("SELECT * FROM later", task_id="q").execute(try_context(2, task_id="q")) == [{"a": "1"}]


def test_on_kill_cancels(emulator, try_context) -> None:
    op = statement_op("SELECT 1", query_tags=SLOW, wait_for_termination=False)
    op.execute(try_context())
    op.on_kill()
    assert executions(emulator)[-1][1:] == (0, "CANCELED")


def test_defers_and_resumes_from_the_event(emulator, try_context) -> None:
    op = statement_op("SELECT 5 AS five", query_tags={"emulator_duration": "120"}, deferrable=True)
    ctx = try_context()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(ctx)
    trigger = deferred.value.trigger
    assert isinstance(trigger, DatabricksSQLStatementExecutionTrigger)
    rebuilt = DatabricksSQLStatementExecutionTrigger(**trigger.serialize()[1])

    async def first_event() -> dict[str, Any]:
        async for event in rebuilt.run():
            return event.payload
        raise AssertionError("no event")

    event = asyncio.run(first_event())
    assert event["state"] == "SUCCEEDED"
    assert op.execute_complete(ctx, event) == [{"five": "5"}]


def test_trigger_deadline_cancels(emulator, try_context) -> None:
    op = statement_op("SELECT 1", query_tags=SLOW, wait_for_termination=False)
    statement_id = op.execute(try_context())
    import time

    trigger = DatabricksSQLStatementExecutionTrigger(statement_id, end_time=time.time() + 1, polling_period_seconds=1)

    async def first_event() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("no event")

    assert asyncio.run(first_event()) == {"statement_id": statement_id, "timed_out": True}
    assert emulator.sql.statements[statement_id].state == "CANCELED"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"statement": "  "}, "statement"),
        ({"parameters": [{"value": "1"}]}, "parameters"),
        ({"parameters": [{"name": "a", "value": "1"}, {"name": "a", "value": "2"}]}, "parameters"),
        ({"warehouse_id": 42}, "warehouse_id"),
        ({"max_xcom_rows": -1}, "max_xcom_rows"),
    ],
)
def test_bad_input_fails_at_parse_time(kwargs: dict[str, Any], field: str) -> None:
    kwargs.setdefault("statement", "SELECT 1")
    with pytest.raises(PayloadError, match=field):
        statement_op(**kwargs)


class _DeferredTaskInstance:
    dag_id, task_id, run_id, map_index = "d", "t", "r", -1


def _slow_statement(emulator, try_context, seconds: str = "60") -> str:
    op = statement_op("SELECT 1 AS one", query_tags={"emulator_duration": seconds}, wait_for_termination=False)
    return str(op.execute(try_context()))


async def _events(trigger: DatabricksSQLStatementExecutionTrigger) -> list[dict[str, Any]]:
    return [event.payload async for event in trigger.run()]


def test_a_triggerer_restart_cancels_nothing(emulator, try_context, monkeypatch) -> None:
    from airflow_dbx import compat

    monkeypatch.setattr(compat, "task_instance_state", lambda *args: "deferred")
    statement_id = _slow_statement(emulator, try_context, "60")
    first = DatabricksSQLStatementExecutionTrigger(statement_id, polling_period_seconds=1)
    first.task_instance = _DeferredTaskInstance()

    async def restart() -> None:
        waiting = asyncio.ensure_future(_events(first))
        await asyncio.sleep(1.2)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(restart())
    (event,) = asyncio.run(_events(DatabricksSQLStatementExecutionTrigger(**first.serialize()[1])))
    assert event["state"] == "SUCCEEDED"
    assert emulator.sql.statements[statement_id].cancels == 0
    assert not [r for r in emulator.requests if r.path.endswith("/cancel")]


@pytest.mark.parametrize("state", ["failed", "success", None])
def test_a_user_stopping_the_deferred_task_cancels(emulator, try_context, monkeypatch, state) -> None:
    from airflow_dbx import compat

    monkeypatch.setattr(compat, "task_instance_state", lambda *args: state)
    statement_id = _slow_statement(emulator, try_context)
    trigger = DatabricksSQLStatementExecutionTrigger(statement_id, polling_period_seconds=1)
    trigger.task_instance = _DeferredTaskInstance()

    async def user_kills() -> None:
        waiting = asyncio.ensure_future(_events(trigger))
        await asyncio.sleep(0.5)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        if compat.TRIGGER_HAS_ON_KILL:
            await trigger.on_kill()

    asyncio.run(user_kills())
    assert emulator.sql.statements[statement_id].state == "CANCELED"
    assert emulator.sql.statements[statement_id].executions == 0


def test_statements_waited_on_together_are_read_from_the_query_history(emulator, try_context) -> None:
    """Twelve deferred statements in one triggerer: their states come from the query history, a
    request for all of them at once, and each end is confirmed with one read of the statement."""
    seconds = ["1", "2", "3"] * 4
    ids = [_slow_statement(emulator, try_context, s) for s in seconds]
    first_request = len(emulator.requests)

    async def wait_all() -> list[list[dict[str, Any]]]:
        return await asyncio.gather(*(
            _events(DatabricksSQLStatementExecutionTrigger(sid, polling_period_seconds=30)) for sid in ids))

    events = asyncio.run(wait_all())
    assert [event["state"] for (event,) in events] == ["SUCCEEDED"] * len(ids)
    assert [event["statement_id"] for (event,) in events] == ids
    log = emulator.requests[first_request:]
    history = [r for r in log if r.path.endswith("/sql/history/queries")]
    assert history, "the statements were polled one by one"
    for sid in ids:
        reads = [r for r in log if r.path.endswith(f"/sql/statements/{sid}") and r.method == "GET"]
        # The first four poll alone only until the fifth joins (at once): no read but the confirmation.
        assert len(reads) == 1, (sid, len(reads))
        ended = emulator.sql.statements[sid]
        assert ended.state == "SUCCEEDED" and ended.executions == 1
