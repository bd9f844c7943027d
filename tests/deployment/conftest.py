"""The deployment suite: real Airflow deployments (PostgreSQL, scheduler, dag-processor, API
server, triggerers) shared by their scenarios: the CeleryExecutor one (Redis, two workers, two
triggerers) for ``test_celery.py``, then the LocalExecutor one (a single worker slot) for the rest.
One runs at a time.

It runs only when asked: ``AIRFLOW_DBX_DEPLOYMENT=1`` (everything), ``AIRFLOW_DBX_DEPLOYMENT=core``
(``CORE_SCENARIOS`` only), or ``pytest tests/deployment --deployment`` (pytest knows the option
only when this directory is on its command line). Asked for on a machine that cannot host it (no
PostgreSQL and no apt-get), it skips with the reason, told once, except on CI (``CI`` set) or
with ``--deployment``, where a failed setup fails the suite.

Needs root or a ``postgres`` user (initdb refuses root), installs Debian's ``postgresql`` and
``redis-server`` when missing and ``psycopg2-binary`` / ``asyncpg`` from PyPI when missing. Set
``AIRFLOW_DBX_DEPLOYMENT_KEEP_LOGS=DIR`` to keep every component's log (and the task and trigger
logs) after the run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .harness import Deployment, DeploymentUnavailable

if TYPE_CHECKING:
    from collections.abc import Iterator

HERE = Path(__file__).resolve().parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--deployment", action="store_true", default=False, help="run the Airflow deployment suite")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "deployment: needs a real Airflow deployment (AIRFLOW_DBX_DEPLOYMENT=1)")


# AIRFLOW_DBX_DEPLOYMENT=core runs only these (for the older Airflow lines on CI): the user's stop,
# the triggerer's restart and hand-over, the worker's death, the chaos scenario and the clean stop,
# all on the LocalExecutor deployment.
CORE_SCENARIOS = frozenset({
    "test_triggerer_killed_and_restarted",
    "test_second_triggerer_takes_over",
    "test_marking_a_deferred_task_failed_cancels_its_run",
    "test_worker_killed_retry_reattaches",
    "test_seeded_chaos_through_the_deployment",
    "test_stop_leaves_no_process_behind",
})  # fmt: skip


def _asked(config: pytest.Config) -> bool:
    asked = os.environ.get("AIRFLOW_DBX_DEPLOYMENT") in ("1", "core")
    return asked or bool(config.getoption("--deployment", default=False))


def _strict(config: pytest.Config) -> bool:
    """On CI, or when asked by option, a deployment that cannot start is a failure, not a skip."""
    ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    return ci or bool(config.getoption("--deployment", default=False))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ours = [item for item in items if HERE in Path(str(item.path)).parents]
    if not _asked(config):
        skip = pytest.mark.skip(reason="the deployment suite runs only with AIRFLOW_DBX_DEPLOYMENT=1 or --deployment")
        for item in ours:
            item.add_marker(skip)
    elif os.environ.get("AIRFLOW_DBX_DEPLOYMENT") == "core":
        outside = pytest.mark.skip(reason="not in the core scenarios (AIRFLOW_DBX_DEPLOYMENT=core)")
        for item in ours:
            if item.originalname not in CORE_SCENARIOS:  # type: ignore[attr-defined]
                item.add_marker(outside)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """A failed scenario's report carries the end of every component's log."""
    report = yield
    deployment = getattr(item.config, "_dbx_deployment", None)
    if report.failed and deployment is not None:  # type: ignore[attr-defined]
        report.sections.append(("deployment logs", deployment.diagnose(60)))  # type: ignore[attr-defined]
    return report


def _started(request: pytest.FixtureRequest, *, celery: bool) -> Iterator[Deployment | str]:
    """One deployment for the session (or the reason it could not start), stopped at the end even
    when a test fails. Only one runs at a time: starting one stops the other."""
    config = request.config
    running = getattr(config, "_dbx_deployment", None)
    if running is not None:
        running.stop()
    started = Deployment(celery=celery)
    request.addfinalizer(started.stop)
    try:
        started.start()
    except DeploymentUnavailable as exc:
        yield f"the Airflow deployment ({started.kind}) cannot start here: {exc}"
        return
    config._dbx_deployment = started  # type: ignore[attr-defined]
    yield started
    config._dbx_deployment = None  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def started_deployment(request: pytest.FixtureRequest) -> Iterator[Deployment | str]:
    yield from _started(request, celery=False)


@pytest.fixture(scope="session")
def started_celery_deployment(request: pytest.FixtureRequest) -> Iterator[Deployment | str]:
    yield from _started(request, celery=True)


def _usable(request: pytest.FixtureRequest, started: Deployment | str) -> Deployment:
    """The deployment, or: the first scenario that needs it says in full why it did not start and
    the others point to it (a skip instead of a failure off CI, unless ``--deployment``)."""
    if isinstance(started, Deployment):
        return started
    told: set[str] = request.config.__dict__.setdefault("_dbx_deployment_told", set())
    later = started.split(" cannot start here", 1)[0] + " did not start (the first scenario says why)"
    reason = later if started in told else started
    told.add(started)
    if _strict(request.config):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def deployment(request: pytest.FixtureRequest, started_deployment: Deployment | str) -> Deployment:
    """The LocalExecutor deployment with one worker slot and one triggerer."""
    return _usable(request, started_deployment)


@pytest.fixture
def celery_deployment(request: pytest.FixtureRequest, started_celery_deployment: Deployment | str) -> Deployment:
    """The CeleryExecutor deployment: two workers, two triggerers."""
    return _usable(request, started_celery_deployment)
