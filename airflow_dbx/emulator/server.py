"""``Emulator``: the app served from a background thread with its own event loop."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aiohttp import web

from airflow_dbx.emulator.app import RequestRecord, State, make_app
from airflow_dbx.emulator.auth import Client
from airflow_dbx.emulator.errors import ApiError

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from airflow_dbx.emulator.sql_statements import SqlService

DEFAULT_TOKEN = "dapi-emulator-token"


class Emulator:
    """A local Databricks Jobs API; a context manager that serves it on 127.0.0.1 while open.

    Every method is safe to call from any thread while the server runs.
    """

    def __init__(
        self,
        time_scale: float = 1.0,
        token: str = DEFAULT_TOKEN,
        port: int = 0,
        host: str = "127.0.0.1",
        *,
        clock: Callable[[], float] | None = None,
        cancel_terminating_seconds: float | None = None,
        rate_limits: str | None = None,
    ) -> None:
        """``clock`` (epoch seconds, default ``time.time``) lets a test step run life cycles by hand;
        ``rate_limits`` names a preset of per-endpoint limits (``"databricks"``: the documented ones)."""
        self._state = State(time_scale, clock)
        if rate_limits is not None:
            self._state.faults.set_rate_limit_preset(rate_limits)
        if cancel_terminating_seconds is not None:
            self.cancel_terminating_seconds = cancel_terminating_seconds
        self._state.credentials.pats.add(token)
        self.token = token
        self._bind = (host, port)
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopped: asyncio.Event | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Emulator:
        if self._thread is not None:
            raise RuntimeError("the emulator is already running")
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._serve, args=(ready, failure), name="dbx-emulator", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the emulator did not start within 10 seconds")
        if failure:
            self._thread.join(5)
            self._thread = None
            raise failure[0]
        return self

    def _serve(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main(ready))
        except BaseException as exc:  # reported to start()
            failure.append(exc)
            ready.set()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _main(self, ready: threading.Event) -> None:
        self._stopped = asyncio.Event()
        self._runner = runner = web.AppRunner(
            make_app(self._state), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._bind[0], self._bind[1])
            await site.start()
            self._port = runner.addresses[0][1]
            self._state.engine.base_url = self.url
            ready.set()
            await self._stopped.wait()
        finally:
            await runner.cleanup()

    def stop(self) -> None:
        if self._thread is None or self._loop is None or self._stopped is None:
            return
        self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ addresses

    @property
    def host(self) -> str:
        return f"{self._bind[0]}:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def conn_uri(self, conn_type: str = "dbx") -> str:
        """An Airflow connection URI (for ``AIRFLOW_CONN_*``): host ``http://127.0.0.1``, the port, the token."""
        return f"{conn_type}://http://:{quote(self.token, safe='')}@{self.host}"

    def conn_json(self, conn_type: str = "dbx") -> str:
        """The JSON form of the same connection, host carrying scheme and port."""
        return json.dumps({"conn_type": conn_type, "host": self.url, "password": self.token})

    # ------------------------------------------------------------------ credentials

    def add_token(self, token: str) -> None:
        with self._state.lock:
            self._state.credentials.pats.add(token)

    def add_basic_user(self, user: str, password: str) -> None:
        with self._state.lock:
            self._state.credentials.add_basic_user(user, password)

    def add_oauth_client(self, client_id: str, secret: str, ttl_seconds: float = 3600) -> None:
        with self._state.lock:
            self._state.credentials.oauth_clients[client_id] = Client(secret, ttl_seconds)

    def add_azure_client(self, tenant: str, client_id: str, secret: str, ttl_seconds: float = 3600) -> None:
        with self._state.lock:
            self._state.credentials.azure_clients[(tenant, client_id)] = Client(secret, ttl_seconds)

    def expire_oauth_tokens(self) -> None:
        """Every token issued so far (OAuth and Azure) is refused from now on."""
        with self._state.lock:
            self._state.credentials.expire_issued()

    @property
    def sql(self) -> SqlService:
        """The SQL warehouses and statements (``sql_statements``); hold ``sql.lock`` while reading."""
        return self._state.sql

    def add_cluster(self, cluster_id: str) -> None:
        with self._state.lock:
            self._state.engine.clusters.add(cluster_id)

    # ------------------------------------------------------------------ workspace

    def create_job(self, settings: dict[str, Any], user: str = "emulator-user@example.com") -> int:
        with self._state.lock:
            try:
                return int(self._state.engine.jobs.create(settings, user)["job_id"])
            except ApiError as exc:
                raise ValueError(exc.message) from None

    def runs(self) -> list[dict[str, Any]]:
        with self._state.lock:
            return self._state.engine.snapshots()

    def run(self, run_id: int) -> dict[str, Any]:
        with self._state.lock:
            try:
                return self._state.engine.snapshot(run_id)
            except ApiError as exc:
                raise KeyError(exc.message) from None

    @property
    def requests(self) -> list[RequestRecord]:
        with self._state.lock:
            return list(self._state.log)

    @property
    def counters(self) -> dict[str, Any]:
        with self._state.lock:
            return self._state.counters()

    def reset(self) -> None:
        with self._state.lock:
            self._state.reset()

    @property
    def cancel_terminating_seconds(self) -> float:
        """How long a cancelled run (or task run) stays TERMINATING: clock seconds, not scaled."""
        return self._state.engine.cancel_terminating_seconds

    @cancel_terminating_seconds.setter
    def cancel_terminating_seconds(self, value: float) -> None:
        if value < 0:
            raise ValueError(f"cancel_terminating_seconds must not be negative, got {value!r}")
        with self._state.lock:
            self._state.engine.cancel_terminating_seconds = float(value)

    @property
    def time_scale(self) -> float:
        return self._state.engine.time_scale

    @time_scale.setter
    def time_scale(self, value: float) -> None:
        if value <= 0:
            raise ValueError(f"time_scale must be positive, got {value!r}")
        with self._state.lock:
            self._state.engine.time_scale = float(value)

    # ------------------------------------------------------------------ faults

    def fail_next(  # noqa: PLR0917 -- the documented positional signature
        self,
        method: str,
        path: str,
        count: int = 1,
        status: int = 503,
        retry_after: float | None = None,
        body: Any = None,
        *,
        retry_after_format: str = "seconds",
    ) -> None:
        """The next ``count`` matching requests are answered ``status`` (and ``Retry-After``) without effect.

        ``retry_after_format="http-date"`` sends Retry-After as the HTTP-date ``retry_after``
        seconds from now (RFC 7231) instead of a number of seconds.
        """
        self._add(
            "status",
            method,
            path,
            count,
            status=status,
            retry_after=retry_after,
            body=body,
            retry_after_format=retry_after_format,
        )

    def delay_next(self, method: str, path: str, count: int = 1, seconds: float = 2.0) -> None:
        """The next ``count`` matching requests are carried out ``seconds`` late."""
        self._add("delay", method, path, count, seconds=seconds)

    def drop_next(self, method: str, path: str, count: int = 1) -> None:
        """The next ``count`` matching requests get their connection closed, unanswered and without effect."""
        self._add("drop", method, path, count)

    def lose_response_next(self, method: str, path: str, count: int = 1, status: int | None = None) -> None:
        """The next ``count`` matching requests take effect, then the answer is lost (or replaced by ``status``)."""
        self._add("lose_response", method, path, count, status=status)

    def set_rate_limit(
        self,
        path: str | None,
        per_second: float | None,
        burst: float | None = None,
        *,
        retry_after_format: str = "seconds",
    ) -> None:
        """429 + Retry-After beyond ``per_second``; a ``None`` path means the whole workspace, a ``None`` rate off.

        ``retry_after_format="http-date"`` sends Retry-After as an HTTP-date (RFC 7231).
        """
        with self._state.lock:
            self._state.faults.set_rate_limit(path, per_second, burst, retry_after_format)

    def set_rate_limit_preset(self, name: str) -> None:
        """The per-endpoint limits of preset ``name`` (``"databricks"``: Databricks' documented ones)."""
        with self._state.lock:
            self._state.faults.set_rate_limit_preset(name)

    def clear_faults(self) -> None:
        with self._state.lock:
            self._state.faults.clear()

    def _add(self, kind: str, method: str, path: str, count: int, **params: Any) -> None:
        with self._state.lock:
            self._state.faults.add(kind, method, path, count, **params)
