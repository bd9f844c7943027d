"""``python -m airflow_dbx.emulator``: serve the emulator until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

from aiohttp import web

from airflow_dbx.emulator.app import State, make_app
from airflow_dbx.emulator.auth import Client
from airflow_dbx.emulator.faults import RATE_LIMIT_PRESETS
from airflow_dbx.emulator.server import DEFAULT_TOKEN

if TYPE_CHECKING:
    from collections.abc import Coroutine, Sequence


def _pair(text: str) -> tuple[str, str]:
    name, sep, secret = text.partition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME:SECRET, got {text!r}")
    return name, secret


def _limit(text: str) -> tuple[str | None, float]:
    path, sep, rate = text.partition("=")
    try:
        per_second = float(rate)
    except ValueError:
        per_second = 0.0
    if not sep or not path or per_second <= 0:
        raise argparse.ArgumentTypeError(f"expected PATH=PER_SECOND with a positive rate, got {text!r}")
    return (None if path == "*" else path), per_second


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="airflow-dbx-emulator", description="A local Databricks Jobs API emulator.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default)")
    parser.add_argument("--port-file", help="write the URL to this file once listening")
    parser.add_argument(
        "--token", default=DEFAULT_TOKEN, help=f"accepted personal access token (default {DEFAULT_TOKEN})"
    )
    parser.add_argument("--time-scale", type=float, default=1.0, help="multiply every emulated duration by this")
    parser.add_argument("--basic-user", type=_pair, action="append", default=[], metavar="USER:PASSWORD")
    parser.add_argument("--oauth-client", type=_pair, action="append", default=[], metavar="CLIENT_ID:SECRET")
    parser.add_argument("--cluster", action="append", default=[], help="an existing_cluster_id to accept")
    parser.add_argument(
        "--rate-limits", choices=sorted(RATE_LIMIT_PRESETS),
        help="per-endpoint request limits of a preset (databricks: the documented per-workspace limits)",
    )
    parser.add_argument(
        "--rate-limit", type=_limit, action="append", default=[], metavar="PATH=PER_SECOND",
        help="429 beyond PER_SECOND requests on PATH (e.g. jobs/runs/get=100; '*' for the whole workspace)",
    )
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop: uvloop when installed (auto, the default) or asyncio's own",
    )
    args = parser.parse_args(argv)
    if args.time_scale <= 0:
        parser.error("--time-scale must be positive")
    return args


async def serve(args: argparse.Namespace) -> None:
    state = State(args.time_scale)
    state.credentials.pats.add(args.token)
    for user, password in args.basic_user:
        state.credentials.add_basic_user(user, password)
    for client_id, secret in args.oauth_client:
        state.credentials.oauth_clients[client_id] = Client(secret, 3600.0)
    state.engine.clusters.update(args.cluster)
    if args.rate_limits:
        state.faults.set_rate_limit_preset(args.rate_limits)
    for path, per_second in args.rate_limit:
        state.faults.set_rate_limit(path, per_second, None, "seconds")
    runner = web.AppRunner(make_app(state), access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await web.TCPSite(runner, args.host, args.port).start()
        host, port = runner.addresses[0][:2]
        url = f"http://{host}:{port}"
        state.engine.base_url = url
        if args.port_file:
            tmp = f"{args.port_file}.tmp"
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write(url + "\n")
            os.replace(tmp, args.port_file)
        print(f"airflow-dbx emulator listening on {url}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def _run(main: Coroutine[Any, Any, None], loop: str) -> None:
    """Run on uvloop when asked or, with ``auto``, when it is installed; else on asyncio's own loop."""
    if loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if loop == "uvloop":
                raise SystemExit("--loop uvloop: uvloop is not installed") from None
        else:
            uvloop.run(main)
            return
    asyncio.run(main)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        _run(serve(args), args.loop)
    except OSError as exc:
        print(f"airflow-dbx emulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
