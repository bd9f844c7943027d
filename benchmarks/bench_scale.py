"""Worker: one triggerer process waiting on its share of thousands of runs until each ends.

Run inside a provider's venv by ``scale.py``. Reads a plan (JSON list of ``{"run_id", "conn_id"}``),
keeps the runs whose id hashes to ``--partition I/N`` (as several triggerers split the
triggers), drives every trigger's ``run()`` as the triggerer does, and prints one JSON line
with, per run, when its event fired (epoch seconds) and what it said, plus the process CPU
time sampled every second. Bounded by ``--budget`` seconds: a trigger still waiting then is
cancelled and counted as missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_triggerer import cpu_seconds
from common import emit
from providers import make_trigger


def verdict(payload: dict[str, Any]) -> str:
    """What an event says, in the words both providers share: success, failed, error or timed_out."""
    if payload.get("error") or payload.get("status") == "error":
        return "error"
    if payload.get("timed_out"):
        return "timed_out"
    if "successful" in payload:  # ours: the run's summary
        return "success" if payload["successful"] else "failed"
    state = payload.get("run_state") or {}
    if isinstance(state, str):
        state = json.loads(state)
    result = state.get("result_state") or state.get("state_message") or ""
    return "success" if result == "SUCCESS" else f"failed:{result or payload.get('status')}"


async def follow(trigger: Any, key: str, out: dict[str, dict[str, Any]]) -> None:
    try:
        async for event in trigger.run():
            out[key] = {"fired": time.time(), "verdict": verdict(event.payload)}
            return
        out[key] = {"fired": time.time(), "verdict": "no_event"}
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # counted as an error, never fatal to the benchmark
        out[key] = {"fired": time.time(), "verdict": "error", "detail": f"{type(exc).__name__}: {str(exc)[:200]}"}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    index, count = (int(x) for x in args.partition.split("/"))
    plan = [p for p in json.loads(Path(args.plan).read_text()) if p["run_id"] % count == index]
    out: dict[str, dict[str, Any]] = {}  # by "connection/run id": run ids repeat across workspaces
    cpu_samples: list[tuple[float, float]] = []
    tasks = [
        asyncio.create_task(follow(make_trigger(args.provider, p["run_id"], args.period, conn_id=p["conn_id"]),
                                   f"{p['conn_id']}/{p['run_id']}", out))
        for p in plan
    ]
    emit("started", n=len(tasks))
    deadline = time.monotonic() + args.budget
    while time.monotonic() < deadline and not all(t.done() for t in tasks):
        cpu_samples.append((time.time(), cpu_seconds()))
        await asyncio.sleep(1.0)
    cpu_samples.append((time.time(), cpu_seconds()))
    waiting = [t for t in tasks if not t.done()]
    for task in waiting:
        task.cancel()
    await asyncio.wait(tasks, timeout=60) if tasks else None
    return {"provider": args.provider, "partition": args.partition, "n": len(plan), "events": out,
            "missed": [p["run_id"] for p in plan if f"{p['conn_id']}/{p['run_id']}" not in out], "cpu": cpu_samples}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--provider", choices=["ours", "official"], required=True)
    parser.add_argument("--plan", required=True)
    parser.add_argument("--partition", default="0/1", help="I/N: the runs whose id %% N == I")
    parser.add_argument("--period", type=float, default=30.0)
    parser.add_argument("--budget", type=float, required=True)
    return parser.parse_args(argv)


if __name__ == "__main__":
    result = asyncio.run(main(parse()))
    emit("result", **result)
