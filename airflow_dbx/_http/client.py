"""ApiClient: one workspace's REST API over both transports, for the hook.

Requests are plans (``exchange.py``); :meth:`ApiClient.run` drives one with requests and
:meth:`ApiClient.arun` with aiohttp, so every API operation is written once.
"""

from __future__ import annotations

import base64
import threading
from typing import TYPE_CHECKING, Any, TypeVar

import requests

from airflow_dbx.auth import run_blocking

from .drivers import AiohttpDriver, RequestsDriver, ServerClock, adrive, drive
from .exchange import Answer, Request, attempt, exchange, query_params, scrub, send_once
from .settings import Settings, read_settings

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from airflow_dbx.models import Endpoint
    from airflow_dbx.waiting import Plan

    from .retry import RetryPolicy

T = TypeVar("T")


class ApiClient:
    """Settings read once from the Airflow connection, a requests session, the retry policy.

    ``connection`` returns the Airflow connection (a blocking call: the async path makes it
    in a thread the first time).
    """

    def __init__(self, connection: Callable[[], Any], policy: RetryPolicy, user_agent: str) -> None:
        self._connection = connection
        self.policy = policy
        self.user_agent = user_agent
        self._settings: Settings | None = None
        self._session: requests.Session | None = None
        self._lock = threading.Lock()
        self.server_clock = ServerClock()

    def settings(self) -> Settings:
        settings = self._settings
        if settings is None:
            settings = self._settings = read_settings(self._connection(), self.fetch_token)
        return settings

    async def asettings(self) -> Settings:
        if self._settings is not None:
            return self._settings
        return await run_blocking(self.settings)

    @property
    def session(self) -> requests.Session:
        with self._lock:
            if self._session is None:
                self._session = requests.Session()
            return self._session

    def scrub(self, text: str) -> str:
        """``text`` without any secret this client knows."""
        return scrub(text, self._settings.auth.secrets() if self._settings else ())

    def run(self, plan: Plan[T]) -> T:
        """``plan``'s result, its requests sent with requests (blocking)."""
        return drive(plan, RequestsDriver(self.session, self.settings(), self.server_clock).perform)

    async def arun(self, plan: Plan[T]) -> T:
        """``plan``'s result, its requests sent with aiohttp."""
        return await adrive(plan, AiohttpDriver(await self.asettings(), self.server_clock).perform)

    def call(
        self,
        endpoint: Endpoint,
        *,
        params: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
        policy: RetryPolicy | None = None,
        once: bool = False,
    ) -> Plan[Answer]:
        """The plan of one API request, retried as ``policy`` (by default the client's) says;
        ``once``: never resent, for a POST that has no idempotency token and must not take
        effect twice."""
        settings = self.settings()  # loaded by run() or arun() before any plan starts
        request = Request(
            endpoint.method,
            f"{settings.base_url}{endpoint.url_path}",
            endpoint.url_path,
            params=query_params(params),
            json=body,
            headers={"User-Agent": self.user_agent},
        )
        if once:
            return _once(request, settings, self.scrub)
        return exchange(request, settings.auth, policy or self.policy, self.scrub)

    def fetch_token(self, url: str, form: Mapping[str, str], basic_auth: tuple[str, str] | None) -> Mapping[str, Any]:
        """POST a token request, blocking (async callers are already in a thread): the auth
        modes' TokenFetcher, so token requests share the API's TLS, proxy and timeout settings."""
        headers = {"Accept": "application/json", "User-Agent": self.user_agent}
        if basic_auth:
            headers["Authorization"] = "Basic " + base64.b64encode(":".join(basic_auth).encode()).decode()
        return self.run(send_once(Request("POST", url, url, form=form, headers=headers), self.scrub))


def _once(request: Request, settings: Settings, scrubber: Callable[[str], str]) -> Plan[Answer]:
    return Answer((yield from attempt(request, settings.auth, scrubber)), throttled=False)
