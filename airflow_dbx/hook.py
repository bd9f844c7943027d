"""DatabricksHook: the Jobs API's endpoints for DAGs, operators and triggers, on an Airflow connection.

Each endpoint is written once, as a plan (``_http``); the plain methods send it with
requests, the ``a_*`` methods with aiohttp through one session per (event loop, workspace)
shared by every hook in the process, so thousands of deferred runs polled by one triggerer
share a bounded pool of connections.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

from airflow import __version__ as airflow_version
from airflow.sdk import BaseHook

from airflow_dbx import __version__, models
from airflow_dbx._http.client import ApiClient
from airflow_dbx._http.pool import close_sessions
from airflow_dbx._http.retry import RetryPolicy
from airflow_dbx._http.settings import parse_host
from airflow_dbx.errors import DatabricksApiError, PayloadError
from airflow_dbx.models import (
    CANCEL_ALL_RUNS,
    CANCEL_RUN,
    GET_JOB,
    GET_RUN,
    GET_RUN_OUTPUT,
    LIST_JOBS,
    LIST_RUNS,
    REPAIR_RUN,
    RUN_NOW,
    SUBMIT_RUN,
    Endpoint,
    Run,
    RunState,
    id_in,
    merge_run_page,
    task_attempt,
)
from airflow_dbx.outcome import output_targets, summarise_run
from airflow_dbx.payloads import check_retry_args
from airflow_dbx.waiting import Plan, Sleep, Watcher, patiently, watch

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_dbx._http.exchange import Answer

__all__ = ["DatabricksHook", "close_sessions", "parse_host"]

# A plain module logger: Airflow routes stdlib logging into the task log (and its secrets
# masker), and users can tune "airflow_dbx" like any other library.
log = logging.getLogger(__name__)

# Jobs as code: only the hook writes jobs.
CREATE_JOB = Endpoint("POST", "jobs/create")
RESET_JOB = Endpoint("POST", "jobs/reset")

RUNS_LIST_PAGE = 25  # the Jobs API's maximum page size for runs/list
JOBS_LIST_PAGE = 100  # and for jobs/list
MAX_PAGES = 1000  # a bound on any paging loop, should an API keep handing out tokens


class DatabricksHook(BaseHook):
    """Talk to a Databricks workspace's Jobs API 2.2.

    Connection fields (``dbx`` connections; ``databricks`` ones of the official provider work too):

    - Host: the workspace URL -- ``adb-1.2.azuredatabricks.net``, ``https://host`` or
      ``https://host:port``; the extra ``host`` overrides it. A path is refused. Plain
      ``http://`` is accepted only for loopback (127.0.0.0/8, ::1, localhost), as for the
      emulator: in JSON form give Host ``http://127.0.0.1:8080``; in URI form put the scheme
      in the host the way Airflow parses it, ``dbx://http://:TOKEN@127.0.0.1:8080``
      (``dbx://:TOKEN@127.0.0.1:8080`` means https).
    - Credentials: Password alone (or the extra ``token``) is a personal access token;
      Login + Password are basic auth, or, with ``service_principal_oauth: true``, an OAuth
      client id and secret, or, with ``azure_tenant_id``, an Azure AD service principal
      (``azure_ad_endpoint``, ``azure_resource_id``). ``auth_type`` picks a mode explicitly,
      including ``databricks-sdk`` (needs ``pip install 'airflow-dbx[sdk]'``; extra ``profile``).
    - Extras ``timeout_seconds`` (default 30), ``ca_bundle``, ``verify_ssl``, ``proxies``.

    :param retry_limit: attempts per request, at least 1.
    :param retry_delay: base of the exponential backoff (full jitter), in seconds.
    :param retry_args: tenacity ``Retrying`` keyword arguments (``stop``, ``wait``, ...) that
        replace the defaults.
    :param caller: named in the User-Agent, e.g. the operator class using the hook.
    """

    conn_name_attr = "databricks_conn_id"
    default_conn_name = models.DEFAULT_CONN_ID
    conn_type = "dbx"
    hook_name = "Databricks (airflow-dbx)"

    def __init__(
        self,
        databricks_conn_id: str = default_conn_name,
        retry_limit: int = 3,
        retry_delay: float = 1.0,
        retry_args: Mapping[str, Any] | None = None,
        *,
        caller: str | None = None,
    ) -> None:
        super().__init__()
        # PayloadError: a ValueError that names the argument, and a DatabricksError like the rest.
        if isinstance(retry_limit, bool) or not isinstance(retry_limit, int) or retry_limit < 1:
            raise PayloadError("retry_limit", f"must be an integer of at least 1, got {retry_limit!r}")
        if isinstance(retry_delay, bool) or not isinstance(retry_delay, (int, float)) or retry_delay < 0:
            raise PayloadError("retry_delay", f"must be a number of seconds >= 0, got {retry_delay!r}")
        if retry_args is not None:
            check_retry_args(retry_args)
        self.databricks_conn_id = databricks_conn_id
        self.retry_limit = retry_limit
        self.retry_delay = float(retry_delay)
        self.retry_args = dict(retry_args) if retry_args else None
        self.caller = caller
        self.user_agent = f"airflow-dbx/{__version__} apache-airflow/{airflow_version}" + (
            f" ({caller})" if caller else ""
        )
        self._api = ApiClient(
            lambda: self.get_connection(self.databricks_conn_id),
            RetryPolicy(retry_limit, self.retry_delay, self.retry_args),
            self.user_agent,
        )

    def __repr__(self) -> str:
        return f"DatabricksHook(databricks_conn_id={self.databricks_conn_id!r})"

    @property
    def host_url(self) -> str:
        """The workspace's base URL (``https://host[:port]``), for building links; no credentials."""
        return self._api.settings().base_url

    # ------------------------------------------------------------------ runs

    def submit_run(self, payload: Mapping[str, Any]) -> int:
        """POST jobs/runs/submit; the new run's id."""
        return self._api.run(self._id_of(SUBMIT_RUN, payload, "run_id"))

    def run_now(self, payload: Mapping[str, Any]) -> int:
        """POST jobs/run-now; the new run's id."""
        return self._api.run(self._id_of(RUN_NOW, payload, "run_id"))

    def repair_run(self, payload: Mapping[str, Any]) -> int:
        """POST jobs/runs/repair; the repair's id."""
        return self._api.run(self._id_of(REPAIR_RUN, payload, "repair_id"))

    def get_run(self, run_id: int, *, include_history: bool = False) -> Run:
        """The run with all its tasks (runs/get pages its task list past 100 tasks);
        ``include_history`` adds the repair history (``Run.repair_ids``)."""
        return self._api.run(self._read_run(run_id, include_history))[0]

    async def a_get_run(self, run_id: int, *, include_history: bool = False) -> Run:
        return (await self._api.arun(self._read_run(run_id, include_history)))[0]

    def earliest_workspace_time(self, local: float) -> float | None:
        """The earliest the workspace's clock can have read when this machine's read ``local``
        (epoch seconds), from the dates of its answers so far; None before any dated answer."""
        return self._api.server_clock.earliest(local)

    def get_run_state(self, run_id: int) -> RunState:
        """The run's state, from the first page of runs/get only."""
        return RunState.from_dict(self._api.run(self._data(GET_RUN, params={"run_id": run_id})))

    async def a_get_run_state(self, run_id: int) -> RunState:
        return RunState.from_dict(await self._api.arun(self._data(GET_RUN, params={"run_id": run_id})))

    def get_run_page_url(self, run_id: int) -> str:
        return str(self._api.run(self._data(GET_RUN, params={"run_id": run_id})).get("run_page_url", ""))

    def get_run_output(self, run_id: int) -> dict[str, Any]:
        return self._api.run(self._run_output(run_id))

    async def a_get_run_output(self, run_id: int) -> dict[str, Any]:
        return await self._api.arun(self._run_output(run_id))

    def cancel_run(self, run_id: int) -> None:
        self._api.run(self._data(CANCEL_RUN, body={"run_id": run_id}))

    async def a_cancel_run(self, run_id: int) -> None:
        await self._api.arun(self._data(CANCEL_RUN, body={"run_id": run_id}))

    def cancel_all_runs(self, job_id: int) -> None:
        self._api.run(self._data(CANCEL_ALL_RUNS, body={"job_id": job_id}))

    def list_runs(
        self,
        job_id: int | None = None,
        active_only: bool = False,
        completed_only: bool = False,
        *,
        run_type: str | None = None,
        expand_tasks: bool = False,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Runs, newest first, following pages until ``limit`` runs (default: all of them)."""
        params = {
            "job_id": job_id,
            "active_only": active_only,
            "completed_only": completed_only,
            "run_type": run_type,
            "expand_tasks": expand_tasks,
            "limit": RUNS_LIST_PAGE,
        }
        return self._api.run(self._pages(LIST_RUNS, params, "runs", limit))

    async def a_active_runs_page(
        self, page_token: str | None = None, start_time_from: int | None = None, start_time_to: int | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page (25 runs, newest first) of the workspace's active runs, those started in the
        given window (epoch ms, inclusive) if any, and the next page's token."""
        params = {
            "active_only": True, "limit": RUNS_LIST_PAGE, "page_token": page_token,
            "start_time_from": start_time_from, "start_time_to": start_time_to,
        }
        data = await self._api.arun(self._data(LIST_RUNS, params=params))
        token = data.get("next_page_token") if data.get("has_more", True) else None
        return list(data.get("runs") or []), token or None

    # ------------------------------------------------------------------ waiting

    def wait_for_run(self, run_id: int, watcher: Watcher) -> Run | None:
        """Check the run on ``watcher``'s schedule until it ends (the run) or the deadline passes (None)."""
        return self._api.run(watch(run_id, lambda: self._read_run(run_id), watcher))

    async def a_wait_for_run(self, run_id: int, watcher: Watcher) -> Run | None:
        return await self._api.arun(watch(run_id, lambda: self._read_run(run_id), watcher))

    def wait_for_task(self, run_id: int, task_key: str, watcher: Watcher) -> Run | None:
        """Like :meth:`wait_for_run`, for the task ``task_key`` of run ``run_id``: its latest attempt,
        so a task that Databricks retries is followed to its last attempt."""
        return self._api.run(watch(run_id, lambda: self._read_task(run_id, task_key), watcher))

    async def a_wait_for_task(self, run_id: int, task_key: str, watcher: Watcher) -> Run | None:
        return await self._api.arun(watch(run_id, lambda: self._read_task(run_id, task_key), watcher))

    def get_task_run(self, run_id: int, task_key: str) -> Run:
        """The latest attempt of task ``task_key`` in run ``run_id``, as a run of its own."""
        return self._api.run(self._read_task(run_id, task_key))[0]

    async def a_get_task_run(self, run_id: int, task_key: str) -> Run:
        return (await self._api.arun(self._read_task(run_id, task_key)))[0]

    def summarise(self, run: Run, *, allow_success_with_failures: bool = False) -> dict[str, Any]:
        """What an ended run means for its task (``outcome.summarise_run``), outputs read here."""
        return self._api.run(self._summary(run, allow_success_with_failures))

    async def a_summarise(self, run: Run, *, allow_success_with_failures: bool = False) -> dict[str, Any]:
        return await self._api.arun(self._summary(run, allow_success_with_failures))

    # ------------------------------------------------------------------ jobs

    def list_jobs(
        self, limit: int | None = None, expand_tasks: bool = False, job_name: str | None = None
    ) -> list[dict[str, Any]]:
        """Jobs (up to ``limit``; default all), only those called ``job_name`` (exact, case-insensitive) if given."""
        params = {"name": job_name, "expand_tasks": expand_tasks or None, "limit": JOBS_LIST_PAGE}
        return self._api.run(self._pages(LIST_JOBS, params, "jobs", limit))

    def find_job_id_by_name(self, name: str) -> int:
        """The id of the one job called ``name``; a PayloadError naming it if none or several are."""
        ids = self._api.run(self._job_ids(name))
        if not ids:
            raise PayloadError("job_name", f"no Databricks job is named {name!r}")
        if len(ids) > 1:
            raise PayloadError("job_name", f"{len(ids)} {_named(name, ids)}; give job_id instead")
        return ids[0]

    def job_ids_named(self, name: str) -> list[int]:
        """The ids of every job called ``name``, oldest first."""
        return self._api.run(self._job_ids(name))

    def get_job(self, job_id: int) -> dict[str, Any]:
        """jobs/get: the job, its task list read whole (Jobs API 2.2 pages it past 100 tasks)."""
        return self._api.run(self._read_job(int(job_id)))

    def create_job(self, json: Mapping[str, Any]) -> int:
        """POST jobs/create; the new job's id.

        jobs/create takes no idempotency token, so the POST is never resent blindly: after a
        failure that may have taken effect (no answer, 5xx), the job is looked up by name and
        adopted if exactly one has it, and only otherwise created again.
        """
        return self._api.run(self._create_job(json))

    def reset_job(self, job_id: int | str, json: Mapping[str, Any]) -> None:
        """POST jobs/reset: ``json`` becomes the job's complete settings."""
        self._api.run(self._data(RESET_JOB, body={"job_id": int(job_id), "new_settings": json}))

    def test_connection(self) -> tuple[bool, str]:
        """For the UI's Test button: one jobs/list call, with the reason (never the token) on failure."""
        try:
            self._api.run(self._data(LIST_JOBS, params={"limit": 1}))
        except Exception as exc:  # the button shows any failure, whatever its kind
            return False, self._api.scrub(str(exc) or type(exc).__name__)
        return True, f"Connected to {self.host_url}: the Jobs API answered."

    # ------------------------------------------------------------------ plans

    def _call(
        self, endpoint: Endpoint, *, params: Mapping[str, Any] | None = None, body: Mapping[str, Any] | None = None
    ) -> Plan[Answer]:
        """Every request of the hook goes through here."""
        return self._api.call(endpoint, params=params, body=body)

    def _data(
        self, endpoint: Endpoint, *, params: Mapping[str, Any] | None = None, body: Mapping[str, Any] | None = None
    ) -> Plan[dict[str, Any]]:
        return (yield from self._call(endpoint, params=params, body=body)).data

    def _id_of(self, endpoint: Endpoint, body: Mapping[str, Any], key: str) -> Plan[int]:
        return id_in((yield from self._data(endpoint, body=body)), key, endpoint)

    def _read_run(self, run_id: int, include_history: bool = False) -> Plan[tuple[Run, bool]]:
        """The run, its pages merged, and whether any request for it was throttled."""
        params = {"run_id": run_id, "include_history": include_history or None}
        first, throttled = yield from self._call(GET_RUN, params=params)
        for _ in range(MAX_PAGES - 1):
            if not first.get("next_page_token"):
                break
            page = yield from self._call(GET_RUN, params={**params, "page_token": first["next_page_token"]})
            first, throttled = merge_run_page(first, page.data), throttled or page.throttled
        id_in(first, "run_id", GET_RUN)
        return Run.from_dict(first), throttled

    def _read_task(self, run_id: int, task_key: str) -> Plan[tuple[Run, bool]]:
        run, throttled = yield from self._read_run(run_id)
        return task_attempt(run, task_key), throttled

    def _pages(
        self, endpoint: Endpoint, params: Mapping[str, Any], key: str, limit: int | None
    ) -> Plan[list[dict[str, Any]]]:
        """The ``key`` lists of successive pages, until the last page or ``limit`` items."""
        items: list[dict[str, Any]] = []
        token = None
        for _ in range(MAX_PAGES):
            answer = yield from self._data(endpoint, params={**params, "page_token": token})
            items += answer.get(key, [])
            token = answer.get("next_page_token")
            if not token or not answer.get("has_more", True) or (limit is not None and len(items) >= limit):
                break
        return items[:limit] if limit is not None else items

    def _job_ids(self, name: str) -> Plan[list[int]]:
        jobs = yield from self._pages(LIST_JOBS, {"name": name, "limit": JOBS_LIST_PAGE}, "jobs", None)
        # The API's name filter is exact but case-insensitive; agree with it, and guard against
        # a server that ignores the filter.
        return [int(job["job_id"]) for job in jobs if _name_of(job).casefold() == name.casefold()]

    def _read_job(self, job_id: int) -> Plan[dict[str, Any]]:
        job = yield from self._data(GET_JOB, params={"job_id": job_id})
        tasks = list((job.get("settings") or {}).get("tasks") or [])
        token = job.get("next_page_token")
        for _ in range(MAX_PAGES - 1):
            if not token:
                break
            page = yield from self._data(GET_JOB, params={"job_id": job_id, "page_token": token})
            tasks += (page.get("settings") or {}).get("tasks") or []
            token = page.get("next_page_token")
        if tasks:
            job["settings"]["tasks"] = tasks
        job.pop("next_page_token", None)
        return job

    def _create_job(self, settings: Mapping[str, Any]) -> Plan[int]:
        name = str(settings.get("name", ""))
        for attempt in range(1, self.retry_limit + 1):
            try:
                answer = yield from self._api.call(CREATE_JOB, body=settings, once=True)
                return id_in(answer.data, "job_id", CREATE_JOB)
            except DatabricksApiError as exc:
                if not exc.retryable or attempt == self.retry_limit:
                    raise exc.after(attempt) from None
                wait = max(self.retry_delay * 2 ** (attempt - 1), getattr(exc, "retry_after", None) or 0.0)
            yield Sleep(wait)
            ids = yield from patiently(functools.partial(self._job_ids, name))
            if len(ids) == 1:
                log.info("Job %r exists (id %s): its jobs/create answer was lost", name, ids[0])
                return ids[0]
            if ids:
                raise PayloadError("name", f"{len(ids)} {_named(name, ids)} after a jobs/create whose answer was lost")
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _run_output(self, run_id: int) -> Plan[dict[str, Any]]:
        return self._data(GET_RUN_OUTPUT, params={"run_id": run_id})

    def _summary(self, run: Run, allow_success_with_failures: bool) -> Plan[dict[str, Any]]:
        successful = run.state.is_successful(allow_success_with_failures=allow_success_with_failures)
        outputs = {}
        for task in output_targets(run, successful=successful):
            outputs[task.run_id] = yield from patiently(functools.partial(self._run_output, task.run_id))
        return summarise_run(run, outputs, allow_success_with_failures=allow_success_with_failures)


def _named(name: str, ids: list[int]) -> str:
    return f"Databricks jobs are named {name!r} (ids {sorted(ids)})"


def _name_of(job: Mapping[str, Any]) -> str:
    return str((job.get("settings") or {}).get("name", ""))
