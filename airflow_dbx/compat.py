"""The few places where supported Airflow versions (3.1 to 3.3) differ, kept in one module."""

from __future__ import annotations

from typing import Any

from airflow import __version__ as _airflow_version
from airflow.triggers.base import BaseTrigger

# The ignores let mypy pass against either version's stubs.
try:
    from airflow.sdk import conf  # type: ignore[attr-defined,unused-ignore]
    from airflow.sdk.exceptions import (  # type: ignore[attr-defined,unused-ignore]
        AirflowFailException,
        AirflowSkipException,
        AirflowTaskTimeout,
    )
except ImportError:  # Airflow 3.1: the Task SDK has none of them yet
    from airflow.configuration import conf  # type: ignore[assignment,unused-ignore]
    from airflow.exceptions import (  # type: ignore[no-redef,attr-defined,unused-ignore]
        AirflowFailException,
        AirflowSkipException,
        AirflowTaskTimeout,
    )

__all__ = [
    "AIRFLOW_VERSION", "TRIGGER_HAS_ON_KILL", "AirflowFailException", "AirflowSkipException", "AirflowTaskTimeout",
    "conf",
    "task_instance_state",
]

AIRFLOW_VERSION: tuple[int, int] = tuple(int(part) for part in _airflow_version.split(".")[:2])  # type: ignore[assignment]

# Airflow 3.3 calls an async ``BaseTrigger.on_kill`` when a user acts on a deferred task;
# earlier versions only cancel the trigger's asyncio task.
TRIGGER_HAS_ON_KILL: bool = hasattr(BaseTrigger, "on_kill")


def task_instance_state(dag_id: str, task_id: str, run_id: str, map_index: int) -> str | None:
    """The current state of one task instance, asked of the Airflow API through the Task SDK.

    Blocking; call it from a thread inside the triggerer. Raises when no API is reachable
    (for instance outside a triggerer or worker).
    """
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    states: dict[str, Any] = RuntimeTaskInstance.get_task_states(
        dag_id=dag_id,
        task_ids=[task_id],
        run_ids=[run_id],
        map_index=map_index if map_index >= 0 else None,
    )
    by_task = states.get(run_id, {})
    key = task_id if map_index < 0 else f"{task_id}_{map_index}"
    state = by_task.get(key, by_task.get(task_id))
    return str(state) if state is not None else None
