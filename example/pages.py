"""Open live pages for the smoke run: clients of the stream ``/api/events/``.

Each :class:`Page` reads the server-sent events as a browser's EventSource
would (chunked HTTP/1.1 on asyncio streams, loopback only). :func:`watched`
opens some pages, runs the load, waits (bounded) until every page has been
pushed every committed transfer, closes them, and reports what they saw:
transfers pushed per page, duplicates, the listener connections the server
used for them, the listeners left once they closed, and the push latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
from collections.abc import Awaitable, Callable
from typing import Any

HOST = "127.0.0.1"
POLLS = 300  # x 0.05 s: bounded waits on the server's state, never timings


class Page:
    """One open /live/ page: its stream of events."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.transfers: list[int] = []
        self.latencies: list[float] = []
        self.totals = 0
        self.problems: list[str] = []
        self._writer: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task[None] | None = None

    async def open(self) -> None:
        reader, self._writer = await asyncio.open_connection(HOST, self.port)
        self._writer.write(
            f"GET /api/events/ HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        await self._writer.drain()
        status = int((await reader.readuntil(b"\r\n")).split()[1])
        headers = {}
        while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if status != 200 or not headers.get("content-type", "").startswith(
            "text/event-stream"
        ):
            raise RuntimeError(f"/api/events/ answered HTTP {status} {headers}")
        self._reading = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        buffer = b""
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                buffer += await reader.readexactly(size)
                await reader.readexactly(2)
                while b"\n\n" in buffer:
                    message, buffer = buffer.split(b"\n\n", 1)
                    self._event(message.decode())

    def _event(self, message: str) -> None:
        fields = dict(
            line.split(": ", 1) for line in message.splitlines() if ": " in line
        )
        name, data = fields.get("event"), fields.get("data")
        if name == "totals" and data:
            self.totals += 1
        elif name == "transfer" and data:
            transfer = json.loads(data)
            self.transfers.append(transfer["id"])
            self.latencies.append(transfer["latency_ms"])
        elif name is not None:
            self.problems.append(f"unexpected event {name!r}: {data}")

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        if self._reading is not None:
            self._reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reading


async def watched(
    port: int,
    count: int,
    load: Callable[[], Awaitable[None]],
    committed: Callable[[], int],
    totals: Callable[[], Awaitable[dict[str, Any]]],
) -> dict[str, Any]:
    """Run ``load`` while ``count`` pages are open; what they were pushed."""

    async def until(check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        for _ in range(POLLS):
            seen = await totals()
            if check(seen):
                break
            await asyncio.sleep(0.05)
        return seen

    pages = [Page(port) for _ in range(count)]
    try:
        await asyncio.gather(*(page.open() for page in pages))
        while_open = await until(lambda seen: seen["listeners"] == count)
        await load()
        for _ in range(POLLS):
            if all(len(page.transfers) >= committed() for page in pages):
                break
            await asyncio.sleep(0.05)
    finally:
        await asyncio.gather(*(page.close() for page in pages))
    after_close = await until(lambda seen: seen["listeners"] == 0)
    pushed = [len(page.transfers) for page in pages]
    latencies = [value for page in pages for value in page.latencies]
    return {
        "pages": count,
        "pages_listening": while_open["listeners"],
        "listener_connections": while_open["listener_connections"],
        "pushed_min": min(pushed, default=0),
        "pushed_max": max(pushed, default=0),
        "pushed_twice": sum(len(p.transfers) - len(set(p.transfers)) for p in pages),
        "page_problems": [problem for page in pages for problem in page.problems],
        "listeners_after_close": after_close["listeners"],
        "push_latency_p50_ms": round(statistics.median(latencies), 2)
        if latencies
        else None,
    }
