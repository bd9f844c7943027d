"""Worker: N concurrent triggers of one provider in one asyncio process, as a triggerer runs them.

Run inside that provider's venv by ``run.py``; prints JSON lines (see ``common.emit``).
Each trigger's ``run()`` async generator is driven by its own task for warm-up + window
seconds, then every task is cancelled. Measured over the window: process CPU time and the TCP
connections the loop opened; the driver adds the requests the emulator saw and /proc/net/tcp
samples. Event-loop lag comes from a 10 ms ticker in a lag window after it: the ticker costs
CPU of its own (10 to 20 ms a second, as much as the triggers themselves at 30 s polling), so
it never runs while CPU is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit, fetch, percentile, poll_count, total_requests
from providers import ConnectionCounter, LagTicker, make_sql_trigger, make_trigger


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


async def drive(trigger: object, failures: list[str]) -> None:
    try:
        async for _event in trigger.run():  # type: ignore[attr-defined]
            failures.append("unexpected event: the run ended")
            return
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # counted and reported, not fatal to the benchmark
        failures.append(f"{type(exc).__name__}: {str(exc)[:200]}")


async def main(args: argparse.Namespace) -> dict[str, object]:
    run_ids = json.loads(Path(args.run_ids).read_text())[: args.n]
    if len(run_ids) < args.n:
        raise SystemExit(f"only {len(run_ids)} runs in {args.run_ids}, need {args.n}")
    loop = asyncio.get_running_loop()
    connections = ConnectionCounter(loop)
    waiting_since = time.time() - args.waited if args.waited else None
    if args.kind == "sql":  # the ids are of statements that stay RUNNING
        triggers = [make_sql_trigger(args.provider, str(sid), args.period) for sid in run_ids]
    else:
        triggers = [make_trigger(args.provider, run_id, args.period, waiting_since=waiting_since) for run_id in run_ids]
    rss_before = status_kib("VmRSS")
    failures: list[str] = []
    started = time.monotonic()
    tasks = [asyncio.create_task(drive(t, failures)) for t in triggers]
    emit("started", n=len(tasks))
    await asyncio.sleep(args.warmup)

    counters0 = await asyncio.to_thread(fetch, f"{args.emulator}/__emulator__/counters")
    conn0 = connections.opened
    cpu0 = cpu_seconds()
    wall0 = time.monotonic()
    emit("window_start")
    await asyncio.sleep(args.window)
    cpu1 = cpu_seconds()
    wall1 = time.monotonic()
    conn1 = connections.opened
    emit("window_end")
    counters1 = await asyncio.to_thread(fetch, f"{args.emulator}/__emulator__/counters")
    rss_end = status_kib("VmRSS")

    ticker = LagTicker()
    ticker.recording = True
    ticker_task = asyncio.create_task(ticker.run())
    await asyncio.sleep(args.lag_window)
    ticker.recording = False

    for task in tasks:
        task.cancel()
    ticker_task.cancel()
    _done, pending = await asyncio.wait([*tasks, ticker_task], timeout=args.cancel_timeout)
    window = wall1 - wall0
    polls = poll_count(counters1, args.kind) - poll_count(counters0, args.kind)
    cpu = cpu1 - cpu0
    lag = ticker.samples
    return {
        "provider": args.provider,
        "n": args.n,
        "period": args.period,
        "waited": args.waited,
        "window_s": window,
        "polls": polls,
        "polls_per_s": polls / window,
        # Every API request (ours reads pages of active runs for most of its waiters) and the
        # CPU per waiting run and minute, the figures that compare however a provider waits.
        "requests": total_requests(counters1) - total_requests(counters0),
        "cpu_ms_per_run_minute": 1000 * cpu / (args.n * window / 60),
        "offered_per_s": args.n / args.period,
        "cpu_s": cpu,
        "cpu_ms_per_poll": 1000 * cpu / polls if polls else None,
        "connections_opened_window": conn1 - conn0,
        "connections_opened_total": conn1,
        "lag_ms_p50": 1000 * (percentile(lag, 50) or 0),
        "lag_ms_p99": 1000 * (percentile(lag, 99) or 0),
        "lag_ms_max": 1000 * max(lag, default=0),
        "lag_samples": len(lag),
        "rss_before_triggers_mib": rss_before / 1024,
        "rss_end_mib": rss_end / 1024,
        "rss_peak_mib": status_kib("VmHWM") / 1024,
        "failures": len(failures),
        "first_failures": sorted(set(failures))[:3],
        "tasks_not_cancelled": len(pending),
        "run_seconds": time.monotonic() - started,
    }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--provider", choices=["ours", "official"], required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--period", type=float, required=True)
    parser.add_argument("--emulator", required=True, help="emulator base URL")
    parser.add_argument("--run-ids", required=True, help="JSON file: ids of runs (or statements) that stay RUNNING")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--lag-window", type=float, default=10.0, help="seconds of lag sampling after the window")
    parser.add_argument("--waited", type=float, default=0.0, help="ours: seconds the runs have been waited on already")
    parser.add_argument("--cancel-timeout", type=float, default=30.0)
    parser.add_argument("--kind", choices=["run", "sql"], default="run", help="run triggers or SQL statement triggers")
    return parser.parse_args(argv)


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    arguments = parse()
    result = asyncio.run(main(arguments))
    emit("result", **result)
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown of thousands of sessions: not part of the measurement
