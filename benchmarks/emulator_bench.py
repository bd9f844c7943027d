#!/usr/bin/env python3
"""Throughput of the emulator's jobs/runs/get over 100 keep-alive connections.

The emulator runs in a subprocess (``python -m airflow_dbx.emulator``), so the load generator
here does not share its GIL. Runs are created first; then 100 client coroutines poll
runs/get for random run ids over one aiohttp connector limited to 100 connections, for a
bounded time. Reported: requests/s, latency p50/p99, and the emulator process's CPU use
read from /proc.

    python benchmarks/emulator_bench.py                      # 10 s, prints the figures
    python benchmarks/emulator_bench.py --markdown benchmarks/EMULATOR.md
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

TOKEN = "dapi-bench-token"
CONNECTIONS = 100


def start_emulator(workdir: Path, loop: str) -> tuple[subprocess.Popen[bytes], str]:
    port_file = workdir / "url"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_dbx.emulator",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--token",
            TOKEN,
            "--loop",
            loop,
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while not port_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit("the emulator did not start")
        time.sleep(0.05)
    return process, port_file.read_text().strip()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def create_runs(session: aiohttp.ClientSession, url: str, count: int, *, finished: bool) -> list[int]:
    duration = "0" if finished else "36000"
    ids = []
    for i in range(count):
        body = {
            "run_name": f"bench-{i}",
            "tasks": [
                {
                    "task_key": f"t{k}",
                    "existing_cluster_id": "emulator-bench",
                    "notebook_task": {"notebook_path": "/bench", "base_parameters": {"emulator_duration": duration}},
                    **({"depends_on": [{"task_key": f"t{k - 1}"}]} if k else {}),
                }
                for k in range(2)
            ],
        }
        async with session.post(f"{url}/api/2.2/jobs/runs/submit", json=body) as response:
            response.raise_for_status()
            ids.append((await response.json())["run_id"])
    return ids


async def poll(
    session: aiohttp.ClientSession, url: str, run_ids: list[int], until: float, latencies: list[float]
) -> int:
    errors = 0
    endpoint = f"{url}/api/2.2/jobs/runs/get"
    while time.monotonic() < until:
        started = time.perf_counter()
        async with session.get(endpoint, params={"run_id": str(random.choice(run_ids))}) as response:
            await response.read()
            if response.status != 200:
                errors += 1
        latencies.append(time.perf_counter() - started)
    return errors


async def phase(url: str, pid: int, run_ids: list[int], seconds: float, warmup: float) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        await asyncio.gather(*(poll(session, url, run_ids, time.monotonic() + warmup, []) for _ in range(CONNECTIONS)))
        latencies: list[float] = []
        cpu_before, client_before = cpu_seconds(pid), resource.getrusage(resource.RUSAGE_SELF)
        started = time.monotonic()
        errors = await asyncio.gather(
            *(poll(session, url, run_ids, started + seconds, latencies) for _ in range(CONNECTIONS))
        )
        wall = time.monotonic() - started
        cpu_after, client_after = cpu_seconds(pid), resource.getrusage(resource.RUSAGE_SELF)
    latencies.sort()
    client_cpu = (client_after.ru_utime + client_after.ru_stime) - (client_before.ru_utime + client_before.ru_stime)
    return {
        "requests": len(latencies),
        "errors": sum(errors),
        "seconds": wall,
        "rps": len(latencies) / wall,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "emulator_cpu": (cpu_after - cpu_before) / wall,
        "client_cpu": client_cpu / wall,
        "cpu_ms_per_request": (cpu_after - cpu_before) * 1000 / max(1, len(latencies)),
        "load": os.getloadavg()[0],
    }


async def bench(seconds: float, runs: int, loop: str) -> tuple[dict[str, Any], dict[str, Any]]:
    with tempfile.TemporaryDirectory() as workdir:
        process, url = start_emulator(Path(workdir), loop)
        try:
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
                active = await create_runs(session, url, runs, finished=False)
                finished = await create_runs(session, url, runs, finished=True)
            await asyncio.sleep(0.6)  # let the finished ones finish (default time scale)
            active_figures = await phase(url, process.pid, active, seconds, warmup=1.0)
            finished_figures = await phase(url, process.pid, finished, seconds, warmup=1.0)
        finally:
            process.terminate()
            process.wait(10)
    return active_figures, finished_figures


def report(active: dict[str, Any], finished: dict[str, Any], seconds: float, runs: int, loop: str) -> str:
    def row(name: str, f: dict[str, Any]) -> str:
        return (
            f"| {name} | {f['rps']:,.0f} | {f['p50_ms']:.1f} | {f['p99_ms']:.1f} | {f['emulator_cpu']:.0%} "
            f"| {f['cpu_ms_per_request']:.3f} | {f['client_cpu']:.0%} | {f['requests']:,} | {f['errors']} "
            f"| {f['load']:.1f} |"
        )

    return "\n".join(
        [
            "# Emulator benchmark: jobs/runs/get",
            "",
            f"`python benchmarks/emulator_bench.py --seconds {seconds:g} --runs {runs} --loop {loop}`:",
            f"the emulator in its own process, {CONNECTIONS} keep-alive connections from one aiohttp client",
            f"process, {seconds:g} s per phase after a 1 s warm-up, random run ids among {runs} two-task runs.",
            "CPU is the share of one core over the phase (from /proc); load avg is the machine's 1-minute",
            "load at the end of the phase.",
            "",
            f"Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
            f"Python {platform.python_version()}, aiohttp {aiohttp.__version__},",
            f"{platform.system()} {platform.release()}.",
            "",
            "| runs polled | requests/s | p50 ms | p99 ms | emulator CPU | emulator CPU ms/request | client CPU "
            "| requests | errors | load avg |",
            "|---|---|---|---|---|---|---|---|---|---|",
            row("active (RUNNING)", active),
            row("finished (TERMINATED)", finished),
            "",
            "Target: at least 2,000 requests/s. Both processes share the machine's 2 cores, so the",
            "client's own CPU use bounds what can be measured here.",
            "",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measured phase (max 60)")
    parser.add_argument("--runs", type=int, default=200, help="runs created per phase (max 2000)")
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto", help="the emulator's loop")
    parser.add_argument("--markdown", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    seconds, runs = min(max(args.seconds, 1.0), 60.0), min(max(args.runs, 1), 2000)
    active, finished = asyncio.run(bench(seconds, runs, args.loop))
    text = report(active, finished, seconds, runs, args.loop)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
