"""DatabricksHook: an Airflow connection -> a Jobs API client with one retry policy, two transports.

The sync methods use requests (one session per hook); the ``a_*`` methods use aiohttp through
one session per (event loop, workspace) shared by every hook in the process, so thousands of
deferred runs polled by one triggerer share a bounded pool of connections. Both transports
run the same attempt logic (``_transport``): auth headers from ``airflow_dbx.auth``, the same
classification of answers, the same tenacity policy.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import aiohttp
import requests
import tenacity
from airflow import __version__ as airflow_version
from airflow.sdk import BaseHook

from airflow_dbx import __version__, api
from airflow_dbx._transport import (
    SESSIONS,
    answer_of,
    exhausted,
    extras_of,
    host_of_url,
    id_in,
    parse_host,
    proxies_from_extras,
    query_params,
    retry_policy,
    scrub,
    timeout_from_extras,
    transport_error,
)
from airflow_dbx.auth import Auth, InvalidConnectionError, SdkAuth, build_auth, is_true, run_blocking

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

__all__ = ["DatabricksHook", "close_sessions", "parse_host"]

# A plain module logger: Airflow routes stdlib logging into the task log (and its secrets
# masker), and users can tune "airflow_dbx" like any other library.
log = logging.getLogger(__name__)

RUNS_LIST_PAGE = 25  # the Jobs API's maximum page size for runs/list
JOBS_LIST_PAGE = 100  # and for jobs/list
MAX_PAGES = 1000  # a bound on any paging loop, should an API keep handing out tokens
# Lists that runs/get splits across pages (Jobs API 2.2), to concatenate when reading a run whole.
_PAGED_RUN_FIELDS = ("tasks", "job_clusters", "job_parameters", "repair_history", "iterations")


def _replaying(first: Exception, attempt: Callable[[], Any]) -> Callable[[], Any]:
    """``attempt``, whose first call raises ``first`` again instead of sending a request."""
    pending: list[Exception] = [first]

    def replay() -> Any:
        if pending:
            raise pending.pop()
        return attempt()

    return replay


def _areplaying(first: Exception, attempt: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
    pending: list[Exception] = [first]

    async def replay() -> Any:
        if pending:
            raise pending.pop()
        return await attempt()

    return replay


@dataclass(frozen=True)
class _Settings:
    base_url: str
    auth: Auth
    timeout: float
    verify: bool | str = field(repr=False)
    proxies: Mapping[str, str] = field(repr=False)


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
    default_conn_name = api.DEFAULT_CONN_ID
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
            raise api.PayloadError("retry_limit", f"must be an integer of at least 1, got {retry_limit!r}")
        if isinstance(retry_delay, bool) or not isinstance(retry_delay, (int, float)) or retry_delay < 0:
            raise api.PayloadError("retry_delay", f"must be a number of seconds >= 0, got {retry_delay!r}")
        if retry_args is not None:
            api.check_retry_args(retry_args)
        self.databricks_conn_id = databricks_conn_id
        self.retry_limit = retry_limit
        self.retry_delay = float(retry_delay)
        self.retry_args = dict(retry_args) if retry_args else None
        self.caller = caller
        # 429 answers this hook received, retried or not: waiters slow down while it grows.
        self.throttled = 0
        self.user_agent = f"airflow-dbx/{__version__} apache-airflow/{airflow_version}" + (
            f" ({caller})" if caller else ""
        )

    def __repr__(self) -> str:
        return f"DatabricksHook(databricks_conn_id={self.databricks_conn_id!r})"

    # ------------------------------------------------------------------ connection

    @cached_property
    def _settings(self) -> _Settings:
        conn = self.get_connection(self.databricks_conn_id)
        extras = extras_of(conn.extra)
        raw_host = extras.get("host") or conn.host
        base_url = parse_host(raw_host, conn.port) if raw_host else None
        auth = build_auth(
            host_url=base_url,
            login=conn.login or "",
            password=conn.password or "",
            extras=extras,
            fetch=self._fetch_token,
            check_url=parse_host,
        )
        if base_url is None:
            sdk_host = auth.host if isinstance(auth, SdkAuth) else None
            if not sdk_host:
                raise InvalidConnectionError(
                    f"connection {self.databricks_conn_id!r} has no host: set Host to the workspace URL"
                )
            base_url = parse_host(sdk_host)
        return _Settings(base_url, auth, timeout_from_extras(extras), self._verify(extras), proxies_from_extras(extras))

    async def _asettings(self) -> _Settings:
        # The first use reads the connection: a blocking Airflow call, so off the event loop.
        if "_settings" in self.__dict__:
            return self._settings
        return await run_blocking(lambda: self._settings)

    def _verify(self, extras: Mapping[str, Any]) -> bool | str:
        if "verify_ssl" in extras and extras["verify_ssl"] not in (None, "") and not is_true(extras["verify_ssl"]):
            log.warning(
                "TLS certificate verification is off for connection %r: it is open to interception",
                self.databricks_conn_id,
            )
            return False
        bundle = extras.get("ca_bundle")
        if bundle:
            if not os.path.isfile(str(bundle)):
                raise InvalidConnectionError(f"ca_bundle {bundle!r} is not a readable file")
            return str(bundle)
        return True

    @property
    def host_url(self) -> str:
        """The workspace's base URL (``https://host[:port]``), for building links; no credentials."""
        return self._settings.base_url

    @cached_property
    def _session(self) -> requests.Session:
        session = requests.Session()
        session.headers["User-Agent"] = self.user_agent
        return session

    def _request_options(self) -> dict[str, Any]:
        # Per request, not on the session: requests lets REQUESTS_CA_BUNDLE and *_PROXY
        # variables override a session's own verify and proxies, but not a request's.
        settings = self._settings
        return {"timeout": settings.timeout, "verify": settings.verify, "proxies": dict(settings.proxies)}

    def _fetch_token(self, url: str, form: Mapping[str, str], basic_auth: tuple[str, str] | None) -> Mapping[str, Any]:
        """POST a token request (runs in the caller's thread; async callers are already in one)."""
        label = f"POST {host_of_url(url)}"
        try:
            response = self._session.post(
                url,
                data=dict(form),
                auth=basic_auth,
                headers={"Accept": "application/json"},
                **self._request_options(),
            )
        except requests.RequestException as exc:
            raise transport_error("POST", url, exc, self._scrub) from None
        log.debug("%s -> %s", label, response.status_code)
        return answer_of(
            "POST",
            url,
            response.status_code,
            response.content,
            retry_after=response.headers.get("Retry-After"),
            scrubber=self._scrub,
        )

    def _scrub(self, text: str) -> str:
        settings = self.__dict__.get("_settings")
        return scrub(text, settings.auth.secrets() if settings else ())

    # ------------------------------------------------------------------ transports

    def _url(self, endpoint: api.Endpoint) -> str:
        return f"{self._settings.base_url}{api.API_PREFIX}{endpoint.path}"

    def _call(
        self, endpoint: api.Endpoint, *, params: Mapping[str, Any] | None = None, body: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        settings = self._settings
        url = self._url(endpoint)
        label = api.API_PREFIX + endpoint.path
        query = query_params(params)
        options = self._request_options()

        def attempt() -> dict[str, Any]:
            for refreshed in (False, True):
                headers = settings.auth.headers()
                started = time.monotonic()
                try:
                    response = self._session.request(
                        endpoint.method, url, params=query, json=body, headers=headers, **options
                    )
                except requests.RequestException as exc:
                    raise transport_error(endpoint.method, url, exc, self._scrub) from None
                self._log_answer(endpoint, response.status_code, started)
                if response.status_code == 401 and settings.auth.refreshable and not refreshed:
                    settings.auth.invalidate(headers)  # expired mid-run: one retry with a fresh token
                    continue
                return answer_of(
                    endpoint.method,
                    label,
                    response.status_code,
                    response.content,
                    retry_after=response.headers.get("Retry-After"),
                    scrubber=self._scrub,
                )
            raise AssertionError("unreachable")

        result: dict[str, Any] = self._with_retries(tenacity.Retrying, attempt)
        return result

    async def _acall(
        self, endpoint: api.Endpoint, *, params: Mapping[str, Any] | None = None, body: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        settings = await self._asettings()
        url = self._url(endpoint)
        label = api.API_PREFIX + endpoint.path
        query = query_params(params)
        proxy = settings.proxies.get("https" if url.startswith("https:") else "http")
        timeout = aiohttp.ClientTimeout(total=settings.timeout)

        async def attempt() -> dict[str, Any]:
            session = await SESSIONS.get(settings.base_url, settings.verify)
            for refreshed in (False, True):
                headers = {**await settings.auth.aheaders(), "User-Agent": self.user_agent}
                started = time.monotonic()
                try:
                    async with session.request(
                        endpoint.method, url, params=query, json=body, headers=headers, timeout=timeout, proxy=proxy
                    ) as response:
                        content = await response.read()
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    raise transport_error(endpoint.method, url, exc, self._scrub) from None
                self._log_answer(endpoint, response.status, started)
                if response.status == 401 and settings.auth.refreshable and not refreshed:
                    settings.auth.invalidate(headers)
                    continue
                return answer_of(
                    endpoint.method,
                    label,
                    response.status,
                    content,
                    retry_after=response.headers.get("Retry-After"),
                    scrubber=self._scrub,
                )
            raise AssertionError("unreachable")

        result: dict[str, Any] = await self._with_retries(tenacity.AsyncRetrying, attempt)
        return result

    # Nearly every request succeeds at its first attempt, so that attempt runs bare; the
    # tenacity machinery (a fifth of a poll's CPU in the triggerer) is built only when it
    # fails, and is handed that failure as its own first attempt, so counting, Retry-After
    # waits and the user's retry_args work as if it had run from the start.

    def _with_retries(self, retrying: type[tenacity.BaseRetrying], attempt: Any) -> Any:
        if retrying is tenacity.AsyncRetrying:
            return self._with_retries_async(attempt)
        try:
            return attempt()
        except Exception as first:
            controller = tenacity.Retrying(**self._retry_policy())
            try:
                return controller(_replaying(first, attempt))
            except (api.DatabricksApiError, tenacity.RetryError) as exc:
                raise exhausted(exc, controller) from None

    async def _with_retries_async(self, attempt: Any) -> Any:
        try:
            return await attempt()
        except Exception as first:
            controller = tenacity.AsyncRetrying(**self._retry_policy())
            try:
                return await controller(_areplaying(first, attempt))
            except (api.DatabricksApiError, tenacity.RetryError) as exc:
                raise exhausted(exc, controller) from None

    def _retry_policy(self) -> dict[str, Any]:
        return retry_policy(self.retry_limit, self.retry_delay, self.retry_args, self._log_retry)

    def _log_answer(self, endpoint: api.Endpoint, status: int, started: float) -> None:
        log.debug("%s -> HTTP %s in %.3fs", endpoint.label, status, time.monotonic() - started)
        if status == 429:
            self.throttled += 1

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        # Throttling is expected under load: keep it out of the task log unless debugging.
        level = logging.DEBUG if isinstance(exc, api.DatabricksApiError) and exc.status_code == 429 else logging.WARNING
        log.log(level, "Attempt %d failed (%s); retrying in %.1fs", state.attempt_number, exc, wait)

    # ------------------------------------------------------------------ sync API

    def submit_run(self, payload: Mapping[str, Any]) -> int:
        """POST jobs/runs/submit; the new run's id."""
        return id_in(self._call(api.SUBMIT_RUN, body=payload), "run_id", api.SUBMIT_RUN)

    def run_now(self, payload: Mapping[str, Any]) -> int:
        """POST jobs/run-now; the new run's id."""
        return id_in(self._call(api.RUN_NOW, body=payload), "run_id", api.RUN_NOW)

    def repair_run(self, payload: Mapping[str, Any]) -> int:
        """POST jobs/runs/repair; the repair's id."""
        return id_in(self._call(api.REPAIR_RUN, body=payload), "repair_id", api.REPAIR_RUN)

    def get_run(self, run_id: int, *, include_history: bool = False) -> api.Run:
        """The run with all its tasks (runs/get pages its task list past 100 tasks);
        ``include_history`` adds the repair history (``Run.repair_ids``)."""
        params = {"run_id": run_id, "include_history": include_history or None}
        first = self._call(api.GET_RUN, params=params)
        pages = 1
        while first.get("next_page_token") and pages < MAX_PAGES:
            page = self._call(api.GET_RUN, params={**params, "page_token": first["next_page_token"]})
            first = _merge_run_page(first, page)
            pages += 1
        id_in(first, "run_id", api.GET_RUN)
        return api.Run.from_dict(first)

    def get_run_state(self, run_id: int) -> api.RunState:
        """The run's state, from the first page of runs/get only."""
        return api.RunState.from_dict(self._call(api.GET_RUN, params={"run_id": run_id}))

    def get_run_page_url(self, run_id: int) -> str:
        return str(self._call(api.GET_RUN, params={"run_id": run_id}).get("run_page_url", ""))

    def get_run_output(self, run_id: int) -> dict[str, Any]:
        return self._call(api.GET_RUN_OUTPUT, params={"run_id": run_id})

    def cancel_run(self, run_id: int) -> None:
        self._call(api.CANCEL_RUN, body={"run_id": run_id})

    def cancel_all_runs(self, job_id: int) -> None:
        self._call(api.CANCEL_ALL_RUNS, body={"job_id": job_id})

    def find_job_id_by_name(self, name: str) -> int:
        """The id of the one job called ``name``; a PayloadError naming it if none or several are."""
        ids: list[int] = []
        token = None
        for _ in range(MAX_PAGES):
            params = {"name": name, "limit": JOBS_LIST_PAGE, "page_token": token}
            answer = self._call(api.LIST_JOBS, params=params)
            ids += [int(j["job_id"]) for j in answer.get("jobs", ()) if _same_name(j, name)]
            token = answer.get("next_page_token")
            if not token or not answer.get("has_more", True):
                break
        if not ids:
            raise api.PayloadError("job_name", f"no Databricks job is named {name!r}")
        if len(ids) > 1:
            raise api.PayloadError(
                "job_name", f"{len(ids)} Databricks jobs are named {name!r} (ids {sorted(ids)}); give job_id instead"
            )
        return ids[0]

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
        runs: list[dict[str, Any]] = []
        token = None
        for _ in range(MAX_PAGES):
            params = {
                "job_id": job_id,
                "active_only": active_only,
                "completed_only": completed_only,
                "run_type": run_type,
                "expand_tasks": expand_tasks,
                "limit": RUNS_LIST_PAGE,
                "page_token": token,
            }
            answer = self._call(api.LIST_RUNS, params=params)
            runs += answer.get("runs", [])
            token = answer.get("next_page_token")
            if not token or not answer.get("has_more", True) or (limit is not None and len(runs) >= limit):
                break
        return runs[:limit] if limit is not None else runs

    def test_connection(self) -> tuple[bool, str]:
        """For the UI's Test button: one jobs/list call, with the reason (never the token) on failure."""
        try:
            self._call(api.LIST_JOBS, params={"limit": 1})
        except Exception as exc:  # the button shows any failure, whatever its kind
            return False, self._scrub(str(exc) or type(exc).__name__)
        return True, f"Connected to {self.host_url}: the Jobs API answered."

    # ------------------------------------------------------------------ async API

    async def a_get_run(self, run_id: int, *, include_history: bool = False) -> api.Run:
        params = {"run_id": run_id, "include_history": include_history or None}
        first = await self._acall(api.GET_RUN, params=params)
        pages = 1
        while first.get("next_page_token") and pages < MAX_PAGES:
            page = await self._acall(api.GET_RUN, params={**params, "page_token": first["next_page_token"]})
            first = _merge_run_page(first, page)
            pages += 1
        id_in(first, "run_id", api.GET_RUN)
        return api.Run.from_dict(first)

    async def a_get_run_state(self, run_id: int) -> api.RunState:
        return api.RunState.from_dict(await self._acall(api.GET_RUN, params={"run_id": run_id}))

    async def a_get_run_output(self, run_id: int) -> dict[str, Any]:
        return await self._acall(api.GET_RUN_OUTPUT, params={"run_id": run_id})

    async def a_cancel_run(self, run_id: int) -> None:
        await self._acall(api.CANCEL_RUN, body={"run_id": run_id})


# ---------------------------------------------------------------------- helpers


def _same_name(job: Mapping[str, Any], name: str) -> bool:
    # The API's name filter is exact but case-insensitive; agree with it, and guard against a
    # server that ignores the filter.
    return str((job.get("settings") or {}).get("name", "")).casefold() == name.casefold()


def _merge_run_page(run: dict[str, Any], page: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(run)
    for name in _PAGED_RUN_FIELDS:
        if page.get(name):
            merged[name] = [*merged.get(name, ()), *page[name]]
    merged["next_page_token"] = page.get("next_page_token")
    return merged


async def close_sessions() -> None:
    """Close the running loop's shared aiohttp sessions now. ``asyncio.run`` and
    ``asyncio.Runner`` do it when the loop shuts down; call it before closing a loop by hand."""
    await SESSIONS.close_loop_sessions()
