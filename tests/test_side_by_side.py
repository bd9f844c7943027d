"""This package and the official Databricks provider installed together: Airflow lists both, parses
a DAG that uses both, and takes ``databricks://`` asset URIs from either.

Runs only with ``AIRFLOW_DBX_SIDE_BY_SIDE=1``: it makes a virtual environment under
``.venv/side-by-side-<Airflow version>`` with every package this environment has (pinned to the
same versions, so pip resolves little), this checkout, and the official provider; later runs reuse it.
Making it took about 11 minutes on a busy two-core machine; a run with it made takes 10-20 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STEP_TIMEOUT = 1200
OFFICIAL = "apache-airflow-providers-databricks"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(2 * STEP_TIMEOUT),
    pytest.mark.skipif(
        os.environ.get("AIRFLOW_DBX_SIDE_BY_SIDE") != "1",
        reason="installs the official Databricks provider beside this one: set AIRFLOW_DBX_SIDE_BY_SIDE=1",
    ),
]


def _run(command: list[str], env: dict[str, str], cwd: Path) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=STEP_TIMEOUT, check=False, env=env,
                            cwd=cwd)
    output = f"{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, f"{' '.join(command)} exited {result.returncode}:\n{output[-4000:]}"
    return output


def _environment(home: Path) -> tuple[Path, dict[str, str]]:
    env_dir = ROOT / ".venv" / f"side-by-side-{version('apache-airflow')}"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("AIRFLOW", "PYTHON")) and key != "VIRTUAL_ENV"}
    env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    python = env_dir / "bin" / "python"
    if not (env_dir / "ready").exists():
        subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=STEP_TIMEOUT)
        pins = env_dir / "pins.txt"
        frozen = _run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], env, ROOT)
        pins.write_text("\n".join(line for line in frozen.splitlines() if "==" in line) + "\n")
        _run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off",
              "-c", str(pins), "-e", f"{ROOT}[openlineage]", f"apache-airflow=={version('apache-airflow')}",
              OFFICIAL], env, ROOT)
        (env_dir / "ready").write_text("")
    return env_dir, env


DAG_FILE = textwrap.dedent('''
    import datetime
    from airflow.providers.databricks.operators.databricks import DatabricksSubmitRunOperator as Official
    from airflow.sdk import DAG, Asset
    from airflow_dbx.assets import create_asset
    from airflow_dbx.operators import DatabricksSQLStatementsOperator, DatabricksSubmitRunOperator

    TABLE = create_asset(host="adb-1.azuredatabricks.net", catalog="main", schema="shop", table="sales")
    with DAG(dag_id="both_providers", start_date=datetime.datetime(2026, 1, 1), schedule=[TABLE]):
        Official(task_id="official", existing_cluster_id="c", notebook_task={"notebook_path": "/n"})
        DatabricksSubmitRunOperator(task_id="ours", existing_cluster_id="c", notebook_task={"notebook_path": "/n"})
        DatabricksSQLStatementsOperator(task_id="sql", warehouse_id="a1b2c3d4e5f60718", catalog="main",
                                        schema="shop", statement="INSERT INTO totals SELECT * FROM sales",
                                        emit_assets=True, outlets=[Asset("databricks://adb-1.azuredatabricks.net/main/shop/other")])
''')

CHECK = textwrap.dedent('''
    import sys
    from airflow.sdk import Asset
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=sys.argv[1])
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags["both_providers"]
    assert {t.task_id for t in dag.tasks} == {"official", "ours", "sql"}
    try:
        from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime as Manager
    except ImportError:  # Airflow before 3.2
        from airflow.providers_manager import ProvidersManager as Manager
    print("handler:", Manager().asset_uri_handlers["databricks"].__module__)
    print(Asset("databricks://adb-1.azuredatabricks.net/main/shop/sales").uri)
    try:
        Asset("databricks://adb-1.azuredatabricks.net/main/shop")
    except ValueError as exc:
        print("refused:", exc)
''')


def test_both_providers_installed_keep_airflow_working(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env_dir, env = _environment(home)
    providers = _run([str(env_dir / "bin" / "airflow"), "providers", "list"], env, home)
    assert "airflow-dbx" in providers and OFFICIAL in providers, providers[-3000:]
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "both.py").write_text(DAG_FILE)
    out = _run([str(env_dir / "bin" / "python"), "-W", "error", "-c", CHECK, str(dags)], env, home)
    # Airflow keeps the handler of the provider it registers last: the official one, by name order.
    assert "handler: airflow.providers.databricks.assets" in out
    assert "databricks://adb-1.azuredatabricks.net/main/shop/sales" in out
    assert "refused:" in out
