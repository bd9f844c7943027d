"""Triggers: wait in the triggerer for a run or a SQL statement to end, holding no worker slot."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_dbx import compat
from airflow_dbx.errors import DatabricksError
from airflow_dbx.models import DEFAULT_CONN_ID
from airflow_dbx.sql_models import keep_arguments

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Coroutine

    from airflow_dbx.hook import DatabricksHook
    from airflow_dbx.models import Run
    from airflow_dbx.sql_hook import DatabricksSqlHook
    from airflow_dbx.sql_models import Statement
    from airflow_dbx.waiting import Watcher

log = logging.getLogger(__name__)

# Cancellations in flight; the loop keeps only weak references to tasks.
_CANCELLING: set[asyncio.Task[None]] = set()


async def _finish_even_if_cancelled(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` to its end even if the caller is cancelled meanwhile.

    The triggerer repeats a user's cancellation on every sync until the trigger is gone, so
    the cancel of a Databricks run must not be interruptible halfway.
    """
    task = asyncio.ensure_future(work)
    _CANCELLING.add(task)
    task.add_done_callback(_CANCELLING.discard)
    await asyncio.shield(task)


def _retry_args(spec: dict[str, Any] | None) -> dict[str, Any] | None:
    """The tenacity arguments a trigger's JSON ``retry_args`` describe."""
    from airflow_dbx._http.retry_args import decode  # run time only

    return decode(spec)


def _serialized(trigger: BaseTrigger) -> tuple[str, dict[str, Any]]:
    """The classpath and the constructor's arguments, read back from the attributes of the same names."""
    names = list(inspect.signature(type(trigger).__init__).parameters)[1:]
    return f"{type(trigger).__module__}.{type(trigger).__qualname__}", {name: getattr(trigger, name) for name in names}


class _CancellingTrigger(BaseTrigger):
    """Waits for one thing its task started, and cancels it when the task is stopped.

    Subclasses say what they wait for (``_wait``), how to cancel it (``_cancel``) and how to
    name it in the log (``subject``).
    """

    cancel_on_kill: bool
    polling_period_seconds: float
    waiting_since: float

    @property
    def subject(self) -> str:
        raise NotImplementedError

    def _watcher(self, deadline: float | None) -> Watcher:
        """The schedule, resumed where the wait began (a rebuilt trigger keeps its pace)."""
        from airflow_dbx.waiting import Watcher  # run time only: the operators import this module

        return Watcher(self.polling_period_seconds, waited=time.time() - self.waiting_since, deadline=deadline)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            event = await self._wait()
        except asyncio.CancelledError:
            if not compat.TRIGGER_HAS_ON_KILL:
                await _finish_even_if_cancelled(self._cancel_if_task_left())
            raise
        except DatabricksError as exc:
            lost = self._lost(exc)
            if lost is None:
                raise
            log.warning("Stopped watching Databricks %s: %s", self.subject, exc)
            event = lost
        yield TriggerEvent(event)

    async def _wait(self) -> dict[str, Any]:
        raise NotImplementedError

    def _lost(self, exc: DatabricksError) -> dict[str, Any] | None:
        """The event that tells the task its wait failed (None: the trigger fails instead).

        A task that can decide what a lost wait means (cancel its work on its last try)
        gets the error in its event rather than a failed trigger.
        """
        return None

    async def _cancel(self) -> None:
        raise NotImplementedError

    async def on_kill(self) -> None:
        """Airflow 3.3+: a user marked, cleared or stopped the deferred task."""
        await _finish_even_if_cancelled(self._cancel_if_task_left(assume_left=True))

    async def _cancel_if_task_left(self, *, assume_left: bool = False) -> None:
        """Cancel, unless the task instance is still deferred on what this trigger waits for.

        A triggerer that restarts or hands the trigger to another triggerer also cancels
        this coroutine; the task instance is then still ``deferred`` and the work must go on.
        A trigger made with ``cancel_on_kill=False`` (a sensor's: its task did not start the
        work) never cancels.
        """
        subject = self.subject
        if not self.cancel_on_kill:
            log.info("Stopped watching Databricks %s; it goes on (this task did not start it)", subject)
            return
        ti = getattr(self, "task_instance", None)
        state: str | None = "unknown"
        if ti is not None:
            try:
                # Through asgiref, not a bare thread: the Task SDK's blocking call then sends its
                # request on this event loop, where the triggerer serialises its messages (from a
                # thread of its own, it raced the triggerer's and crashed the trigger runner).
                from asgiref.sync import sync_to_async

                state = await sync_to_async(compat.task_instance_state, thread_sensitive=False)(
                    ti.dag_id, ti.task_id, ti.run_id, ti.map_index
                )
            except Exception as exc:
                log.warning("Could not read the task's state (%s)", type(exc).__name__)
        if state == "deferred" or (state == "unknown" and not assume_left):
            log.info("Trigger for Databricks %s stopped; the task still waits, so it goes on", subject)
            return
        log.info("Task left its deferral (state %s); cancelling Databricks %s", state, subject)
        try:
            await self._cancel()
        except DatabricksError as exc:  # nothing is left to report it to but the log
            log.error("Could not cancel Databricks %s: %s", subject, exc)


class DatabricksRunTrigger(_CancellingTrigger):
    """Poll one Databricks run until it ends and fire one event with its outcome.

    The event payload is the run's summary (``airflow_dbx.outcome.summarise_run``),
    ``{"timed_out": True, ...}`` when ``deadline`` (epoch seconds) passed first, in which
    case the run has been cancelled, or ``{"error": ...}`` when the run's state could not be
    read (an error retrying cannot mend, or an outage longer than the wait tolerates).
    ``retry_args`` are in the JSON form of ``airflow_dbx._http.retry_args.encode``. Rebuilt
    from ``serialize()`` after a triggerer restart, it picks up where the old one left off
    (``waiting_since`` keeps the polling schedule); only a user's action on the task cancels
    the run. With ``task_key``, the trigger follows that task of run ``run_id`` (its latest
    attempt) instead of the whole run, and cancels only that task run.
    """

    def __init__(  # noqa: PLR0917 - Airflow rebuilds triggers from keyword arguments only
        self,
        run_id: int,
        databricks_conn_id: str = DEFAULT_CONN_ID,
        polling_period_seconds: float = 30,
        retry_limit: int = 3,
        retry_delay: float = 1.0,
        retry_args: dict[str, Any] | None = None,
        deadline: float | None = None,
        run_page_url: str = "",
        allow_success_with_failures: bool = False,
        waiting_since: float | None = None,
        cancel_on_kill: bool = True,
        task_key: str | None = None,
    ) -> None:
        super().__init__()
        self.run_id = run_id
        self.databricks_conn_id = databricks_conn_id
        self.polling_period_seconds = polling_period_seconds
        self.retry_limit = retry_limit
        self.retry_delay = retry_delay
        self.retry_args = retry_args
        self.deadline = deadline
        self.run_page_url = run_page_url
        self.allow_success_with_failures = allow_success_with_failures
        self.waiting_since = time.time() if waiting_since is None else waiting_since
        self.cancel_on_kill = cancel_on_kill
        self.task_key = task_key

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "run_id": self.run_id,
                "databricks_conn_id": self.databricks_conn_id,
                "polling_period_seconds": self.polling_period_seconds,
                "retry_limit": self.retry_limit,
                "retry_delay": self.retry_delay,
                "retry_args": self.retry_args,
                "deadline": self.deadline,
                "run_page_url": self.run_page_url,
                "allow_success_with_failures": self.allow_success_with_failures,
                "waiting_since": self.waiting_since,
                "cancel_on_kill": self.cancel_on_kill,
                "task_key": self.task_key,
            },
        )

    def _hook(self) -> DatabricksHook:
        from airflow_dbx.hook import DatabricksHook  # the operators import this module at parse time

        retrying = (self.retry_limit, self.retry_delay, _retry_args(self.retry_args))
        return DatabricksHook(self.databricks_conn_id, *retrying, caller=type(self).__name__)

    def _lost(self, exc: DatabricksError) -> dict[str, Any]:
        return {"run_id": self.run_id, "run_page_url": self.run_page_url, "error": str(exc)}

    @property
    def subject(self) -> str:
        return f"run {self.run_id}" + (f" task {self.task_key}" if self.task_key is not None else "")

    async def _cancel(self) -> None:
        hook = self._hook()
        await hook.a_cancel_run((await self._watched(hook)).run_id if self.task_key is not None else self.run_id)

    async def _wait(self) -> dict[str, Any]:
        hook = self._hook()
        watcher = self._watcher(self.deadline)
        if self.task_key is not None:
            run = await hook.a_wait_for_task(self.run_id, self.task_key, watcher)
        else:
            run = await self._wait_for_run(hook, watcher)
        if run is None:
            return await self._time_out(hook)
        return await hook.a_summarise(run, allow_success_with_failures=self.allow_success_with_failures)

    async def _wait_for_run(self, hook: DatabricksHook, watcher: Watcher) -> Run | None:
        """With the workspace's other waiters in this process (``airflow_dbx.sharing``), or alone."""
        from airflow_dbx.sharing import wait_shared

        run: Run | None = await wait_shared(
            hook, self.run_id, self.polling_period_seconds, self.deadline,
            lambda: hook.a_wait_for_run(self.run_id, watcher), since=self.waiting_since,
        )
        return run

    async def _watched(self, hook: DatabricksHook) -> Run:
        """The run watched: ``run_id``, or with ``task_key`` the latest attempt of that task in it."""
        if self.task_key is not None:
            return await hook.a_get_task_run(self.run_id, self.task_key)
        return await hook.a_get_run(self.run_id)

    async def _time_out(self, hook: DatabricksHook) -> dict[str, Any]:
        run = await self._watched(hook)
        if run.state.is_terminal:  # it ended before this trigger could see it: report that
            return await hook.a_summarise(run, allow_success_with_failures=self.allow_success_with_failures)
        log.warning("Deadline passed; cancelling Databricks run %s", run.run_id)
        await hook.a_cancel_run(run.run_id)
        return {"run_id": run.run_id, "run_page_url": self.run_page_url, "timed_out": True}


class DatabricksSQLStatementExecutionTrigger(_CancellingTrigger):
    """Poll one SQL statement until it ends, and fire one event with its state.

    The event is ``{"statement_id", "state", "error_code", "error_message"}``, or
    ``{"statement_id", "timed_out": True}`` when ``end_time`` (epoch seconds) passed first,
    the statement then cancelled. The same restart and cancellation rules as
    :class:`DatabricksRunTrigger`.
    """

    statement_id: str
    databricks_conn_id: str
    end_time: float | None
    polling_period_seconds: float
    retry_limit: int
    retry_delay: float
    retry_args: dict[str, Any] | None
    caller: str
    waiting_since: float

    def __init__(  # noqa: PLR0917 - Airflow rebuilds triggers from keyword arguments only
        self,
        statement_id: str,
        databricks_conn_id: str = DEFAULT_CONN_ID,
        end_time: float | None = None,
        polling_period_seconds: float = 30,
        retry_limit: int = 3,
        retry_delay: float = 1.0,
        retry_args: dict[str, Any] | None = None,
        caller: str = "DatabricksSQLStatementExecutionTrigger",
        waiting_since: float | None = None,
        cancel_on_kill: bool = True,
    ) -> None:
        super().__init__()
        keep_arguments(self, locals())
        self.waiting_since = time.time() if waiting_since is None else waiting_since

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return _serialized(self)

    @property
    def subject(self) -> str:
        return f"SQL statement {self.statement_id}"

    def _hook(self) -> DatabricksSqlHook:
        from airflow_dbx.sql_hook import DatabricksSqlHook

        retrying = (self.retry_limit, self.retry_delay, _retry_args(self.retry_args))
        return DatabricksSqlHook(self.databricks_conn_id, *retrying, caller=self.caller)

    async def _cancel(self) -> None:
        await self._hook().a_cancel_statement(self.statement_id)

    async def _wait(self) -> dict[str, Any]:
        from airflow_dbx.sharing import StatementWatcher, wait_shared

        hook = self._hook()
        watcher = self._watcher(self.end_time)
        # With the connection's other statement waiters in this process (the query history), or alone.
        statement: Statement | None = await wait_shared(
            hook, self.statement_id, self.polling_period_seconds, self.end_time,
            lambda: hook.a_wait_for_statement(self.statement_id, watcher),
            since=self.waiting_since, kind=StatementWatcher,
        )
        if statement is None:
            statement = await hook.a_get_statement(self.statement_id)
            if not statement.state.is_terminal:
                log.warning("Deadline passed; cancelling Databricks SQL statement %s", self.statement_id)
                await hook.a_cancel_statement(self.statement_id)
                return {"statement_id": self.statement_id, "timed_out": True}
        state = statement.state
        return {
            "statement_id": self.statement_id, "state": state.state,
            "error_code": state.error_code, "error_message": state.message,
        }


class DatabricksWarehouseTrigger(BaseTrigger):
    """Poll a SQL warehouse until a start or stop took effect; one event with its state
    (``None`` once ``end_time`` passed). Never changes the warehouse itself."""

    warehouse_id: str
    action: str
    databricks_conn_id: str
    end_time: float | None
    polling_period_seconds: float
    retry_limit: int
    retry_delay: float
    retry_args: dict[str, Any] | None

    def __init__(  # noqa: PLR0917 - Airflow rebuilds triggers from keyword arguments only
        self,
        warehouse_id: str,
        action: str,
        databricks_conn_id: str = DEFAULT_CONN_ID,
        end_time: float | None = None,
        polling_period_seconds: float = 30,
        retry_limit: int = 3,
        retry_delay: float = 1.0,
        retry_args: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        keep_arguments(self, locals())

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return _serialized(self)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_dbx.sql_hook import DatabricksSqlHook
        from airflow_dbx.waiting import Watcher

        retrying = (self.retry_limit, self.retry_delay, _retry_args(self.retry_args))
        hook = DatabricksSqlHook(self.databricks_conn_id, *retrying, caller=type(self).__name__)
        watcher = Watcher(self.polling_period_seconds, deadline=self.end_time)
        state = await hook.a_wait_for_warehouse(self.warehouse_id, self.action, watcher)
        yield TriggerEvent({"warehouse_id": self.warehouse_id, "state": state})
