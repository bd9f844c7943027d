"""The one retry policy of both transports: which failures to retry, how long to wait, when to stop."""

from __future__ import annotations

import email.utils
import logging
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import tenacity

from airflow_dbx.errors import DatabricksApiError, TransientApiError

if TYPE_CHECKING:
    from collections.abc import Mapping

log = logging.getLogger("airflow_dbx.hook")

RETRY_AFTER_CAP_SECONDS = 60.0
BACKOFF_CAP_SECONDS = 15.0
RETRY_TOTAL_SECONDS = 600.0  # no request keeps retrying longer than this, whatever retry_limit says


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


class RetryAfterOrBackoff(tenacity.wait.wait_base):
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
        if isinstance(exc, TransientApiError) and exc.retry_after is not None:
            return max(exc.retry_after * random.uniform(1.0, 1.5), backoff)
        return backoff


def log_retry(state: tenacity.RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    # Throttling is expected under load: keep it out of the task log unless debugging.
    level = logging.DEBUG if isinstance(exc, DatabricksApiError) and exc.throttled else logging.WARNING
    log.log(level, "Attempt %d failed (%s); retrying in %.1fs", state.attempt_number, exc, wait)


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts per request and the backoff base; ``overrides`` (tenacity arguments) replace any part."""

    limit: int = 3
    delay: float = 1.0
    overrides: Mapping[str, Any] | None = None

    def controller(self) -> tenacity.Retrying:
        """A fresh tenacity controller for one request (built only once a first attempt failed)."""
        policy: dict[str, Any] = dict(
            stop=tenacity.stop_after_attempt(self.limit) | tenacity.stop_after_delay(RETRY_TOTAL_SECONDS),
            wait=RetryAfterOrBackoff(self.delay),
            retry=tenacity.retry_if_exception_type(TransientApiError),
            before_sleep=log_retry,
            reraise=True,
        )
        policy.update(self.overrides or {})
        controller = tenacity.Retrying(**policy)
        controller.begin()
        return controller


def exhausted(exc: BaseException, controller: tenacity.BaseRetrying) -> BaseException:
    """The error to raise once retrying is over: the last failure, as a plain
    DatabricksApiError that counts the attempts made."""
    last = exc.last_attempt.exception() if isinstance(exc, tenacity.RetryError) else exc
    attempts = int(controller.statistics.get("attempt_number", 1))
    if isinstance(last, DatabricksApiError):
        return last.after(attempts)
    return last or exc
