"""The two transports: perform a plan's effects with requests (blocking) or aiohttp (async).

Everything a request means is decided in ``exchange.py``; a driver only sends, sleeps and
asks auth for headers, and turns its library's exceptions into a :class:`NoReply`.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import ssl
import time
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import requests

from airflow_dbx.waiting import Plan, Sleep

from .exchange import Authorize, NoReply, Reply, Request
from .pacing import PACING
from .pool import SESSIONS
from .retry import parse_retry_after

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .settings import Settings

T = TypeVar("T")
log = logging.getLogger("airflow_dbx.hook")


_DONE: Any = object()


def _advance(plan: Plan[T], result: Any = None, error: BaseException | None = None) -> tuple[Any, Any]:
    """Hand ``plan`` an effect's result (or raise its ``error`` inside the plan, where the
    retry policy sees it): (the next effect, None), or (_DONE, the plan's return value)."""
    try:
        return (plan.throw(error) if error is not None else plan.send(result)), None
    except StopIteration as done:
        return _DONE, done.value


def _perform(perform: Callable[[Any], Any], effect: Any) -> tuple[Any, BaseException | None]:
    try:
        return perform(effect), None
    except Exception as exc:
        return None, exc


async def _aperform(perform: Callable[[Any], Awaitable[Any]], effect: Any) -> tuple[Any, BaseException | None]:
    try:
        return await perform(effect), None
    except Exception as exc:
        return None, exc


def drive(plan: Plan[T], perform: Callable[[Any], Any]) -> T:
    """Run ``plan`` to its end, performing each effect with ``perform``."""
    effect, value = _advance(plan)
    while effect is not _DONE:
        effect, value = _advance(plan, *_perform(perform, effect))
    return value  # type: ignore[no-any-return]


async def adrive(plan: Plan[T], perform: Callable[[Any], Awaitable[Any]]) -> T:
    # drive(), awaiting each effect's performance.
    effect, value = _advance(plan)
    while effect is not _DONE:
        effect, value = _advance(plan, *await _aperform(perform, effect))
    return value  # type: ignore[no-any-return]


class ServerClock:
    """How far the workspace's clock is from this machine's, narrowed down by the ``Date``
    headers of its answers.

    An answer dated second ``D`` was written while this machine's clock read between the
    request's sending and the answer's arrival, so the workspace is ahead by at least
    ``D - arrived`` and at most ``D + 1 - sent`` seconds. Each answer narrows that interval;
    one that does not fit it (a clock was set) starts it afresh.
    """

    def __init__(self) -> None:
        self.low = self.high = math.nan  # seconds ahead at least / at most; NaN: no dated answer yet
        self._date, self._second = "", 0.0  # the latest header read, and its epoch second

    def saw(self, date: str | None, sent: float, arrived: float) -> None:
        if not date:
            return
        if date != self._date:  # answers within one second share a header: read it once
            try:
                self._second = email.utils.parsedate_to_datetime(date).timestamp()
            except (TypeError, ValueError):
                return
            self._date = date
        low, high = self._second - arrived, self._second + 1.0 - sent
        if not low <= self.high or not high >= self.low:  # the first, or one that does not fit
            self.low, self.high = low, high
        else:
            self.low, self.high = max(low, self.low), min(high, self.high)

    def earliest(self, local: float) -> float | None:
        """The earliest the workspace's clock can have read when this machine's read ``local``;
        None while no answer was dated."""
        return None if math.isnan(self.low) else local + self.low


class _Driver:
    """Performs an effect with the handler of its type."""

    handlers: dict[type, Callable[[Any], Any]]

    def perform(self, effect: Any) -> Any:
        return self.handlers[type(effect)](effect)


def _no_reply(exc: BaseException) -> NoReply:
    if isinstance(exc, (requests.exceptions.SSLError, aiohttp.ClientSSLError, ssl.SSLError)):
        kind = "tls"
    elif isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, aiohttp.InvalidURL)):
        kind = "url"
    elif isinstance(exc, (requests.Timeout, asyncio.TimeoutError)):
        kind = "timeout"
    else:
        kind = "connection"
    return NoReply(kind, f"{type(exc).__name__}: {exc}"[:400])


def _logged(request: Request, status: int, started: float) -> None:
    log.debug("%s %s -> HTTP %s in %.3fs", request.method, request.label, status, time.monotonic() - started)


class RequestsDriver(_Driver):
    """Blocking effects, through one requests session."""

    def __init__(self, session: requests.Session, settings: Settings, clock: ServerClock) -> None:
        self.session = session
        self.clock = clock
        # Per request, not on the session: requests lets REQUESTS_CA_BUNDLE and *_PROXY
        # variables override a session's own verify and proxies, but not a request's.
        self.options: dict[str, Any] = {
            "timeout": settings.timeout, "verify": settings.verify, "proxies": dict(settings.proxies)
        }
        self.handlers = {
            Request: self.send,
            Authorize: lambda effect: effect.auth.headers(),
            Sleep: lambda effect: time.sleep(effect.seconds),
        }

    def send(self, request: Request) -> Reply | NoReply:
        started, sent = time.monotonic(), time.time()
        try:
            response = self.session.request(
                request.method, request.url, params=request.params, json=request.json, data=request.form,
                headers=request.headers, **self.options,
            )
        except requests.RequestException as exc:
            return _no_reply(exc)
        _logged(request, response.status_code, started)
        self.clock.saw(response.headers.get("Date"), sent, time.time())
        return Reply(response.status_code, response.content, response.headers.get("Retry-After"))


class AiohttpDriver(_Driver):
    """Async effects, through the process-wide session of the workspace; token fetches run
    in a thread (``Auth.aheaders``), so the event loop never blocks."""

    def __init__(self, settings: Settings, clock: ServerClock) -> None:
        self.settings = settings
        self.clock = clock
        self.timeout = aiohttp.ClientTimeout(total=settings.timeout)
        self.handlers = {  # each returns an awaitable
            Request: self.send,
            Authorize: lambda effect: effect.auth.aheaders(),
            Sleep: lambda effect: asyncio.sleep(effect.seconds),
        }

    async def send(self, request: Request) -> Reply | NoReply:
        session = await SESSIONS.get(self.settings.base_url, self.settings.verify)
        await PACING.wait(self.settings.base_url, request.label)  # under the workspace's limits
        started, sent = time.monotonic(), time.time()
        try:
            async with session.request(
                request.method, request.url, params=request.params, json=request.json, data=request.form,
                headers=request.headers, timeout=self.timeout, proxy=self.settings.proxy_for(request.url),
            ) as response:
                content = await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return _no_reply(exc)
        _logged(request, response.status, started)
        self.clock.saw(response.headers.get("Date"), sent, time.time())
        retry_after = response.headers.get("Retry-After")
        if response.status == 429:  # every waiter on this endpoint holds off, not just this one
            PACING.throttled(self.settings.base_url, request.label, parse_retry_after(retry_after))
        return Reply(response.status, content, retry_after)

