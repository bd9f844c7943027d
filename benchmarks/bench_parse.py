"""Worker: one sample of DAG parse cost, in a fresh process of a provider's venv.

Wall and CPU time are both recorded: on a loaded machine CPU time is the steadier figure.

``import``: time and modules that importing the provider's operators module adds over a
bare ``from airflow.sdk import BaseOperator``.
``dagbag``: time for a DagBag to parse a DAG file (of 50 operators), measured after DagBag
itself is imported, so it is the file's own cost: its provider import and its operators.
The driver also times ``python FILE`` (the whole fresh process) itself.
"""

from __future__ import annotations

import importlib
import sys
import time

# Kept here rather than imported, so nothing but sys/time/importlib is loaded before the baseline.
OPERATORS_MODULE = {
    "ours": "airflow_dbx.operators",
    "official": "airflow.providers.databricks.operators.databricks",
}


def main() -> None:
    """``bench_parse.py import PROVIDER`` or ``bench_parse.py dagbag FILE``."""
    mode, target = sys.argv[1], sys.argv[2]
    if mode == "import":
        t0 = time.perf_counter()
        from airflow.sdk import BaseOperator  # noqa: F401

        t1, c1 = time.perf_counter(), time.process_time()
        base_modules = len(sys.modules)
        importlib.import_module(OPERATORS_MODULE[target])
        t2, c2 = time.perf_counter(), time.process_time()
        result = {
            "sdk_s": t1 - t0,
            "added_s": t2 - t1,
            "added_cpu_s": c2 - c1,
            "added_modules": len(sys.modules) - base_modules,
        }
    else:
        from airflow.dag_processing.dagbag import DagBag

        t0, c0 = time.perf_counter(), time.process_time()
        bag = DagBag(dag_folder=target, safe_mode=False)
        t1, c1 = time.perf_counter(), time.process_time()
        result = {
            "dagbag_s": t1 - t0,
            "dagbag_cpu_s": c1 - c0,
            "dags": len(bag.dags),
            "tasks": sum(len(d.tasks) for d in bag.dags.values()),
            "import_errors": {k: v[-300:] for k, v in bag.import_errors.items()},
        }
    import json

    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
