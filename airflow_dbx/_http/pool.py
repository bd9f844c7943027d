"""The process-wide pool of aiohttp sessions: one per (event loop, workspace, TLS setting)."""

from __future__ import annotations

import asyncio
import atexit
import os
import ssl
import threading
from typing import TYPE_CHECKING

import aiohttp
import certifi

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

MAX_CONNECTIONS_PER_HOST = 32  # per event loop: every hook polling one workspace shares them


def default_ca_file() -> str:
    """The CA bundle requests would use, so both transports trust the same authorities."""
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()


class _LoopSessions:
    def __init__(self) -> None:
        self.sessions: dict[tuple[str, bool | str], aiohttp.ClientSession] = {}
        self.closer: AsyncGenerator[None, None] | None = None


class SessionPool:
    """One aiohttp session per (event loop, workspace, TLS setting), shared process-wide.

    Each loop's sessions are closed when the loop shuts down: an async generator started on
    the loop is finalised by ``loop.shutdown_asyncgens()``, which ``asyncio.run`` and
    ``asyncio.Runner`` (so the triggerer and pytest-asyncio) call before closing the loop.
    Loops closed some other way are cleaned up at interpreter exit.
    """

    def __init__(self) -> None:
        self._loops: dict[asyncio.AbstractEventLoop, _LoopSessions] = {}
        self._contexts: dict[bool | str, ssl.SSLContext | bool] = {}
        self._lock = threading.Lock()

    async def get(self, base_url: str, verify: bool | str) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        entry = self._loops.get(loop)
        if entry is None:
            with self._lock:
                entry = self._loops.setdefault(loop, _LoopSessions())
            if entry.closer is None:
                # Held here because the loop keeps only a weak reference to its async generators.
                entry.closer = self._close_at_shutdown(loop, entry)
                await entry.closer.__anext__()
        session = entry.sessions.get((base_url, verify))
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=MAX_CONNECTIONS_PER_HOST, limit_per_host=MAX_CONNECTIONS_PER_HOST, ssl=self._ssl(verify)
            )
            session = aiohttp.ClientSession(connector=connector)
            entry.sessions[(base_url, verify)] = session
        return session

    def _ssl(self, verify: bool | str) -> ssl.SSLContext | bool:
        if verify is False:
            return False
        with self._lock:
            if verify not in self._contexts:
                cafile = verify if isinstance(verify, str) else default_ca_file()
                self._contexts[verify] = ssl.create_default_context(cafile=cafile)
            return self._contexts[verify]

    async def _close_at_shutdown(
        self, loop: asyncio.AbstractEventLoop, entry: _LoopSessions
    ) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            await self._close_all(entry)
            self._loops.pop(loop, None)

    async def close_loop_sessions(self) -> None:
        """Close the running loop's sessions now; a later request opens a new one."""
        entry = self._loops.get(asyncio.get_running_loop())
        if entry is not None:
            await self._close_all(entry)

    @staticmethod
    async def _close_all(entry: _LoopSessions) -> None:
        current = list(entry.sessions.values())
        entry.sessions.clear()
        for session in current:
            await session.close()

    def close_at_exit(self) -> None:
        for loop, entry in list(self._loops.items()):
            if entry.closer is None:
                continue
            if not loop.is_closed() and not loop.is_running():
                loop.run_until_complete(entry.closer.aclose())
                continue
            # The loop is gone and its sockets with it: mark the sessions closed so no
            # "Unclosed client session" warning fires while the interpreter shuts down,
            # then finish the generator by hand (nothing in it awaits once they are gone).
            for session in entry.sessions.values():
                connector = session.connector
                session.detach()
                if connector is not None:
                    connector._close()
            entry.sessions.clear()
            finish = entry.closer.aclose()
            try:
                finish.send(None)
            except StopIteration:
                pass
            else:
                finish.close()


SESSIONS = SessionPool()
atexit.register(SESSIONS.close_at_exit)


async def close_sessions() -> None:
    """Close the running loop's shared aiohttp sessions now. ``asyncio.run`` and
    ``asyncio.Runner`` do it when the loop shuts down; call it before closing a loop by hand."""
    await SESSIONS.close_loop_sessions()
