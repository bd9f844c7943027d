"""Per-job concurrency: a new job run starts now, waits QUEUED for a free slot, or is SKIPPED.

A job allows ``max_concurrent_runs`` active runs (default 1, 0 skips every new run). Beyond
that a run is queued when queueing is on (the run-now's ``queue`` over the job's ``queue``;
off when neither says), else skipped with MAXIMUM_CONCURRENT_RUNS_REACHED. Queued runs
start first in, first out, when an active run ends; a cancel frees its slot at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_dbx.emulator.states import Outcome, concurrency_skipped

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_dbx.emulator.model import RunRecord

DEFAULT_MAX_CONCURRENT_RUNS = 1


@dataclass(frozen=True)
class Admission:
    """When a new run's plan starts, and whether it waits QUEUED until then or is skipped."""

    start: float
    queued: bool = False
    skipped: Outcome | None = None


def limit_of(settings: Mapping[str, Any]) -> int:
    value = settings.get("max_concurrent_runs")
    return DEFAULT_MAX_CONCURRENT_RUNS if value is None else int(value)


def _slot(ends: list[float], limit: int, now: float) -> float:
    """The moment fewer than ``limit`` of the runs ending at ``ends`` are still active."""
    if len(ends) < limit:
        return now
    return sorted(ends)[len(ends) - limit]


def admit(active: list[RunRecord], settings: Mapping[str, Any], queue: bool | None, now: float) -> Admission:
    """``active``: the job's runs not yet terminal (queued ones included), oldest first."""
    limit = limit_of(settings)
    if len(active) < limit:
        return Admission(now)
    if queue is None:
        queue = bool((settings.get("queue") or {}).get("enabled"))
    if not queue or limit == 0:
        return Admission(now, skipped=concurrency_skipped(limit))
    return Admission(_slot([r.current.end for r in active], limit, now), queued=True)


def requeue(active: list[RunRecord], settings: Mapping[str, Any], now: float) -> None:
    """Move queued runs forward after a run ahead of them ended early."""
    limit = limit_of(settings)
    live = [r for r in active if not r.is_terminal(now)]
    ends = [r.current.end for r in live if r.current.queued_until <= now]
    for run in live:
        epoch = run.current
        if epoch.queued_until <= now:
            continue
        start = _slot(ends, limit, now)
        if start < epoch.queued_until:
            epoch.shift(start - epoch.queued_until)
            run.cache.clear()
        ends.append(epoch.end)
