"""4. ASGI end to end: uvicorn serving ``benchmarks/project`` (its views: urls.py).

uvicorn runs in a subprocess (one worker, a free loopback port), so that its
CPU time per request can be read from /proc. The load generator is wrk where
it is installed (``python3 dev.py bench`` installs it when root): a Python one
shares the two cores with the server and costs about as much CPU per request
as the server, wrk a fraction of that. Else it is the small HTTP/1.1 client
below, in this process; the page says which ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import Config, Contender, Ratio, Sample, Section

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
KINDS = {"trivial": "trivial queries", "1ms": "1 ms queries"}
LABELS = {
    "backend": "this backend",
    "stock": "stock Django async",
    "raw": "raw psycopg_pool in the view",
}
# The gather scenario: three 5 ms queries per request, at these client counts
# (one client: the latency of a request alone, the server never CPU-bound).
GATHER_CLIENTS = (1, 10, 100)
# An empty view at this many clients: what the handler alone costs and waits.
FLOOR_CLIENTS = 10


@dataclass(frozen=True)
class Load:
    """What one load generator run measured (latencies in seconds)."""

    requests: int
    seconds: float
    p50: float
    p99: float


# ##### wrk #####

UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
LATENCY = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m),", re.MULTILINE)
BAD = re.compile(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*")


def wrk_version(binary: str) -> str:
    """``wrk 4.1.0``, as ``wrk -v`` prints it (it exits 1 doing so)."""
    completed = subprocess.run([binary, "-v"], capture_output=True, text=True)
    first = (completed.stdout or completed.stderr).strip().splitlines()
    return " ".join(first[0].split()[:2]) if first else "wrk"


async def run_wrk(binary: str, url: str, clients: int, seconds: float) -> Load:
    """One thread, ``clients`` keep-alive connections, for ``seconds``."""
    proc = await asyncio.create_subprocess_exec(
        *(binary, "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s"),
        *("--timeout", "30s", "--latency", url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited {proc.returncode}\n{text}")
    bad = BAD.search(text)
    if bad is not None:
        raise RuntimeError(f"wrk: {bad.group(0)}\n{text}")
    total = TOTAL.search(text)
    latencies = {m[0]: float(m[1]) * UNITS[m[2]] for m in LATENCY.findall(text)}
    if total is None or set(latencies) != {"50", "99"}:
        raise RuntimeError(f"wrk: unexpected output\n{text}")
    elapsed = float(total.group(2)) * UNITS[total.group(3)]
    return Load(int(total.group(1)), elapsed, latencies["50"], latencies["99"])


# ##### The Python client #####


async def get(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int, path: str
) -> None:
    """One GET on a keep-alive connection (the views send a Content-Length)."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    if status.split(" ", 2)[1:2] != ["200"]:
        raise RuntimeError(f"unexpected response: {status!r}")
    length = 0
    for line in lines:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)


async def python_load(port: int, path: str, clients: int, total: int) -> Load:
    """``total`` GET requests over ``clients`` keep-alive connections."""
    streams = await asyncio.gather(
        *(asyncio.open_connection(HOST, port) for _ in range(clients))
    )
    latencies: list[float] = []
    remaining = total

    async def drive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            sent = time.perf_counter()
            await get(reader, writer, port, path)
            latencies.append(time.perf_counter() - sent)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(drive(*stream) for stream in streams))
        elapsed = time.perf_counter() - started
    finally:
        for _, writer in streams:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    ordered = sorted(latencies)

    def percentile(fraction: float) -> float:
        return ordered[
            min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
        ]

    return Load(len(latencies), elapsed, percentile(0.5), percentile(0.99))


# ##### The server #####


class Server:
    """uvicorn in a subprocess, started by :meth:`start`, stopped by :meth:`stop`."""

    def __init__(self, url: str) -> None:
        self.url = url
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            self.port = int(sock.getsockname()[1])
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        command = [
            *(sys.executable, "-m", "uvicorn", "benchmarks.project.asgi:application"),
            *("--host", HOST, "--port", str(self.port)),
            *("--loop", "asyncio", "--lifespan", "off"),
            *("--log-level", "warning", "--no-access-log"),
        ]
        env = dict(
            os.environ,
            DATABASE_URL=self.url,
            DJANGO_SETTINGS_MODULE="benchmarks.project.settings",
        )
        # Popen only starts the server (stop() waits for it, off the hot path).
        self.proc = subprocess.Popen(command, cwd=ROOT, env=env)  # noqa: ASYNC220
        deadline = time.monotonic() + 30
        while True:
            try:
                reader, writer = await asyncio.open_connection(HOST, self.port)
                try:
                    await get(reader, writer, self.port, "/ping/")
                finally:
                    writer.close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("uvicorn did not start") from None
                await asyncio.sleep(0.1)

    def cpu_seconds(self) -> float:
        """CPU time (user + system, all threads) the server has used so far."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1]
        utime, stime = fields.split()[11:13]
        return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)  # a clean shutdown closes the pools
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.asynccontextmanager
async def section(url: str, config: Config) -> AsyncIterator[Section]:
    """The contenders; the server runs while the section is open."""
    server = Server(url)
    wrk = shutil.which("wrk")
    clients, requests = config.clients, config.requests

    async def load(path: str, clients: int, total: int) -> Sample:
        """Load ``path``: for ``config.asgi_seconds`` with wrk, else ``total``
        requests; the server's CPU per request, and the latencies."""
        cpu = server.cpu_seconds()
        if wrk:
            where = f"http://{HOST}:{server.port}{path}"
            done = await run_wrk(wrk, where, clients, config.asgi_seconds)
        else:
            done = await python_load(server.port, path, clients, total)
        cpu_us = (server.cpu_seconds() - cpu) / done.requests * 1e6
        rate = done.requests / done.seconds
        return Sample(rate, cpu_us, p50=done.p50 * 1000, p99=done.p99 * 1000)

    def contender(side: str, kind: str, clients: int, total: int) -> Contender:
        key = f"{'ours' if side == 'backend' else side}_{kind}"
        if kind == "gather":
            how = "at once (gather)" if side == "backend" else "one after another"
            key, label = f"{key}_{clients}", f"3 5 ms queries {how}, {clients} clients"
        else:
            label = f"3 {KINDS[kind]}"

        async def run() -> Sample:
            return await load(f"/{side}/{kind}/", clients, total)

        return Contender(key, f"{LABELS[side]}, {label}", run, ours=side == "backend")

    if wrk:
        per_run = f"{config.asgi_seconds:g} s per run"
        generator = f"{wrk_version(wrk)} (one thread)"
    else:
        per_run = f"{requests:,} requests per run"
        generator = "the Python client in benchmarks/endtoend.py (wrk not installed)"
    section = Section(
        key="asgi",
        title="ASGI end to end",
        unit="requests/s",
        description=(
            "uvicorn (one worker, h11, asyncio loop) serving a tiny Django "
            "project (no middleware) whose async view runs 3 queries, one "
            f"cursor each; {clients} concurrent keep-alive clients, "
            f"{per_run}. Two query kinds: trivial "
            "(`SELECT %s::int`) and 1 ms of server time (`SELECT "
            'pg_sleep(0.001), %s::int`). This backend: `OPTIONS["pool"]`, '
            "10 connections. Stock Django: its own pool, 10 connections, one "
            "`sync_to_async` hop per query (Django's ASGI handler gives each "
            "request a thread of its own for them). Raw psycopg_pool: the "
            "same view on a psycopg `AsyncConnectionPool` (10 connections), "
            "the ceiling for any async driver behind Django's ASGI handler "
            "(with the same client-side binding cursor). "
            "Server CPU: user + system time of the uvicorn process per "
            "request. The gather scenario: a view whose three independent "
            "5 ms queries run at once, each on an `independent_connection()` "
            "(a pool of 30), against stock Django's same view, which can only "
            f"run them one after another. Load generator: {generator}."
        ),
        contenders=[
            *(
                contender(side, kind, clients, requests)
                for kind in KINDS
                for side in ("backend", "stock", "raw")
            ),
            # (The Python client sends fewer requests for fewer clients.)
            *(
                contender(side, "gather", n, min(requests, 200 * n))
                for n in GATHER_CLIENTS
                for side in ("backend", "stock")
            ),
            # The floor of any view: no query at all.
            Contender(
                f"ping_{FLOOR_CLIENTS}",
                f"an empty view (no query), {FLOOR_CLIENTS} clients",
                lambda: load("/ping/", FLOOR_CLIENTS, min(requests, 2000)),
            ),
        ],
        cpu_label="server CPU µs/request",
        ratios=[
            Ratio(
                "ours_trivial",
                "raw_trivial",
                1.03,
                "ASGI server CPU/request vs raw psycopg_pool",
                "cpu",
            ),
            Ratio("ours_1ms", "raw_1ms", measure="cpu"),
            Ratio(
                "ours_gather_10",
                "stock_gather_10",
                0.45,
                "gather, p50 at 10 clients vs stock",
                "p50",
            ),
            Ratio(
                f"ping_{FLOOR_CLIENTS}",
                "stock_gather_10",
                None,
                "the floor: an empty view, p50 at 10 clients vs stock's gather",
                "p50",
            ),
            Ratio("ours_gather_100", "stock_gather_100", measure="p50"),
            Ratio("ours_gather_1", "stock_gather_1", measure="p50"),
            Ratio("ours_trivial", "stock_trivial", None, "vs stock, trivial"),
            Ratio("ours_1ms", "stock_1ms", None, "vs stock, 1 ms queries"),
            Ratio("raw_trivial", "stock_trivial", None, "the async ceiling"),
            Ratio("raw_1ms", "stock_1ms", None, "the async ceiling"),
        ],
        note=(
            "Every request also goes through uvicorn and Django's ASGI "
            "handler, which cost far more CPU than three queries, and "
            "everything shares two cores, so the server is CPU-bound long "
            "before the database is. Stock Django's queries do not serialize "
            "here: its ASGI handler gives each request a thread of its own "
            "(`ThreadSensitiveContext`), and its pool spares the connection "
            "set-up. Raw psycopg_pool in the same view is the ceiling for any "
            "async driver behind Django's ASGI handler, hence the target: "
            "server CPU per request within 3% of it. In the gather scenario "
            "the one uvicorn worker is CPU-bound from 10 clients on (requests "
            "per second times server CPU per request is about one core), so "
            "the 10 ms a request saves by running its three queries at once "
            "mostly waits behind other requests' handling; with one client it "
            "shows whole. The empty view (no query at all) is the floor of "
            "that median: with every client's request in the one worker's "
            "queue, a request waits for about ten others' handling (Little's "
            "law: clients ÷ requests per second)."
        ),
    )
    try:
        await server.start()
        for kind in KINDS:
            for side in ("backend", "stock", "raw"):
                # Warm-up: the pools fill, Django's URL resolver caches.
                await load(f"/{side}/{kind}/", clients, clients * 3)
        for side in ("backend", "stock"):
            await load(f"/{side}/gather/", 10, 100)
        yield section
    finally:
        with contextlib.suppress(Exception):
            server.stop()
