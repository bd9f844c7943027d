"""Worker: how late each provider's trigger notices that a run ended, and what it cost in requests.

For every sample: submit a run of about D seconds to the emulator, wait a hand-off of 1-3 s
(the operator submits, then defers; the triggerer picks the trigger up), then drive the
trigger built as the provider's deferrable operator builds it, at its default polling
settings, until it yields its event. Latency = event time - the run's ``end_time``.

Runs of ``--scaled`` classes live on an emulator whose clock runs ``scale`` times faster
(a 10-minute run takes 60 s at 0.1), and both providers' polling is scaled by the same
factor: the official trigger gets ``polling_period_seconds = 30 * scale``; ours keeps 30
and its ``Watcher`` schedule is scaled as a whole (read on a clock ``scale`` times
slower, every pause it gives times ``scale``). Latencies are reported back in
emulated seconds; request counts do not depend on the scale.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import itertools
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CONN_ID, EmulatorClient, connection_json, emit
from providers import CURRENT_RUN, RequestCounter, make_trigger

DEFAULT_PERIOD = 30.0  # both providers' default polling_period_seconds
SCALED_CONN_ID = CONN_ID + "_scaled"
_keys = itertools.count()
SCALE: contextvars.ContextVar[float] = contextvars.ContextVar("bench_scale", default=1.0)


def scale_our_schedule() -> None:
    """Make ``airflow_dbx.trigger`` use a ``Watcher`` whose schedule is compressed by the current task's SCALE."""
    import airflow_dbx.trigger as trigger_module
    from airflow_dbx.waiting import Watcher

    class ScaledWatcher(Watcher):
        """The same schedule on a clock that runs SCALE times slower, its pauses scaled back."""

        def __init__(self, period: float, *, waited: float = 0.0, **kwargs: Any) -> None:
            self.scale = SCALE.get()
            super().__init__(period, waited=waited / self.scale, clock=lambda: time.time() / self.scale, **kwargs)

        def pause(self) -> float | None:
            pause = super().pause()
            return None if pause is None else pause * self.scale

    trigger_module.Watcher = ScaledWatcher  # type: ignore[misc]


async def sample(args: argparse.Namespace, counter: RequestCounter, duration: float, scale: float,
                 emulator: str, label: str) -> dict[str, object]:
    await asyncio.sleep(random.uniform(0, args.stagger))
    length = duration * random.uniform(1 - args.jitter, 1 + args.jitter)

    def submit() -> int:
        client = EmulatorClient(emulator)
        try:
            return client.submit(length, name=f"latency-{label}")
        finally:
            client.close()

    run_id = await asyncio.to_thread(submit)
    submitted = time.time()
    await asyncio.sleep(random.uniform(1.0, 3.0) * scale)
    key = next(_keys)
    SCALE.set(scale)
    CURRENT_RUN.set(key)
    period = DEFAULT_PERIOD if args.provider == "ours" else DEFAULT_PERIOD * scale
    conn_id = SCALED_CONN_ID if scale != 1.0 else CONN_ID
    trigger = make_trigger(args.provider, run_id, period, waiting_since=submitted, conn_id=conn_id)
    events = trigger.run()
    event = await events.__anext__()
    seen = time.time()
    await events.aclose()

    def snapshot() -> dict[str, object]:
        client = EmulatorClient(emulator)
        try:
            return client.run(run_id)
        finally:
            client.close()

    run = await asyncio.to_thread(snapshot)
    end = int(run["end_time"]) / 1000  # type: ignore[call-overload]
    requests = counter.for_run(key)
    return {
        "class": label,
        "duration_s": duration,
        "length_s": length,
        "scale": scale,
        "run_id": run_id,
        "latency_s": (seen - end) / scale,
        "runs_get": sum(n for path, n in requests.items() if path.endswith("jobs/runs/get")),
        "requests": sum(requests.values()),
        "event_ok": bool(event and (event.payload.get("successful") or event.payload.get("run_state"))),
    }


async def main(args: argparse.Namespace) -> None:
    os.environ[f"AIRFLOW_CONN_{SCALED_CONN_ID.upper()}"] = connection_json(args.provider, args.scaled_emulator)
    counter = RequestCounter()
    if args.provider == "ours":
        scale_our_schedule()
    jobs = []
    for spec in args.classes:
        label, duration, scaled = spec.split(":")
        scale = args.scale if scaled == "scaled" else 1.0
        emulator = args.scaled_emulator if scaled == "scaled" else args.emulator
        jobs += [sample(args, counter, float(duration), scale, emulator, label) for _ in range(args.samples)]
    results = await asyncio.wait_for(asyncio.gather(*jobs, return_exceptions=True), args.timeout)
    for item in results:
        if isinstance(item, BaseException):
            emit("sample_error", provider=args.provider, error=f"{type(item).__name__}: {item}"[:300])
        else:
            emit("sample", provider=args.provider, **item)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--provider", choices=["ours", "official"], required=True)
    parser.add_argument("--emulator", required=True, help="emulator running in real time")
    parser.add_argument("--scaled-emulator", required=True, help="emulator running at --scale")
    parser.add_argument("--scale", type=float, default=0.1)
    parser.add_argument("--classes", nargs="+", default=["5s:5:real", "60s:60:real", "10min:600:scaled"],
                        help="LABEL:SECONDS:real|scaled")
    parser.add_argument("--samples", type=int, default=6, help="runs per class")
    parser.add_argument("--jitter", type=float, default=0.1, help="run lengths vary by +-this fraction")
    parser.add_argument("--stagger", type=float, default=10.0, help="submits spread over this many seconds")
    parser.add_argument("--timeout", type=float, default=400.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
