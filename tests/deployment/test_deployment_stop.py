"""Last in the suite: ``Deployment.stop`` leaves no process of the deployment behind."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

import psutil
import pytest

if TYPE_CHECKING:
    from .harness import Deployment

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(120)]


def _deployment_processes(deployment: Deployment) -> dict[int, tuple[float, str]]:
    """Every process a component started: the leader, its descendants and its process group."""
    leaders = {component.pid for component in deployment.components.values() if component.popen is not None}
    found: dict[int, tuple[float, str]] = {}

    def note(process: psutil.Process) -> None:
        with contextlib.suppress(psutil.Error):
            found[process.pid] = (process.create_time(), " ".join(process.cmdline())[:120])

    for process in psutil.process_iter():
        try:
            in_group = os.getpgid(process.pid) in leaders
        except OSError:
            continue
        if in_group or process.pid in leaders:
            note(process)
            for child in process.children(recursive=True):
                note(child)
    return found


def _still_running(pid: int, created: float) -> bool:
    try:
        process = psutil.Process(pid)
        return process.create_time() == created and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_stop_leaves_no_process_behind(deployment: Deployment) -> None:
    before = _deployment_processes(deployment)
    names = {" ".join(c.argv[:2]) for c in deployment.components.values()}
    # PostgreSQL, the emulator and the Airflow components with the processes they forked.
    assert len(before) > len(deployment.components) >= 6, (names, before)
    root = deployment.root
    deployment.stop()
    survivors = {pid: command for pid, (created, command) in before.items() if _still_running(pid, created)}
    assert survivors == {}
    assert not root.exists()
