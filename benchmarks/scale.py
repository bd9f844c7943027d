"""The scale scenario: thousands of deferred runs of mixed lengths, ends detected under the API's limits.

Called by ``run.py --scale``. Each scenario starts its workspaces (emulators), submits the
runs (before any limit applies: starting runs is not what is measured), turns on the
Databricks preset of per-endpoint limits, and starts one or more triggerer workers
(``bench_scale.py``) that wait on every run until it ends. Judged from the emulators' own
records: each run's end time (runs snapshot) and every request they answered (request log).
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import time
from pathlib import Path
from typing import Any

from common import CONN_ID, TOKEN, EmulatorClient, EmulatorProcess, load_average, percentile, worker_env

FAILING_SHARE = 0.1
POLL_PERIOD = 30.0  # both providers' default


def durations(n: int, low: float, high: float, seed: int = 17) -> list[float]:
    """Run lengths spread evenly on a log scale from ``low`` to ``high`` seconds (many short, some long)."""
    rng = random.Random(seed)
    return [round(math.exp(rng.uniform(math.log(low), math.log(high))), 1) for _ in range(n)]


def submit_all(client: EmulatorClient, lengths: list[float], first: int, conn_id: str) -> list[dict[str, Any]]:
    rng = random.Random(first)
    plan = []
    for offset, length in enumerate(lengths):
        params = {"emulator_duration": str(length)}
        if rng.random() < FAILING_SHARE:
            params.update(emulator_result="FAILED", emulator_error=f"ScaleError: run {first + offset} fails")
        body = {"run_name": f"scale {first + offset}", "tasks": [{
            "task_key": "main", "existing_cluster_id": "emulator-scale",
            "notebook_task": {"notebook_path": "/scale", "base_parameters": params}}]}
        run_id = int(client.call("POST", "/api/2.2/jobs/runs/submit", body)["run_id"])
        plan.append({"run_id": run_id, "conn_id": conn_id, "fails": "emulator_result" in params})
    return plan


def run_scenario(ctx: dict[str, Any], provider: str, name: str, *, n: int, workspaces: int, triggerers: int,
                 low: float, high: float) -> dict[str, Any]:
    work = ctx["out"] / "scale" / f"{name}-{provider}"
    work.mkdir(parents=True, exist_ok=True)
    emulators = [EmulatorProcess(ctx["python"]["ours"], work, name=f"workspace{w}").start() for w in range(workspaces)]
    try:
        return _measure(ctx, provider, name, emulators, n=n, triggerers=triggerers, low=low, high=high, work=work)
    finally:
        for emu in emulators:
            emu.stop()


def _measure(ctx: dict[str, Any], provider: str, name: str, emulators: list[EmulatorProcess], *, n: int,
             triggerers: int, low: float, high: float, work: Path) -> dict[str, Any]:
    lengths = durations(n, low, high)
    plan: list[dict[str, Any]] = []
    env = worker_env(provider, emulators[0].url, ctx["out"] / f"home-{provider}")
    marks = []
    share = math.ceil(n / len(emulators))
    for w, emu in enumerate(emulators):
        conn_id = f"{CONN_ID}_{w}"
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = _connection(provider, emu.url)
        client = EmulatorClient(emu.url)
        plan += submit_all(client, lengths[w * share:(w + 1) * share], w * share, conn_id)
        marks.append(client.call("GET", "/__emulator__/requests?since=0")["next"])
        client.call("POST", "/__emulator__/rate_limit", {"preset": "databricks"})
        client.close()
    plan_file = work / "plan.json"
    plan_file.write_text(json.dumps(plan))
    budget = high + 240.0
    started = time.time()
    procs = [
        subprocess.Popen(
            [ctx["python"][provider], "bench_scale.py", "--provider", provider, "--plan", str(plan_file),
             "--partition", f"{i}/{triggerers}", "--period", str(POLL_PERIOD), "--budget", str(budget)],
            stdout=subprocess.PIPE, stderr=open(work / f"triggerer{i}.log", "wb"),  # noqa: SIM115
            env=env, cwd=Path(__file__).resolve().parent, text=True,
        )
        for i in range(triggerers)
    ]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=budget + 180)
        lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        results += [line for line in lines if line.get("event") == "result"]
    ended = time.time()
    runs: dict[str, dict[str, Any]] = {}  # by "connection/run id": each workspace numbers its runs
    requests: list[dict[str, Any]] = []
    for w, (emu, mark) in enumerate(zip(emulators, marks, strict=True)):
        client = EmulatorClient(emu.url)
        runs.update({f"{CONN_ID}_{w}/{r['run_id']}": r for r in client.call("GET", "/__emulator__/runs")["runs"]})
        requests += [r for r in client.call("GET", f"/__emulator__/requests?since={mark}")["requests"]
                     if not r["path"].startswith("/__emulator__")]
        client.close()
    return judge(provider, name, plan, runs, requests, results, started, ended,
                 n=n, workspaces=len(emulators), triggerers=triggerers, low=low, high=high)


def _connection(provider: str, url: str) -> str:
    from common import connection_json

    return connection_json(provider, url)


def judge(provider: str, name: str, plan: list[dict[str, Any]], runs: dict[str, dict[str, Any]],
          requests: list[dict[str, Any]], results: list[dict[str, Any]], started: float, ended: float,
          **config: Any) -> dict[str, Any]:
    events: dict[str, dict[str, Any]] = {}
    cpu = 0.0
    for result in results:
        events.update(result["events"])
        if len(result["cpu"]) >= 2:
            cpu += result["cpu"][-1][1] - result["cpu"][0][1]
    latencies, early, wrong, errors, timeline_latency = [], 0, 0, 0, []
    baseline = 0
    run_minutes = 0.0
    for item in plan:
        key = f"{item['conn_id']}/{item['run_id']}"
        run = runs[key]
        begin, end = run.get("start_time", 0) / 1000, (run.get("end_time") or 0) / 1000
        baseline += math.floor(max(end - begin, 0) / POLL_PERIOD) + 1
        event = events.get(key)
        if event is None:
            continue
        run_minutes += max(event["fired"] - started, 0) / 60
        if event["verdict"] == "error" or event["verdict"] == "no_event":
            errors += 1
            continue
        if not end or event["fired"] < end:
            early += 1
            continue
        if (event["verdict"] == "success") == item["fails"]:
            wrong += 1
        latencies.append(event["fired"] - end)
        timeline_latency.append((end - started, event["fired"] - end))
    throttled = [r for r in requests if r["status"] == 429]
    per_second: dict[int, list[int]] = {}
    for record in requests:
        slot = per_second.setdefault(int(record["time"] - started), [0, 0])
        slot[0] += 1
        slot[1] += record["status"] == 429
    paths: dict[str, int] = {}
    for record in requests:
        key = record["path"].split("/api/", 1)[-1].split("/", 1)[-1]
        paths[key] = paths.get(key, 0) + 1
    waiting = sum(v for k, v in paths.items() if k in ("jobs/runs/get", "jobs/runs/list"))
    return {
        "provider": provider, "scenario": name, **config,
        "events": len(events), "missed": len(plan) - len(events), "early": early, "wrong_outcome": wrong,
        "errors": errors, "requests": len(requests), "waiting_requests": waiting, "by_path": paths,
        "per_run_polling_baseline": baseline,
        "requests_429": len(throttled),
        "requests_429_after_first_minute": sum(1 for r in throttled if r["time"] - started > 60),
        "latency_p50": percentile(latencies, 50), "latency_p99": percentile(latencies, 99),
        "latency_max": max(latencies, default=None),
        "cpu_s": cpu, "waiting_run_minutes": run_minutes,
        "cpu_ms_per_run_minute": 1000 * cpu / run_minutes if run_minutes else None,
        "wall_s": ended - started, "loadavg": load_average(),
        "timeline": {"per_second": sorted(per_second.items()), "latency": sorted(timeline_latency)},
    }


NAMES = ("one", "two-triggerers", "three-workspaces")


def scenarios(quick: bool, low: float = 10.0, high: float = 3600.0) -> list[dict[str, Any]]:
    """The issue's three: one triggerer and workspace, two triggerers, three workspaces; runs of
    ``low`` to ``high`` seconds (default: ten seconds to an hour)."""
    if quick:
        return [{"name": "one", "n": 20, "workspaces": 1, "triggerers": 1, "low": 2.0, "high": 8.0}]
    shapes = {"one": (1, 1), "two-triggerers": (1, 2), "three-workspaces": (3, 1)}
    return [{"name": name, "n": 2000, "workspaces": workspaces, "triggerers": triggerers, "low": low, "high": high}
            for name, (workspaces, triggerers) in shapes.items()]


def bench_scale(ctx: dict[str, Any]) -> dict[str, Any]:
    """Every scenario (the official provider in the first), all at once: each has its own
    workspaces (emulator processes) and triggerers, and an hour-long mix would take hours one
    after another. The machine's load is recorded with each sample."""
    from concurrent.futures import ThreadPoolExecutor

    out: dict[str, Any] = {"samples": [], "token": TOKEN[:4] + "..."}
    low, high = ctx.get("scale_lengths") or (10.0, 3600.0)
    chosen = ctx.get("scale_scenarios") or NAMES
    jobs = [
        (config, provider)
        for config in scenarios(ctx["quick"], low, high) if config["name"] in chosen
        for provider in (ctx["providers"] if config["name"] == "one" else ["ours"])
    ]

    def one(job: tuple[dict[str, Any], str]) -> dict[str, Any]:
        config, provider = job
        sample = run_scenario(ctx, provider, config["name"], **{k: v for k, v in config.items() if k != "name"})
        brief = {k: sample[k] for k in ("events", "missed", "errors", "early", "requests", "requests_429",
                                        "requests_429_after_first_minute", "latency_p50", "latency_p99",
                                        "cpu_ms_per_run_minute")}
        print(f"  scale {config['name']} {provider}: {json.dumps(brief)}", flush=True)
        return sample

    with ThreadPoolExecutor(max(1, len(jobs))) as pool:
        out["samples"] = list(pool.map(one, jobs))
    return out
