"""The hook's HTTP plumbing, shared by its two transports: host rules, answer classification,
the retry policy and the process-wide pool of aiohttp sessions. No Airflow imports."""

from __future__ import annotations

import asyncio
import atexit
import email.utils
import ipaddress
import json
import os
import random
import re
import ssl
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import certifi
import requests
import tenacity

from airflow_dbx.api import API_PREFIX, DatabricksApiError, Endpoint, is_retryable
from airflow_dbx.auth import InvalidConnectionError

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable, Iterable

RETRY_AFTER_CAP_SECONDS = 60.0
BACKOFF_CAP_SECONDS = 15.0
RETRY_TOTAL_SECONDS = 600.0  # no request keeps retrying longer than this, whatever retry_limit says
MAX_CONNECTIONS_PER_HOST = 32  # per event loop: every hook polling one workspace shares them
BODY_PREVIEW = 200
DEFAULT_TIMEOUT_SECONDS = 30.0
_LOOPBACK_NAMES = frozenset({"localhost"})
_URL_USERINFO = re.compile(r"(://)[^/@\s]+@")


# ---------------------------------------------------------------------- host


def parse_host(raw: str | None, port: int | None = None) -> str:
    """``https://host[:port]`` from a connection's host (and port), or InvalidConnectionError.

    Accepts a bare host, ``https://host``, a port in either place, one trailing slash.
    Refuses paths, queries, credentials in the URL, other schemes, and ``http://`` to any
    host that is not loopback, where a token would cross a network in clear.
    """
    text = (raw or "").strip()
    if not text:
        raise InvalidConnectionError(
            "no host: set Host to the workspace URL, e.g. https://adb-1234.5.azuredatabricks.net"
        )
    if "://" not in text:
        text = f"https://{text}"
    try:
        parts = urlsplit(text)
        url_port = parts.port
    except ValueError as exc:
        raise InvalidConnectionError(f"host {_safe(text)!r} is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise InvalidConnectionError(f"host scheme {parts.scheme!r} is not supported: use https://")
    if parts.username is not None or parts.password is not None:
        raise InvalidConnectionError("host must not carry credentials (user@host): put them in Login/Password")
    if not parts.hostname:
        raise InvalidConnectionError(f"host {_safe(text)!r} names no server")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        extra = (
            parts.path + (f"?{parts.query}" if parts.query else "") + (f"#{parts.fragment}" if parts.fragment else "")
        )
        raise InvalidConnectionError(
            f"host must be the workspace URL without a path or query, got {extra!r} after the host name: "
            f"use {scheme}://{parts.netloc}"
        )
    if port is not None and url_port is not None and int(port) != url_port:
        raise InvalidConnectionError(f"the host says port {url_port} but the Port field says {port}: give one")
    final_port = url_port if url_port is not None else port
    if final_port is not None and not 0 < int(final_port) < 65536:
        raise InvalidConnectionError(f"port {final_port} is out of range")
    hostname = parts.hostname.lower()
    _check_hostname(hostname)
    if scheme == "http" and not _is_loopback(hostname):
        raise InvalidConnectionError(
            f"plain http:// is refused for {hostname}: the token would cross the network unencrypted; "
            "use https:// (http is allowed only for loopback hosts such as 127.0.0.1, ::1 or localhost)"
        )
    netloc = f"[{hostname}]" if ":" in hostname else hostname
    return f"{scheme}://{netloc}" + (f":{int(final_port)}" if final_port is not None else "")


def _check_hostname(hostname: str) -> None:
    # urlsplit takes almost anything as a host; refuse what requests would choke on later
    # (a bare urllib3 error) or silently reinterpret (a backslash becomes part of the path).
    if ":" in hostname:
        try:
            ipaddress.IPv6Address(hostname)
        except ValueError:
            raise InvalidConnectionError(f"Host '{hostname}' is not a valid IPv6 address") from None
        return
    for char in hostname:
        if not (char.isalnum() or char in "-._"):
            raise InvalidConnectionError(f"Host '{hostname}' contains invalid character '{char}'")
    labels = hostname.removesuffix(".").split(".")
    if "" in labels or any(len(label) > 63 for label in labels):
        raise InvalidConnectionError(f"Host '{hostname}' has an empty or over-long label between its dots")


def _is_loopback(hostname: str) -> bool:
    if hostname in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def _safe(text: str) -> str:
    # A malformed host might still hold user:secret@; never echo that part.
    return text.rsplit("@", 1)[-1]


def host_of_url(url: str) -> str:
    return urlsplit(url).netloc


# ---------------------------------------------------------------------- answers


class Transient(DatabricksApiError):
    """A failure worth another attempt; ``retry_after`` is the server's requested wait."""

    def __init__(self, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.retry_after = retry_after


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_SECONDS)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` without any of ``secrets``, nor the password of any URL in it (e.g. a proxy's)."""
    text = _URL_USERINFO.sub(r"\1***@", text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def answer_of(
    method: str,
    endpoint: str,
    status: int,
    content: bytes,
    *,
    retry_after: str | None,
    scrubber: Callable[[str], str],
) -> dict[str, Any]:
    """The JSON object of a 2xx answer, or the DatabricksApiError (Transient if retryable) it means."""
    text = content.decode("utf-8", "replace").strip()
    data: Any = None
    problem = ""
    if not text:
        problem = "an empty body"
    else:
        try:
            data = json.loads(text)
        except ValueError:
            problem = f"a non-JSON body: {text[:BODY_PREVIEW]}"
        else:
            if not isinstance(data, dict):
                problem = f"a JSON {type(data).__name__} instead of an object: {text[:BODY_PREVIEW]}"
    if 200 <= status < 300:
        if isinstance(data, dict):
            return data
        if not text:
            return {}  # cancel and friends answer with nothing worth reading
        raise DatabricksApiError(method=method, endpoint=endpoint, status_code=status, message=scrubber(problem))
    error_code = message = None
    if isinstance(data, dict):
        # Databricks says error_code/message; OAuth token endpoints say error/error_description.
        error_code = data.get("error_code") or data.get("error")
        message = data.get("message") or data.get("error_description")
        error_code = str(error_code) if error_code else None
    message = scrubber(str(message) if message else (problem or text[:BODY_PREVIEW]))
    kwargs: dict[str, Any] = dict(
        method=method, endpoint=endpoint, status_code=status, error_code=error_code, message=message
    )
    if is_retryable(status, error_code):
        raise Transient(retry_after=parse_retry_after(retry_after), **kwargs)
    raise DatabricksApiError(**kwargs)


def transport_error(method: str, url: str, exc: BaseException, scrubber: Callable[[str], str]) -> DatabricksApiError:
    """The error a failed exchange (no HTTP answer) means: TLS failures are final, the rest transient."""
    endpoint = urlsplit(url).path
    detail = scrubber(f"{type(exc).__name__}: {exc}")[: BODY_PREVIEW * 2]
    if isinstance(exc, (requests.exceptions.SSLError, aiohttp.ClientSSLError, ssl.SSLError)):
        return DatabricksApiError(
            method=method,
            endpoint=endpoint,
            status_code=None,
            message=f"TLS error talking to {host_of_url(url)} (point the extra ca_bundle at the CA that signed "
            f"its certificate if it is private): {detail}",
        )
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, aiohttp.InvalidURL)):
        return DatabricksApiError(method=method, endpoint=endpoint, status_code=None, message=detail)
    what = "timed out" if isinstance(exc, (requests.Timeout, asyncio.TimeoutError)) else "connection failed"
    return Transient(method=method, endpoint=endpoint, status_code=None, message=f"{what}: {detail}")


# ---------------------------------------------------------------------- retry policy


class _RetryAfterOrBackoff(tenacity.wait.wait_base):
    """Exponential backoff with full jitter, never shorter than the server's Retry-After.

    Retry-After is a floor, not the whole answer: a thousand waiters told "1 s" would all come
    back together and keep the workspace over its limit; the growing, jittered backoff spreads
    them until the request rate settles under it.
    """

    def __init__(self, base: float) -> None:
        self.base = base

    def __call__(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        ceiling = min(BACKOFF_CAP_SECONDS, self.base * 2 ** (state.attempt_number - 1))
        backoff = random.uniform(0, ceiling)
        if isinstance(exc, Transient) and exc.retry_after is not None:
            return max(exc.retry_after * random.uniform(1.0, 1.5), backoff)
        return backoff


def retry_policy(
    limit: int,
    delay: float,
    overrides: Mapping[str, Any] | None,
    before_sleep: Callable[[tenacity.RetryCallState], None],
) -> dict[str, Any]:
    """tenacity arguments for one request; the user's ``retry_args`` replace any of them."""
    policy: dict[str, Any] = dict(
        stop=tenacity.stop_after_attempt(limit) | tenacity.stop_after_delay(RETRY_TOTAL_SECONDS),
        wait=_RetryAfterOrBackoff(delay),
        retry=tenacity.retry_if_exception_type(Transient),
        before_sleep=before_sleep,
        reraise=True,
    )
    policy.update(overrides or {})
    return policy


# ---------------------------------------------------------------------- settings and retries


def query_params(params: Mapping[str, Any] | None) -> dict[str, str] | None:
    """Query parameters as the API spells them: no Nones, booleans in lower case."""
    if not params:
        return None
    return {
        k: ("true" if v else "false") if isinstance(v, bool) else str(v) for k, v in params.items() if v is not None
    }


def timeout_from_extras(extras: Mapping[str, Any]) -> float:
    raw = extras.get("timeout_seconds")
    if raw in (None, ""):
        return DEFAULT_TIMEOUT_SECONDS
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = 0.0
    if not value > 0:
        raise InvalidConnectionError(f"timeout_seconds must be a positive number of seconds, got {raw!r}")
    return value


def proxies_from_extras(extras: Mapping[str, Any]) -> dict[str, str]:
    raw = extras.get("proxies")
    if raw in (None, "", {}):
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raw = None
    if not isinstance(raw, Mapping):
        raise InvalidConnectionError('proxies must be a JSON object such as {"https": "http://proxy:3128"}')
    return {str(k): str(v) for k, v in raw.items()}


def extras_of(raw: str | None) -> dict[str, Any]:
    """A connection's extras; an Extra that is not a JSON object is an error, not ``{}``."""
    if not raw or not raw.strip():
        return {}
    try:
        extras = json.loads(raw)
    except ValueError as exc:
        # Its text may hold secrets: say where it breaks, never what it says.
        where = f"{getattr(exc, 'msg', exc)} at position {getattr(exc, 'pos', '?')}"
        raise InvalidConnectionError(f"the connection's extra is not valid JSON ({where})") from None
    if not isinstance(extras, dict):
        raise InvalidConnectionError(f"the connection's extra must be a JSON object, got a {type(extras).__name__}")
    return extras


def id_in(answer: Mapping[str, Any], key: str, endpoint: Endpoint) -> int:
    """``answer[key]`` as an int, or an error that says the API's answer lacked it."""
    value = answer.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit():
        preview = json.dumps(answer)[:BODY_PREVIEW]
        raise DatabricksApiError(
            method=endpoint.method,
            endpoint=API_PREFIX + endpoint.path,
            status_code=200,
            message=f"the answer has no {key}: {preview}",
        )
    return int(value)


def exhausted(exc: BaseException, controller: tenacity.BaseRetrying) -> DatabricksApiError:
    """The error to raise once retrying is over: the last failure, as a plain
    DatabricksApiError that counts the attempts made."""
    last = exc.last_attempt.exception() if isinstance(exc, tenacity.RetryError) else exc
    attempts = int(controller.statistics.get("attempt_number", 1))
    if not isinstance(last, DatabricksApiError):
        return DatabricksApiError(method="?", endpoint="?", status_code=None, message=str(last), attempts=attempts)
    if type(last) is DatabricksApiError and last.attempts == attempts:
        return last
    return DatabricksApiError(
        method=last.method,
        endpoint=last.endpoint,
        status_code=last.status_code,
        error_code=last.error_code,
        message=last.message,
        attempts=attempts,
    )


# ---------------------------------------------------------------------- aiohttp sessions


class _LoopSessions:
    def __init__(self) -> None:
        self.sessions: dict[tuple[str, bool | str], aiohttp.ClientSession] = {}
        self.closer: AsyncGenerator[None, None] | None = None


def default_ca_file() -> str:
    """The CA bundle requests would use, so both transports trust the same authorities."""
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()


class SessionPool:
    """One aiohttp session per (event loop, workspace, TLS setting), shared process-wide.

    Each loop's sessions are closed when the loop shuts down: an async generator started on
    the loop is finalised by ``loop.shutdown_asyncgens()``, which ``asyncio.run`` and
    ``asyncio.Runner`` (so the triggerer and pytest-asyncio) call before closing the loop.
    Loops closed some other way are cleaned up at interpreter exit.
    """

    def __init__(self) -> None:
        self._loops: dict[asyncio.AbstractEventLoop, _LoopSessions] = {}
        self._contexts: dict[bool | str, ssl.SSLContext | bool] = {}
        self._lock = threading.Lock()

    async def get(self, base_url: str, verify: bool | str) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        entry = self._loops.get(loop)
        if entry is None:
            with self._lock:
                entry = self._loops.setdefault(loop, _LoopSessions())
            if entry.closer is None:
                # Held here because the loop keeps only a weak reference to its async generators.
                entry.closer = self._close_at_shutdown(loop, entry)
                await entry.closer.__anext__()
        session = entry.sessions.get((base_url, verify))
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=MAX_CONNECTIONS_PER_HOST, limit_per_host=MAX_CONNECTIONS_PER_HOST, ssl=self._ssl(verify)
            )
            session = aiohttp.ClientSession(connector=connector)
            entry.sessions[(base_url, verify)] = session
        return session

    def _ssl(self, verify: bool | str) -> ssl.SSLContext | bool:
        if verify is False:
            return False
        with self._lock:
            if verify not in self._contexts:
                cafile = verify if isinstance(verify, str) else default_ca_file()
                self._contexts[verify] = ssl.create_default_context(cafile=cafile)
            return self._contexts[verify]

    async def _close_at_shutdown(
        self, loop: asyncio.AbstractEventLoop, entry: _LoopSessions
    ) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            await self._close_all(entry)
            self._loops.pop(loop, None)

    async def close_loop_sessions(self) -> None:
        """Close the running loop's sessions now; a later request opens a new one."""
        entry = self._loops.get(asyncio.get_running_loop())
        if entry is not None:
            await self._close_all(entry)

    def session_count(self, loop: asyncio.AbstractEventLoop) -> int:
        entry = self._loops.get(loop)
        return len(entry.sessions) if entry else 0

    @staticmethod
    async def _close_all(entry: _LoopSessions) -> None:
        current = list(entry.sessions.values())
        entry.sessions.clear()
        for session in current:
            await session.close()

    def close_at_exit(self) -> None:
        for loop, entry in list(self._loops.items()):
            if entry.closer is None:
                continue
            if not loop.is_closed() and not loop.is_running():
                loop.run_until_complete(entry.closer.aclose())
                continue
            # The loop is gone and its sockets with it: mark the sessions closed so no
            # "Unclosed client session" warning fires while the interpreter shuts down,
            # then finish the generator by hand (nothing in it awaits once they are gone).
            for session in entry.sessions.values():
                connector = session.connector
                session.detach()
                if connector is not None:
                    connector._close()
            entry.sessions.clear()
            finish = entry.closer.aclose()
            try:
                finish.send(None)
            except StopIteration:
                pass
            else:
                finish.close()


SESSIONS = SessionPool()
atexit.register(SESSIONS.close_at_exit)
