"""_http.retry: Retry-After parsing and the jittered, capped backoff."""

from __future__ import annotations

import email.utils
import time

import tenacity

from airflow_dbx._http import retry


def test_retry_after_forms() -> None:
    now = time.time()
    assert retry.parse_retry_after("2") == 2.0
    assert retry.parse_retry_after("0.5") == 0.5
    assert retry.parse_retry_after("-3") == 0.0
    assert retry.parse_retry_after("86400") == retry.RETRY_AFTER_CAP_SECONDS
    in_ten = email.utils.formatdate(now + 10, usegmt=True)
    assert 8.5 <= (retry.parse_retry_after(in_ten, now=now) or 0) <= 10
    assert retry.parse_retry_after("soon") is None
    assert retry.parse_retry_after(None) is None


def test_backoff_is_exponential_with_full_jitter() -> None:
    wait = retry.RetryAfterOrBackoff(1.0)
    state = tenacity.RetryCallState(retry_object=tenacity.Retrying(), fn=None, args=(), kwargs={})
    for attempt, ceiling in [(1, 1.0), (3, 4.0), (12, retry.BACKOFF_CAP_SECONDS)]:
        state.attempt_number = attempt
        samples = [wait(state) for _ in range(200)]
        assert all(0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling / 2  # spread over the range, not pinned to it
