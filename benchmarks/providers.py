"""The two providers behind one small interface, for the workers (imported inside a provider's venv)."""

from __future__ import annotations

import asyncio
import contextvars
import time
from typing import Any

from common import CONN_ID

PROVIDERS = ("ours", "official")

OPERATORS_MODULE = {
    "ours": "airflow_dbx.operators",
    "official": "airflow.providers.databricks.operators.databricks",
}
SUBMIT_OPERATOR = {
    "ours": ("airflow_dbx.operators", "DatabricksSubmitRunOperator"),
    "official": ("airflow.providers.databricks.operators.databricks", "DatabricksSubmitRunOperator"),
}


def make_trigger(
    provider: str, run_id: int, period: float, *, waiting_since: float | None = None, conn_id: str = CONN_ID
) -> Any:
    """Each provider's trigger for one run, as its deferrable operator would build it."""
    if provider == "ours":
        from airflow_dbx.trigger import DatabricksRunTrigger

        return DatabricksRunTrigger(
            run_id=run_id, databricks_conn_id=conn_id, polling_period_seconds=period, waiting_since=waiting_since
        )
    from airflow.providers.databricks.triggers.databricks import DatabricksExecutionTrigger

    return DatabricksExecutionTrigger(run_id=run_id, databricks_conn_id=conn_id, polling_period_seconds=period)


def make_sql_trigger(provider: str, statement_id: str, period: float, *, conn_id: str = CONN_ID) -> Any:
    """Each provider's SQL statement trigger, as its deferrable statements operator builds it."""
    if provider == "ours":
        from airflow_dbx.trigger import DatabricksSQLStatementExecutionTrigger
    else:
        from airflow.providers.databricks.triggers.databricks import DatabricksSQLStatementExecutionTrigger

    return DatabricksSQLStatementExecutionTrigger(
        statement_id=statement_id, databricks_conn_id=conn_id, polling_period_seconds=period,
        end_time=time.time() + 24 * 3600,
    )


# ---------------------------------------------------------------------- instrumentation

CURRENT_RUN: contextvars.ContextVar[object] = contextvars.ContextVar("bench_run", default=None)


class RequestCounter:
    """Counts HTTP requests per (run, path) by wrapping ``aiohttp.ClientSession._request``.

    Both providers' async transports are aiohttp, so this sees every request a trigger makes;
    ``CURRENT_RUN`` (set in the task that drives a trigger, inherited by its child tasks)
    says whose request it was.
    """

    def __init__(self) -> None:
        import aiohttp

        self.counts: dict[tuple[object, str], int] = {}
        original = aiohttp.ClientSession._request
        counts = self.counts

        async def counting(session: Any, method: str, url: Any, *args: Any, **kwargs: Any) -> Any:
            path = str(url).split("?", 1)[0].split("/api/", 1)[-1]
            key = (CURRENT_RUN.get(), f"{method} {path}")
            counts[key] = counts.get(key, 0) + 1
            return await original(session, method, url, *args, **kwargs)

        aiohttp.ClientSession._request = counting  # type: ignore[method-assign]

    def for_run(self, key: object) -> dict[str, int]:
        return {path: n for (run, path), n in self.counts.items() if run == key}


class ConnectionCounter:
    """Counts TCP connections the event loop opens (both providers' aiohttp connectors call
    ``loop.create_connection``, directly or with a socket from aiohappyeyeballs)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.opened = 0
        original = loop.create_connection

        async def counting(*args: Any, **kwargs: Any) -> Any:
            result = await original(*args, **kwargs)
            self.opened += 1
            return result

        loop.create_connection = counting  # type: ignore[method-assign]


class LagTicker:
    """Event-loop lag: a task that sleeps 10 ms and records how late it wakes up."""

    def __init__(self, interval: float = 0.010) -> None:
        self.interval = interval
        self.samples: list[float] = []
        self.recording = False

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.interval)
            if self.recording:
                self.samples.append(max(0.0, loop.time() - start - self.interval))
