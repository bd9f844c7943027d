"""OAuth tokens: one cache per process for both transports, refreshed shortly before they expire."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow.sdk.log import mask_secret

from airflow_dbx.errors import DatabricksError

# Refresh a cached token this long before it expires (or at 3/4 of a shorter lifetime),
# so a request never leaves with a token that dies in flight.
REFRESH_MARGIN_SECONDS = 60.0
DEFAULT_TOKEN_LIFETIME = 3600.0

# (url, form fields, basic-auth pair or None) -> the token endpoint's JSON answer.
TokenFetcher = Callable[[str, Mapping[str, str], "tuple[str, str] | None"], Mapping[str, Any]]


@dataclass(frozen=True)
class TokenRequest:
    """One OAuth client-credentials request; ``key`` identifies its token in the cache."""

    url: str
    form: Mapping[str, str] = field(repr=False)
    basic_auth: tuple[str, str] | None = field(default=None, repr=False)
    key: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Token:
    value: str = field(repr=False)
    refresh_at: float


class TokenCache:
    """Tokens per (endpoint, client, audience), shared by every hook in the process.

    One lock per key makes concurrent callers (threads, or asyncio tasks whose fetch runs
    in a thread) wait for the one fetch in progress instead of each starting their own.
    """

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, ...], _Token] = {}
        self._locks: dict[tuple[str, ...], threading.Lock] = {}
        self._guard = threading.Lock()

    def peek(self, request: TokenRequest) -> str | None:
        """The cached token if it is still fresh; never does I/O."""
        token = self._tokens.get(request.key)
        if token is not None and time.monotonic() < token.refresh_at:
            return token.value
        return None

    def get(self, request: TokenRequest, fetch: TokenFetcher) -> str:
        value = self.peek(request)
        if value is not None:
            return value
        with self._guard:
            lock = self._locks.setdefault(request.key, threading.Lock())
        with lock:
            value = self.peek(request)  # another caller may have fetched while we waited
            if value is not None:
                return value
            started = time.monotonic()
            answer = fetch(request.url, request.form, request.basic_auth)
            value, lifetime = _parse_token_answer(answer, request.url)
            mask_secret(value)
            margin = min(REFRESH_MARGIN_SECONDS, lifetime / 4)
            self._tokens[request.key] = _Token(value, started + lifetime - margin)
            return value

    def invalidate(self, request: TokenRequest, value: str) -> bool:
        """Forget the token if it is still ``value``; a newer one (fetched by a concurrent
        caller after the same 401) is kept, so a burst of 401s costs one refresh."""
        with self._guard:
            token = self._tokens.get(request.key)
            if token is not None and token.value == value:
                del self._tokens[request.key]
                return True
        return False

    def clear(self) -> None:
        with self._guard:
            self._tokens.clear()


TOKEN_CACHE = TokenCache()


def _parse_token_answer(answer: Mapping[str, Any], url: str) -> tuple[str, float]:
    value = answer.get("access_token")
    if not isinstance(value, str) or not value:
        raise DatabricksError(f"the token endpoint {url} answered without an access_token")
    try:
        # Azure AD v1 sends expires_in as a string; v2 and Databricks as a number.
        lifetime = float(answer.get("expires_in", DEFAULT_TOKEN_LIFETIME))
    except (TypeError, ValueError):
        lifetime = DEFAULT_TOKEN_LIFETIME
    return value, max(lifetime, 1.0)
