"""SQL next to the official provider: install footprint, import cost, triggerer CPU per poll.

Section ``sql`` of ``python3 benchmarks/run.py`` (``--only sql``). Three measurements:

- footprint: the MB a provider adds to a bare Airflow environment, from the installed
  distributions' own file lists: everything the provider requires (transitively, markers
  evaluated, no extras) that Airflow itself does not. The official provider's SQL operators
  need its SQL dependencies (databricks-sql-connector, pandas, pyarrow, ...), which its
  7.x releases require outright; ours needs nothing beyond the run operators' needs.
- import: ``-X importtime`` of the SQL operators' module over ``airflow.sdk``, fresh processes.
- triggerer: N deferred statements (RUNNING on one emulator) polled by N statement
  triggers in one asyncio process, CPU per status read; the same worker as section 2
  (``bench_triggerer.py --kind sql``).

Run as a script inside a provider's environment (``bench_sql.py footprint DIST``), it
prints that environment's figure as one JSON line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import HERE, EmulatorClient, EmulatorProcess, worker_env

DISTRIBUTION = {"ours": "airflow-dbx", "official": "apache-airflow-providers-databricks"}
SQL_MODULE = {"ours": "airflow_dbx.sql_operators", "official": "airflow.providers.databricks.operators.databricks_sql"}
STAY_RUNNING = "86400"  # emulated seconds: a statement that stays RUNNING for the whole benchmark


# ---------------------------------------------------------------------- inside a provider's venv


def _closure(top: str) -> set[str]:
    """``top`` and every distribution it requires, transitively (markers evaluated, no extras)."""
    import importlib.metadata as md

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[str] = set()
    todo = [canonicalize_name(top)]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            requires = md.distribution(name).requires or []
        except md.PackageNotFoundError:
            continue
        seen.add(name)
        for line in requires:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(requirement.name))
    return seen


def _size(name: str) -> int:
    """Bytes on disk of an installed distribution (an editable one: its package folder)."""
    import importlib.metadata as md
    import importlib.util

    dist = md.distribution(name)
    total = sum(f.locate().stat().st_size for f in dist.files or [] if Path(str(f.locate())).is_file())
    for top in (dist.read_text("top_level.txt") or "").split():
        spec = importlib.util.find_spec(top)
        folder = Path(spec.origin).parent if spec and spec.origin else None
        if folder and "site-packages" not in str(folder):  # installed in development mode
            total += sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return total


def footprint(top: str) -> dict[str, Any]:
    added = sorted(_closure(top) - _closure("apache-airflow"))
    sizes = {name: _size(name) for name in added}
    heaviest = sorted(sizes.items(), key=lambda kv: -kv[1])[:8]
    return {
        "distribution": top,
        "added_mb": sum(sizes.values()) / 1e6,
        "added_distributions": len(added),
        "added_names": added,
        "heaviest": [{"name": n, "mb": round(s / 1e6, 1)} for n, s in heaviest],
    }


# ---------------------------------------------------------------------- the driver's section


def import_sample(python: str, provider: str, home: Path) -> dict[str, Any]:
    import report

    module = SQL_MODULE[provider]
    done = subprocess.run(
        [python, "-X", "importtime", "-c", f"from airflow.sdk import BaseOperator\nimport {module}"],
        cwd=HERE, env=worker_env(provider, None, home), capture_output=True, text=True, timeout=300, check=False,
    )
    if done.returncode != 0:
        return {"error": done.stderr[-500:]}
    added = report.importtime_added(done.stderr, module, limit=5)
    return {"import_ms": (added["total_us"] or 0) / 1000, "import_modules": added["modules"],
            "import_heaviest": added["heaviest"]}


def running_statements(url: str, n: int) -> list[str]:
    client = EmulatorClient(url)
    try:
        warehouse = client.call("GET", "/api/2.0/sql/warehouses")["warehouses"][0]["id"]
        body = {"statement": "SELECT 1", "warehouse_id": warehouse, "wait_timeout": "0s",
                "query_tags": [{"key": "emulator_duration", "value": STAY_RUNNING}]}
        return [str(client.call("POST", "/api/2.0/sql/statements", body)["statement_id"]) for _ in range(n)]
    finally:
        client.close()


def section(ctx: dict[str, Any]) -> dict[str, Any]:
    """Footprint and import per provider, then the statement triggers at N=1,000 (N=5 quick)."""
    import report

    from run import order, trigger_sample

    out: dict[str, Any] = {"samples": [], "triggerer": []}
    quick = ctx["quick"]
    for rep in range(1 if quick else 3):
        for provider in order(ctx["providers"], rep):
            python = ctx["python"][provider]
            sample: dict[str, Any] = {"provider": provider, "rep": rep}
            sample.update(import_sample(python, provider, ctx["out"] / f"home-{provider}"))
            if rep == 0:
                done = subprocess.run([python, "bench_sql.py", "footprint", DISTRIBUTION[provider]], cwd=HERE,
                                      capture_output=True, text=True, timeout=300, check=False)
                sample.update(json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else
                              {"footprint_error": done.stderr[-500:]})
            out["samples"].append(sample)
            print(f"  sql {provider} rep {rep}: {json.dumps(sample)[:300]}", flush=True)
    config = ({"n": 5, "period": 1.0, "warmup": 1.5, "window": 4.0, "waited": 0.0, "lag_window": 0.5} if quick else
              {"n": 1000, "period": 1.0, "warmup": 5.0, "window": 15.0, "waited": 0.0})
    work = ctx["out"] / "sql"
    with EmulatorProcess(ctx["python"]["ours"], work) as emu:
        ids_file = work / "statement_ids.json"
        ids_file.write_text(json.dumps(running_statements(emu.url, config["n"])))
        for provider in ctx["providers"]:  # one run each, as the issue asks
            sample = trigger_sample(ctx, emu, ids_file, provider, config, 0, kind="sql")
            out["triggerer"].append(sample)
            print(f"  sql triggerer {provider} n={config['n']}: {report.brief_trigger(sample)}", flush=True)
    return out


if __name__ == "__main__":
    if sys.argv[1:2] != ["footprint"] or len(sys.argv) != 3:
        raise SystemExit("usage: bench_sql.py footprint DISTRIBUTION")
    print(json.dumps(footprint(sys.argv[2])))
