"""What runs/get shows as a run's or a task run's ``state`` and ``status``, and the outcomes a run can end with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

OK_RESULTS = frozenset({"SUCCESS", "EXCLUDED", "DISABLED"})
ROOT_FAILURES = ("FAILED", "TIMEDOUT", "CANCELED")
QUEUE_CODE = "MAX_CONCURRENT_RUNS_REACHED"

Phase = tuple[dict[str, Any], dict[str, Any]]


@dataclass(frozen=True)
class Outcome:
    """How a run or task run ended: legacy ``state`` and the 2.2 ``status`` in one place."""

    result: str
    message: str = ""
    code: str = "SUCCESS"
    kind: str = "SUCCESS"
    life_cycle: str = "TERMINATED"
    user_cancelled_or_timedout: bool = False

    def state(self) -> dict[str, Any]:
        return {
            "life_cycle_state": self.life_cycle,
            "result_state": self.result,
            "state_message": self.message,
            "user_cancelled_or_timedout": self.user_cancelled_or_timedout,
        }

    def status(self) -> dict[str, Any]:
        return {
            "state": "TERMINATED",
            "termination_details": {"code": self.code, "type": self.kind, "message": self.message},
        }


SUCCESS = Outcome("SUCCESS")
USER_CANCELED = Outcome(
    "CANCELED", "Run cancelled by user.", "USER_CANCELED", "CLIENT_ERROR", user_cancelled_or_timedout=True
)
DISABLED = Outcome("DISABLED", "The task is disabled.", "DISABLED", "SUCCESS", "SKIPPED")


def timed_out(seconds: float, result: str = "TIMEDOUT") -> Outcome:
    """A run's ``timeout_seconds`` passed: the run and its running task TIMEDOUT, waiting tasks CANCELED."""
    message = f"The run timed out after {seconds:g} seconds (timeout_seconds)."
    return Outcome(result, message, "CANCELED", "CLIENT_ERROR", user_cancelled_or_timedout=True)


def concurrency_skipped(limit: int) -> Outcome:
    message = f"Skipping this run: the job's limit of {limit} concurrent run(s) was reached and queueing is off."
    code = "MAX_CONCURRENT_RUNS_EXCEEDED"
    return Outcome("MAXIMUM_CONCURRENT_RUNS_REACHED", message, code, "CLIENT_ERROR", "SKIPPED")


def _live(life_cycle: str, status: str | None = None) -> Phase:
    state = {"life_cycle_state": life_cycle, "state_message": "", "user_cancelled_or_timedout": False}
    return state, {"state": status or life_cycle}


BLOCKED = _live("BLOCKED")
PENDING = _live("PENDING")
RUNNING = _live("RUNNING")
TERMINATING = _live("TERMINATING")
WAITING_FOR_RETRY = _live("WAITING_FOR_RETRY", "WAITING")


def _queued() -> Phase:
    state, status = _live("QUEUED")
    reason = "Queued: the job's maximum number of concurrent runs is reached."
    state["queue_reason"] = reason
    status["queue_details"] = {"code": QUEUE_CODE, "message": reason}
    return state, status


QUEUED = _queued()
