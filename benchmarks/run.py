#!/usr/bin/env python3
"""airflow-dbx next to the official Databricks provider: every benchmark, one command.

    python3 benchmarks/run.py                    # everything; writes benchmarks/RESULTS.md + PNGs
    python3 benchmarks/run.py --only triggerer   # one section (parse, triggerer, latency, requests, profile, sql)
    python3 benchmarks/run.py --quick --providers ours   # the smoke run the tests use
    python3 benchmarks/run.py --scale            # 2,000 runs of 10 s to an hour under the API's limits (~70 min)

Sets up what it needs: our package's environment (the interpreter running this script if it
has airflow_dbx, else $AIRFLOW_DBX_VENV, else the one ``run.py`` at the repository root
makes), and ``benchmarks/.venv-official`` with the same Airflow, the latest
apache-airflow-providers-databricks, matplotlib and py-spy, and our checkout on its path
so both sides run the same emulator. The providers alternate (ours first on even
repetitions, the official one first on odd ones); every figure is the median and range of
the repetitions. Each section's raw samples go to ``benchmarks/out/<section>.json``, and
RESULTS.md is rendered from whatever sections are there.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_requests
import report
import scale
from common import (
    HERE,
    HUGE_DURATION,
    ROOT,
    EmulatorClient,
    EmulatorProcess,
    emulator_client_sockets,
    load_average,
    machine,
    worker_env,
)

OFFICIAL_VENV = HERE / ".venv-official"
OFFICIAL_PACKAGES = ("apache-airflow-providers-databricks", "matplotlib", "py-spy")
SECTIONS = ("parse", "triggerer", "latency", "requests", "profile", "sql")
OPERATORS_MODULE = {"ours": "airflow_dbx.operators", "official": "airflow.providers.databricks.operators.databricks"}


# ---------------------------------------------------------------------- environments


def has_modules(python: str, *modules: str) -> bool:
    code = "import importlib.util, sys; sys.exit(any(importlib.util.find_spec(m) is None for m in sys.argv[1:]))"
    return subprocess.run([python, "-c", code, *modules], capture_output=True, check=False).returncode == 0


def ours_python(explicit: str | None) -> str:
    if explicit:
        return explicit
    if has_modules(sys.executable, "airflow", "airflow_dbx"):
        return sys.executable
    if os.environ.get("AIRFLOW_DBX_VENV"):
        return str(Path(os.environ["AIRFLOW_DBX_VENV"]) / "bin" / "python")
    sys.path.insert(0, str(ROOT))
    import run as project_run  # the repository's run.py: makes .venv/airflow-3.3 on first use

    return str(project_run.environment(project_run.NEWEST) / "bin" / "python")


def version_of(python: str, distribution: str) -> str | None:
    code = "import importlib.metadata as m, sys\ntry: print(m.version(sys.argv[1]))\nexcept Exception: print('')"
    out = subprocess.run([python, "-c", code, distribution], capture_output=True, text=True, check=False)
    return out.stdout.strip() or None


def official_python(ours: str) -> str:
    """benchmarks/.venv-official: the same Airflow as ours, plus the official provider (never our dependency)."""
    python = OFFICIAL_VENV / "bin" / "python"
    airflow = version_of(ours, "apache-airflow")
    stamp = OFFICIAL_VENV / "bench.stamp"
    wanted = f"apache-airflow=={airflow}"
    if not (python.exists() and stamp.exists() and stamp.read_text() == wanted):
        print(f"Setting up {OFFICIAL_VENV} ({wanted} + the official provider; first run only) ...", flush=True)
        if not python.exists():
            base = subprocess.run(
                [ours, "-c", "import sys; print(getattr(sys, '_base_executable', sys.executable))"],
                capture_output=True, text=True, check=True,
            ).stdout.strip()
            subprocess.run([base, "-m", "venv", str(OFFICIAL_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wanted, *OFFICIAL_PACKAGES],
            check=True,
        )
        stamp.write_text(wanted)
    # Our checkout on its path (not installed: nothing of ours registers as a provider there).
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    (Path(site) / "airflow_dbx_checkout.pth").write_text(str(ROOT) + "\n")
    return str(python)


# ---------------------------------------------------------------------- running workers


class Worker:
    """A worker process whose JSON stdout lines arrive as events; bounded by a timeout."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path) -> None:
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Condition()
        self.log = open(log, "w")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            command, env=env, cwd=HERE, stdout=subprocess.PIPE, stderr=self.log, text=True, bufsize=1
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.write(line)
            if line.startswith('{"event"'):
                with self.lock:
                    self.events.append(json.loads(line))
                    self.lock.notify_all()
        with self.lock:
            self.lock.notify_all()

    def wait_event(self, name: str, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                for event in self.events:
                    if event["event"] == name:
                        return event
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self.reader.is_alive()):
                    return None
                self.lock.wait(min(left, 0.2))

    def wait(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        self.reader.join(5)
        self.log.close()
        return code


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def order(providers: list[str], rep: int) -> list[str]:
    return providers if rep % 2 == 0 else providers[::-1]


# ---------------------------------------------------------------------- sections


def bench_parse(ctx: dict[str, Any]) -> dict[str, Any]:
    """Import cost over airflow.sdk, and a 50-operator DAG file: ``python FILE`` and DagBag, fresh processes."""
    out: dict[str, Any] = {"samples": []}
    dags = ctx["out"] / "parse-dags"
    dags.mkdir(parents=True, exist_ok=True)
    files = {}
    for provider in ctx["providers"]:
        files[provider] = dags / f"{provider}_50_operators.py"
        files[provider].write_text(report.DAG_50.format(module=OPERATORS_MODULE[provider], provider=provider))
    quick = ctx["quick"]
    # The first round warms the bytecode caches and is dropped (the quick run keeps its only round).
    for rep in range(1 if quick else ctx["reps_parse"] + 1):
        for provider in order(ctx["providers"], rep):
            python = ctx["python"][provider]
            env = worker_env(provider, None, ctx["out"] / f"home-{provider}")
            sample: dict[str, Any] = {"provider": provider, "rep": rep}
            res = subprocess.run([python, "bench_parse.py", "import", provider], cwd=HERE, env=env,
                                 capture_output=True, text=True, timeout=300, check=False)
            sample.update(json.loads(res.stdout.strip().splitlines()[-1]) if res.returncode == 0 else
                          {"error": res.stderr[-500:]})
            if not quick:
                started, children = time.perf_counter(), children_cpu()
                res = subprocess.run([python, str(files[provider])], cwd=HERE, env=env,
                                     capture_output=True, text=True, timeout=300, check=False)
                if res.returncode == 0:
                    sample["python_file_s"] = time.perf_counter() - started
                    sample["python_file_cpu_s"] = children_cpu() - children
                res = subprocess.run([python, "bench_parse.py", "dagbag", str(files[provider])], cwd=HERE, env=env,
                                     capture_output=True, text=True, timeout=300, check=False)
                if res.returncode == 0:
                    sample.update(json.loads(res.stdout.strip().splitlines()[-1]))
            sample["loadavg"] = load_average()
            if rep > 0 or quick:
                out["samples"].append(sample)
            print(f"  parse {provider} rep {rep}: {json.dumps(sample)[:300]}", flush=True)
    return out


def trigger_configs(quick: bool) -> list[dict[str, Any]]:
    if quick:
        return [{"n": 5, "period": 1.0, "warmup": 0.5, "window": 1.5, "waited": 0.0, "reps": 1, "lag_window": 0.5}]
    return [
        {"n": 100, "period": 1.0, "warmup": 5.0, "window": 15.0, "waited": 0.0, "reps": 3},
        {"n": 1000, "period": 1.0, "warmup": 5.0, "window": 15.0, "waited": 0.0, "reps": 3},
        {"n": 5000, "period": 1.0, "warmup": 8.0, "window": 15.0, "waited": 0.0, "reps": 2},
        # Default polling (30 s), runs already waited on for an hour: ours is at its 30 s cap. The
        # windows are two periods long, so the official triggers' rounds (all in step) count in full.
        {"n": 1000, "period": 30.0, "warmup": 35.0, "window": 60.0, "waited": 3600.0, "reps": 2, "lag_window": 30.0},
        {"n": 5000, "period": 30.0, "warmup": 35.0, "window": 60.0, "waited": 3600.0, "reps": 2, "lag_window": 30.0},
    ]


def bench_triggerer(ctx: dict[str, Any]) -> dict[str, Any]:
    """Each N in a workspace of its own whose active runs are the N waited on, as when one
    triggerer waits on a workspace's runs (a workspace with far more active runs than a triggerer
    waits on is the crowded case, where ours polls each run)."""
    out: dict[str, Any] = {"samples": []}
    configs = [c for c in trigger_configs(ctx["quick"])
               if not ctx.get("trigger_only") or f"{c['n']}:{c['period']:g}" in ctx["trigger_only"]]
    for n in dict.fromkeys(config["n"] for config in configs):
        work = ctx["out"] / "triggerer" / f"n{n}"
        with EmulatorProcess(ctx["python"]["ours"], work) as emu:
            client = EmulatorClient(emu.url)
            run_ids = [client.submit(HUGE_DURATION, name=f"stay-{i}") for i in range(n)]
            client.close()
            ids_file = work / "run_ids.json"
            ids_file.write_text(json.dumps(run_ids))
            for config in (config for config in configs if config["n"] == n):
                for rep in range(config["reps"]):
                    for provider in order(ctx["providers"], rep):
                        sample = trigger_sample(ctx, emu, ids_file, provider, config, rep)
                        out["samples"].append(sample)
                        print(f"  triggerer {provider} n={n} period={config['period']} rep {rep}: "
                              f"{report.brief_trigger(sample)}", flush=True)
    return out


def trigger_sample(ctx: dict[str, Any], emu: EmulatorProcess, ids_file: Path, provider: str,
                   config: dict[str, Any], rep: int, profile: Path | None = None, kind: str = "run") -> dict[str, Any]:
    """One triggerer worker's figures; ``kind="sql"``: SQL statement triggers on the statements in ``ids_file``."""
    name = f"triggerer-{kind}-{provider}-n{config['n']}-p{int(config['period'])}-r{rep}"
    command = [
        ctx["python"][provider], "bench_triggerer.py", "--provider", provider, "--n", str(config["n"]),
        "--period", str(config["period"]), "--emulator", emu.url, "--run-ids", str(ids_file),
        "--warmup", str(config["warmup"]), "--window", str(config["window"]), "--waited", str(config["waited"]),
        "--lag-window", str(config.get("lag_window", 10.0)), "--kind", kind,
    ]
    worker = Worker(command, worker_env(provider, emu.url, ctx["out"] / f"home-{provider}"),
                    ids_file.parent / f"{name}.log")
    budget = 120 + config["warmup"] + config["window"] + config.get("lag_window", 10.0)
    sample: dict[str, Any] = {"provider": provider, "rep": rep, **config}
    spy = None
    if worker.wait_event("window_start", budget) is not None:
        cpu0 = proc_cpu_seconds(emu.proc.pid)  # type: ignore[union-attr]
        seen_ports: set[int] = set()
        peak = peak_time_wait = 0
        if profile is not None:
            spy = subprocess.Popen(
                [ctx["py_spy"], "record", "--pid", str(worker.proc.pid), "--duration", str(int(config["window"])),
                 "--rate", "200", "--format", "raw", "--output", str(profile), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        started = time.monotonic()
        while worker.wait_event("window_end", 0.5) is None and time.monotonic() - started < config["window"] + 30:
            established, ports, time_wait = emulator_client_sockets(emu.port)
            peak = max(peak, established)
            peak_time_wait = max(peak_time_wait, time_wait)
            seen_ports |= ports
        sample["emulator_cpu_share"] = (proc_cpu_seconds(emu.proc.pid) - cpu0) / max(  # type: ignore[union-attr]
            time.monotonic() - started, 1e-9)
        sample["sockets_established_peak"] = peak
        sample["sockets_time_wait_peak"] = peak_time_wait
        sample["client_ports_seen"] = len(seen_ports)
    result = worker.wait_event("result", budget)
    code = worker.wait(60)
    if spy is not None:
        spy.wait(60)
    sample["loadavg"] = load_average()
    if result is None:
        sample["error"] = f"worker exited {code} without a result; see {worker.log.name}"
    else:
        sample.update({k: v for k, v in result.items() if k not in ("event", "provider", "n", "period", "waited")})
    return sample


def bench_latency(ctx: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"samples": [], "errors": []}
    quick = ctx["quick"]
    scale = 0.1
    classes = ["5s:5:real"] if quick else ["5s:5:real", "60s:60:real", "10min:600:scaled"]
    work = ctx["out"] / "latency"
    for rep in range(1 if quick else ctx["reps_latency"]):
        for provider in order(ctx["providers"], rep):
            with EmulatorProcess(ctx["python"]["ours"], work) as real, \
                    EmulatorProcess(ctx["python"]["ours"], work, time_scale=scale, name="scaled") as scaled:
                command = [
                    ctx["python"][provider], "bench_latency.py", "--provider", provider, "--emulator", real.url,
                    "--scaled-emulator", scaled.url, "--scale", str(scale), "--classes", *classes,
                    "--samples", str(2 if quick else ctx["latency_samples"]), "--stagger", "1" if quick else "10",
                ]
                if quick:
                    command += ["--timeout", "60"]
                worker = Worker(command, worker_env(provider, real.url, ctx["out"] / f"home-{provider}"),
                                work / f"latency-{provider}-r{rep}.log")
                worker.wait(900)
                for event in worker.events:
                    if event["event"] == "sample":
                        out["samples"].append({**event, "rep": rep})
                    elif event["event"] == "sample_error":
                        out["errors"].append(event)
            print(f"  latency {provider} rep {rep}: "
                  f"{report.brief_latency([s for s in out['samples'] if s['provider'] == provider])}", flush=True)
    return out


def bench_requests_section(ctx: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"samples": [], "duration_s": ctx["requests_duration"]}
    work = ctx["out"] / "requests"
    with EmulatorProcess(ctx["python"]["ours"], work) as emu:
        for provider in ctx["providers"]:
            env = worker_env(provider, emu.url, ctx["out"] / f"home-{provider}")
            folder = bench_requests.write_dag(work / f"dags-{provider}", OPERATORS_MODULE[provider],
                                              ctx["requests_duration"])
            env["AIRFLOW__CORE__DAGS_FOLDER"] = str(folder.parent)
            subprocess.run([ctx["python"][provider], "-m", "airflow", "db", "migrate"], env=env,
                           capture_output=True, timeout=600, check=False)
        for rep in range(ctx["reps_requests"]):
            for provider in order(ctx["providers"], rep):
                env = worker_env(provider, emu.url, ctx["out"] / f"home-{provider}")
                env["AIRFLOW__CORE__DAGS_FOLDER"] = str(work / f"dags-{provider}")
                for mode in bench_requests.MODES:
                    sample = bench_requests.measure(ctx["python"][provider], env, emu.url, mode,
                                                    timeout=ctx["requests_duration"] + 300)
                    sample.update(provider=provider, rep=rep)
                    out["samples"].append(sample)
                    print(f"  requests {provider} {mode} rep {rep}: {sample['requests']} requests "
                          f"{sample['by_endpoint']} ok={sample['succeeded']}", flush=True)
    return out


def bench_profile(ctx: dict[str, Any]) -> dict[str, Any]:
    """Where our time goes: py-spy over ours at N=1,000 / 1 s, and -X importtime of our operators."""
    out: dict[str, Any] = {}
    work = ctx["out"] / "profile"
    work.mkdir(parents=True, exist_ok=True)
    python = ctx["python"]["ours"]
    env = worker_env("ours", None, ctx["out"] / "home-ours")
    res = subprocess.run(
        [python, "-X", "importtime", "-c", "from airflow.sdk import BaseOperator\nimport airflow_dbx.operators"],
        cwd=HERE, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    out["importtime"] = report.importtime_added(res.stderr, "airflow_dbx.operators")
    if ctx.get("py_spy"):
        config = {"n": 1000, "period": 1.0, "warmup": 5.0, "window": 15.0, "waited": 0.0}
        with EmulatorProcess(python, work) as emu:
            client = EmulatorClient(emu.url)
            ids = [client.submit(HUGE_DURATION) for _ in range(config["n"])]
            client.close()
            ids_file = work / "run_ids.json"
            ids_file.write_text(json.dumps(ids))
            raw = work / "ours-n1000-p1.pyspy.txt"
            sample = trigger_sample(ctx, emu, ids_file, "ours", config, 0, profile=raw)
        out["sample"] = sample
        if raw.exists():
            out["py_spy"] = report.collapse_profile(raw.read_text())
    return out


def bench_sql_section(ctx: dict[str, Any]) -> dict[str, Any]:
    import bench_sql  # it imports this module's worker helpers

    return bench_sql.section(ctx)


RUNNERS = {
    "scale": scale.bench_scale,
    "parse": bench_parse,
    "triggerer": bench_triggerer,
    "latency": bench_latency,
    "requests": bench_requests_section,
    "profile": bench_profile,
    "sql": bench_sql_section,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="sections to run (default: all)")
    parser.add_argument("--providers", default="ours,official", help="comma-separated: ours,official")
    parser.add_argument("--quick", action="store_true", help="tiny N, short windows: the smoke test")
    parser.add_argument("--reps", type=int, default=5, help="repetitions of the parse samples")
    parser.add_argument("--reps-latency", type=int, default=2)
    parser.add_argument("--latency-samples", type=int, default=6, help="runs per length class per repetition")
    parser.add_argument("--reps-requests", type=int, default=1)
    parser.add_argument("--requests-duration", type=float, default=60.0, help="run length for the request count")
    parser.add_argument("--scale", action="store_true",
                        help="the scale scenario alone (with --quick: 20 short runs, the smoke test)")
    parser.add_argument("--scenarios", nargs="+", choices=scale.NAMES, help="with --scale: these scenarios only")
    parser.add_argument("--lengths", nargs=2, type=float, metavar=("LOW", "HIGH"),
                        help="with --scale: run lengths in seconds (default 10 3600)")
    parser.add_argument("--trigger-only", nargs="+", metavar="N:PERIOD",
                        help="triggerer section: only these samples, e.g. 1000:30 5000:30")
    parser.add_argument("--ours-python")
    parser.add_argument("--out", type=Path, default=HERE / "out")
    parser.add_argument("--results", type=Path, help="the Markdown report (default benchmarks/RESULTS.md)")
    args = parser.parse_args(argv)

    providers = [p for p in args.providers.split(",") if p]
    sections = args.only or (["parse", "triggerer"] if args.quick else list(SECTIONS))
    if args.scale:
        sections = ["scale"]
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # thousands of sockets, inherited by the emulator
    ours = ours_python(args.ours_python)
    pythons = {"ours": ours}
    if "official" in providers:
        pythons["official"] = official_python(ours)
    py_spy = OFFICIAL_VENV / "bin" / "py-spy"
    ctx: dict[str, Any] = {
        "providers": providers,
        "python": pythons,
        "quick": args.quick,
        "out": args.out,
        "reps_parse": 1 if args.quick else args.reps,
        "reps_latency": args.reps_latency,
        "latency_samples": args.latency_samples,
        "reps_requests": args.reps_requests,
        "requests_duration": 3.0 if args.quick else args.requests_duration,
        "py_spy": str(py_spy) if py_spy.exists() else None,
        "scale_scenarios": args.scenarios,
        "scale_lengths": args.lengths,
        "trigger_only": args.trigger_only,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    meta_file = args.out / "meta.json"
    meta = json.loads(meta_file.read_text()) if meta_file.exists() and (args.only or args.scale) else {}
    meta.update({
        "machine": machine(),
        "versions": {
            p: {d: version_of(py, d) for d in ("apache-airflow", "airflow-dbx", "apache-airflow-providers-databricks",
                                                 "aiohttp")}
            for p, py in pythons.items()
        },
        "quick": args.quick,
    })
    for section in sections:
        if section == "profile" and "ours" not in providers:
            continue
        print(f"== {section}", flush=True)
        started = time.time()
        data = RUNNERS[section](ctx)
        data.update(started=started, seconds=time.time() - started, loadavg_after=load_average())
        (args.out / f"{section}.json").write_text(json.dumps(data, indent=1))
        meta.setdefault("sections", {})[section] = {"started": started, "seconds": data["seconds"]}
        meta_file.write_text(json.dumps(meta, indent=1))
    results = args.results or (args.out / "RESULTS-quick.md" if args.quick else HERE / "RESULTS.md")
    report.write(args.out, results, plot_python=pythons.get("official"))
    print(f"Wrote {results}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
