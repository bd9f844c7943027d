"""The load suite runs only when asked: ``AIRFLOW_DBX_LOAD=1 pytest tests/load -m load``."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "load: heavy load test; runs only with AIRFLOW_DBX_LOAD=1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("AIRFLOW_DBX_LOAD") == "1":
        return
    skip = pytest.mark.skip(reason="load test: set AIRFLOW_DBX_LOAD=1 to run it")
    for item in items:
        if "load" in item.keywords:
            item.add_marker(skip)
