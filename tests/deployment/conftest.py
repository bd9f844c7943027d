"""The deployment suite: one real Airflow deployment (PostgreSQL, scheduler, dag-processor,
triggerer, API server, LocalExecutor with a single worker slot) shared by its scenarios.

It runs only when asked: ``AIRFLOW_DBX_DEPLOYMENT=1``, or ``pytest tests/deployment --deployment``
(pytest knows the option only when this directory is on its command line). Asked for on a
machine that cannot host it (no PostgreSQL and no apt-get), it skips with the reason, except on
CI (``CI`` set) or with ``--deployment``, where a failed setup fails the suite.

Needs root or a ``postgres`` user (initdb refuses root), installs Debian's ``postgresql`` when
missing and ``psycopg2-binary`` / ``asyncpg`` from PyPI when missing. Set
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


def _asked(config: pytest.Config) -> bool:
    return os.environ.get("AIRFLOW_DBX_DEPLOYMENT") == "1" or bool(config.getoption("--deployment", default=False))


def _strict(config: pytest.Config) -> bool:
    """On CI, or when asked by option, a deployment that cannot start is a failure, not a skip."""
    ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    return ci or bool(config.getoption("--deployment", default=False))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _asked(config):
        return
    skip = pytest.mark.skip(reason="the deployment suite runs only with AIRFLOW_DBX_DEPLOYMENT=1 or --deployment")
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """A failed scenario's report carries the end of every component's log."""
    report = yield
    deployment = getattr(item.config, "_dbx_deployment", None)
    if report.failed and deployment is not None:  # type: ignore[attr-defined]
        report.sections.append(("deployment logs", deployment.diagnose(60)))  # type: ignore[attr-defined]
    return report


@pytest.fixture(scope="session")
def deployment(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    """The deployment, started once for the session; stopped and removed even when a test fails."""
    started = Deployment()
    request.addfinalizer(started.stop)
    try:
        started.start()
    except DeploymentUnavailable as exc:
        if _strict(request.config):
            pytest.fail(f"the Airflow deployment cannot start here: {exc}", pytrace=False)
        pytest.skip(f"the Airflow deployment cannot start here: {exc}")
    request.config._dbx_deployment = started  # type: ignore[attr-defined]
    yield started
    request.config._dbx_deployment = None  # type: ignore[attr-defined]
