"""Fault injection and rate limits, matched by method and API path (version prefix optional)."""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

from airflow_dbx.emulator.errors import DEFAULT_ERROR_CODES

KINDS = ("status", "delay", "drop", "lose_response")
RETRY_AFTER_FORMATS = ("seconds", "http-date")
_PREFIX = re.compile(r"^/*(api/2\.[0-9]/)?")


def normalise_path(path: str) -> str:
    """``/api/2.1/jobs/runs/get`` and ``jobs/runs/get`` both become ``jobs/runs/get``."""
    return _PREFIX.sub("", path.split("?", 1)[0]).rstrip("/")


@dataclass
class Fault:
    kind: str
    method: str
    path: str
    count: int
    status: int | None = None
    retry_after: float | None = None
    body: Any = None
    seconds: float = 0.0
    retry_after_format: str = "seconds"

    def matches(self, method: str, path: str) -> bool:
        return self.count > 0 and self.method in ("*", method) and self.path in ("*", path)

    def error_body(self) -> Any:
        if self.body is not None:
            return self.body
        status = self.status or 500
        return {
            "error_code": DEFAULT_ERROR_CODES.get(status, "INTERNAL_ERROR"),
            "message": f"Injected fault: HTTP {status}",
        }

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        if self.retry_after_format == "http-date":
            return {"Retry-After": retry_after_header(self.retry_after, "http-date")}
        return {"Retry-After": _seconds_header(self.retry_after)}


@dataclass
class Bucket:
    per_second: float
    burst: float
    tokens: float
    stamp: float
    retry_after_format: str = "seconds"

    def take(self, now: float) -> float:
        """0 when a request may pass, else the seconds until it could."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.per_second)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.per_second


# Per-workspace request limits Databricks documents for the Jobs API (resource limits page,
# "API rate limits": runs/get 100/s, runs/submit 35/s, run-now and jobs/create 20/s). The page
# lists no figure for runs/list; the preset assumes 30/s, the rate most unlisted APIs get.
RATE_LIMIT_PRESETS: dict[str, dict[str, float]] = {
    "databricks": {
        "jobs/runs/get": 100.0,
        "jobs/runs/submit": 35.0,
        "jobs/run-now": 20.0,
        "jobs/create": 20.0,
        "jobs/runs/list": 30.0,
    },
}


class Faults:
    def __init__(self) -> None:
        self.rules: list[Fault] = []
        self.limits: dict[str | None, Bucket] = {}
        self.injected: Counter[str] = Counter()

    @property
    def active(self) -> bool:
        return bool(self.rules or self.limits)

    def add(self, kind: str, method: str, path: str, count: int = 1, **params: Any) -> Fault:
        if kind not in KINDS:
            raise ValueError(f"fault kind must be one of {KINDS}, got {kind!r}")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError(f"count must be a positive integer, got {count!r}")
        _check_format(params.get("retry_after_format", "seconds"))
        status = params.get("status")
        if kind == "status" and (not isinstance(status, int) or not 100 <= status <= 599):
            raise ValueError(f"status must be an HTTP status code, got {status!r}")
        fault = Fault(kind, method.upper(), "*" if path == "*" else normalise_path(path), count, **params)
        self.rules.append(fault)
        return fault

    def set_rate_limit(self, path: str | None, per_second: float | None, burst: float | None, form: str) -> None:
        """A token bucket for ``path`` (None: every path); ``form`` says how Retry-After is written."""
        key = None if path is None else normalise_path(path)
        if not per_second:
            self.limits.pop(key, None)
            return
        if per_second < 0:
            raise ValueError(f"per_second must be positive, got {per_second!r}")
        _check_format(form)
        size = float(burst if burst is not None else max(1.0, per_second))
        self.limits[key] = Bucket(float(per_second), size, size, time.monotonic(), form)

    def set_rate_limit_preset(self, name: str) -> None:
        """Every per-endpoint limit of preset ``name`` (RATE_LIMIT_PRESETS), Retry-After in seconds."""
        if name not in RATE_LIMIT_PRESETS:
            raise ValueError(f"preset must be one of {sorted(RATE_LIMIT_PRESETS)}, got {name!r}")
        for path, per_second in RATE_LIMIT_PRESETS[name].items():
            self.set_rate_limit(path, per_second, None, "seconds")

    def take(self, method: str, path: str) -> Fault | None:
        """The first fault that matches, consumed by one."""
        for fault in self.rules:
            if fault.matches(method, path):
                fault.count -= 1
                if fault.count == 0:
                    self.rules.remove(fault)
                self.injected[fault.kind] += 1
                return fault
        return None

    def throttle(self, path: str) -> tuple[float, str]:
        """(0, _) when the request is within the rate limits, else the seconds to wait and how to say it."""
        now = time.monotonic()
        wait, form = 0.0, "seconds"
        for key in (path, None):
            bucket = self.limits.get(key)
            if bucket is not None and (need := bucket.take(now)) > wait:
                wait, form = need, bucket.retry_after_format
        if wait:
            self.injected["rate_limited"] += 1
        return wait, form

    def clear(self) -> None:
        self.rules.clear()
        self.limits.clear()

    def reset(self) -> None:
        self.clear()
        self.injected.clear()


def retry_after_header(wait: float, form: str = "seconds") -> str:
    """Whole seconds (at least 1), or the HTTP-date (RFC 7231, IMF-fixdate) no earlier than ``wait`` from now."""
    if form == "http-date":
        return formatdate(math.ceil(time.time() + wait), usegmt=True)
    return str(max(1, math.ceil(wait)))


def _check_format(form: Any) -> None:
    if form not in RETRY_AFTER_FORMATS:
        raise ValueError(f"retry_after_format must be one of {RETRY_AFTER_FORMATS}, got {form!r}")


def _seconds_header(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
