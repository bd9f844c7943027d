"""Options, fixtures and the end-of-run report of the chaos suite.

    pytest tests/chaos                      # 300 seeded scenarios (CHAOS_SCENARIOS=N for another count)
    pytest tests/chaos --chaos-long         # 5,000
    CHAOS_SEED=137 pytest tests/chaos       # one scenario alone, to replay a failure
    CHAOS_FIRST_SEED=10000 pytest tests/chaos   # other seeds than 0..N-1
    CHAOS_REPORT=1 pytest tests/chaos       # also write the figures into RELIABILITY.md
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_dbx import compat
from tests.chaos import driver

if TYPE_CHECKING:
    from collections.abc import Iterator

DEFAULT_SCENARIOS = 300
LONG_SCENARIOS = 5000
BATCH = 50
WORKERS = 8
REPORT_START = "<!-- chaos:start -->"
REPORT_END = "<!-- chaos:end -->"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chaos")
    group.addoption("--chaos-long", action="store_true", help=f"run {LONG_SCENARIOS} chaos scenarios")
    group.addoption("--chaos-scenarios", type=int, default=None, help="how many chaos scenarios to run")
    group.addoption("--chaos-seed", type=int, default=None, help="run this one chaos scenario alone")
    group.addoption("--chaos-workers", type=int, default=None, help=f"scenarios at once (default {WORKERS})")


def _count(config: pytest.Config) -> int:
    if config.getoption("--chaos-scenarios", None):
        return int(config.getoption("--chaos-scenarios", None))
    if os.environ.get("CHAOS_SCENARIOS"):
        return int(os.environ["CHAOS_SCENARIOS"])
    return LONG_SCENARIOS if config.getoption("--chaos-long", False) else DEFAULT_SCENARIOS


def _one_seed(config: pytest.Config) -> int | None:
    seed = config.getoption("--chaos-seed", None)
    if seed is None and os.environ.get("CHAOS_SEED"):
        seed = int(os.environ["CHAOS_SEED"])
    return seed


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "chaos_seeds" not in metafunc.fixturenames:
        return
    config = metafunc.config
    seed = _one_seed(config)
    if seed is not None:
        metafunc.parametrize("chaos_seeds", [[seed]], ids=[f"seed_{seed}"])
        return
    count, first = _count(config), int(os.environ.get("CHAOS_FIRST_SEED", "0"))
    end = first + count
    batches = [list(range(start, min(start + BATCH, end))) for start in range(first, end, BATCH)]
    metafunc.parametrize("chaos_seeds", batches, ids=[f"seeds_{b[0]}-{b[-1]}" for b in batches])


@pytest.fixture(scope="session")
def chaos_workers(pytestconfig: pytest.Config) -> int:
    return int(pytestconfig.getoption("--chaos-workers", None) or os.environ.get("CHAOS_WORKERS") or WORKERS)


@pytest.fixture(scope="session", autouse=True)
def _task_states_from_the_scenarios() -> Iterator[None]:
    """Triggers ask the Airflow API for their task's state; the scenarios answer instead."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compat, "task_instance_state", driver.ti_state)
        yield


def report_lines() -> list[str]:
    s = driver.STATS
    if not s.scenarios:
        return []
    lines = [
        f"scenarios: {s.scenarios} ({s.tries} task tries, {s.runs_created} Databricks runs, "
        f"{s.runs_cancelled} cancelled, {s.requests} API requests) in {s.wall_seconds:.1f} s",
        "faults injected (armed): " + ", ".join(
            f"{kind} {s.faults_injected.get(kind, 0)} ({s.faults_armed.get(kind, 0)})"
            for kind in (*driver.FAULT_KINDS, "triggerer_restart")
        ),
        "life events: " + ", ".join(f"{e} {s.events.get(e, 0)}" for e in driver.EVENTS),
        "mix: " + ", ".join(f"{k} {v}" for k, v in sorted(s.shapes.items())),
        f"invariant violations: {len(s.violations)}",
        "known bugs hit (pinned by strict xfail tests, not counted as violations): "
        + (", ".join(f"{bug} {n}" for bug, n in s.known_bugs.items()) or "none"),
    ]
    lines += [f"  seed {seed}: {text.splitlines()[0]}" for seed, text in s.violations[:20]]
    return lines


def pytest_terminal_summary(terminalreporter: Any) -> None:
    lines = report_lines()
    if not lines:
        return
    terminalreporter.section("chaos")
    for line in lines:
        terminalreporter.write_line(line)
    if os.environ.get("CHAOS_REPORT"):
        _write_report(lines)
        terminalreporter.write_line("figures written to RELIABILITY.md")


def _write_report(lines: list[str]) -> None:
    path = Path(__file__).resolve().parents[2] / "RELIABILITY.md"
    text = path.read_text() if path.exists() else "# Reliability\n\n"
    block = "\n".join([REPORT_START, "```", *lines, "```", REPORT_END])
    if REPORT_START in text and REPORT_END in text:
        head, rest = text.split(REPORT_START, 1)
        text = head + block + rest.split(REPORT_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)
