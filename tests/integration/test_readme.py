"""The README's Python examples run, so the manual cannot drift from the code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import STRICT_WARNINGS

README = Path(__file__).resolve().parents[2] / "README.rst"


def python_blocks() -> list[str]:
    blocks = []
    for match in re.finditer(r"^\.\. code-block:: python\n\n((?:    .*\n|\n)+)", README.read_text(), re.MULTILINE):
        lines = match.group(1).splitlines()
        blocks.append("\n".join(line[4:] for line in lines).strip() + "\n")
    return blocks


BLOCKS = python_blocks()
DAG_BLOCKS = [block for block in BLOCKS if "def test_" not in block]
TEST_BLOCKS = [block for block in BLOCKS if "def test_" in block]


def test_the_readme_has_examples_of_each_kind() -> None:
    assert len(DAG_BLOCKS) >= 3
    assert len(TEST_BLOCKS) == 1


@pytest.mark.parametrize("block", DAG_BLOCKS, ids=lambda b: re.search(r'DAG\("(\w+)"', b).group(1))  # type: ignore[union-attr]
def test_dag_examples_build_without_warnings(block: str) -> None:
    result = subprocess.run([sys.executable, *STRICT_WARNINGS, "-c", block], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    # Under -W error a warning is an exception; stderr may still carry Airflow's own log lines.
    assert "Warning" not in result.stderr


@pytest.mark.parametrize("block", TEST_BLOCKS, ids=["pytest_fixture_example"])
def test_the_emulator_fixture_example_passes(block: str, tmp_path: Path, airflow_db: None) -> None:
    dag_file = next(b for b in DAG_BLOCKS if 'DAG("prepare_dag"' in b)
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "prepare_dag.py").write_text(dag_file)
    test_file = tmp_path / "test_from_readme.py"
    test_file.write_text(block)
    env = {**os.environ, "AIRFLOW__CORE__DAGS_FOLDER": str(dags), "PYTHONPATH": str(dags)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(test_file)],
        capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path, env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "1 passed" in result.stdout
