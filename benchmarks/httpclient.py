"""A small HTTP/1.1 load generator on raw asyncio streams.

``CLIENTS`` keep-alive connections each send GET requests one after another
until ``total`` requests have been sent; every request's latency is recorded.
Only what the benchmark server sends is understood: a status line, headers
and a body of ``Content-Length`` bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field


class HTTPError(Exception):
    """The server answered something other than 200, or nothing useful."""


@dataclass
class LoadResult:
    requests: int
    seconds: float
    latencies: list[float] = field(repr=False)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, fraction: float) -> float:
        """The latency (seconds) below which ``fraction`` of requests fall."""
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
        return ordered[index]


async def read_response(reader: asyncio.StreamReader) -> bytes:
    """Read one response; return its body, or raise HTTPError."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = await read_chunked(reader)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    if len(status) < 2 or status[1] != "200":
        raise HTTPError(f"unexpected response: {lines[0]!r} {body[:200]!r}")
    return body


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers are sent
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


class Client:
    """One keep-alive connection to ``host:port``."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def get(self, path: str) -> bytes:
        assert self.reader is not None and self.writer is not None
        self.writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n".encode()
        )
        return await read_response(self.reader)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
            self.writer = self.reader = None


async def get_once(host: str, port: int, path: str) -> bytes:
    client = Client(host, port)
    await client.connect()
    try:
        return await client.get(path)
    finally:
        await client.close()


async def run_load(
    host: str, port: int, path: str, *, clients: int, total: int
) -> LoadResult:
    """Send ``total`` GET requests over ``clients`` concurrent connections."""
    pool = [Client(host, port) for _ in range(clients)]
    await asyncio.gather(*(client.connect() for client in pool))
    latencies: list[float] = []
    remaining = total

    async def drive(client: Client) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            sent = time.perf_counter()
            await client.get(path)
            latencies.append(time.perf_counter() - sent)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(drive(client) for client in pool))
        elapsed = time.perf_counter() - started
    finally:
        await asyncio.gather(*(client.close() for client in pool))
    return LoadResult(len(latencies), elapsed, latencies)
