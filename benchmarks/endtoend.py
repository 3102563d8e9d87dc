"""4. ASGI end to end: uvicorn serving the benchmark project, 100 clients.

One uvicorn process (a subprocess on a free loopback port, one worker) serves
``benchmarks/project``: ``/backend/<kind>/`` runs three queries on this
backend's pooled async connection, ``/stock/<kind>/`` the same three queries
on Django's stock backend (with its own pool) through ``sync_to_async``, one
hop per query, as Django's async ORM does, and ``/raw/<kind>/`` on a raw
psycopg pool; ``/backend/gather/`` and ``/stock/gather/`` run three 5 ms
queries at once and one after another, at 1, 10 and 100 clients. The load
generator is wrk (``benchmarks.wrk``) where it is installed, else
``benchmarks.httpclient`` in this process; the report says which ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import wrk
from benchmarks.common import Contender, Ratio, Sample, SectionResult
from benchmarks.httpclient import get_once, run_load

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
KINDS = {"trivial": "trivial queries", "1ms": "1 ms queries"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Server:
    """uvicorn in a subprocess, started by :meth:`start`, stopped by :meth:`stop`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "benchmarks.project.asgi:application",
            *("--host", HOST, "--port", str(self.port)),
            *("--loop", "asyncio", "--lifespan", "off"),
            *("--log-level", "warning", "--no-access-log"),
        ]

    async def start(self) -> None:
        env = dict(
            os.environ,
            DATABASE_URL=self.url,
            DJANGO_SETTINGS_MODULE="benchmarks.project.settings",
        )
        # Popen only starts the server (stop() waits for it, off the hot path).
        self.proc = subprocess.Popen(self.command(), cwd=ROOT, env=env)  # noqa: ASYNC220
        deadline = time.monotonic() + 30
        while True:
            try:
                await get_once(HOST, self.port, "/ping/")
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


LABELS = {
    "backend": "this backend",
    "stock": "stock Django async",
    "raw": "raw psycopg_pool in the view",
}
# The gather scenario: three 5 ms queries per request, at these client counts
# (one client: the latency of a request alone, the server never CPU-bound).
GATHER_CLIENTS = (1, 10, 100)


class EndToEnd:
    def __init__(self, url: str, clients: int, requests: int, seconds: float) -> None:
        self.server = Server(url)
        self.clients = clients
        self.requests = requests  # per run, with the Python load generator
        self.seconds = seconds  # per run, with wrk
        self.wrk = wrk.find()
        self.generator = (
            f"{wrk.version(self.wrk)} (one thread)"
            if self.wrk
            else "the Python client benchmarks/httpclient.py (wrk not installed)"
        )

    async def open(self) -> None:
        await self.server.start()
        for kind in KINDS:
            for side in ("backend", "stock", "raw"):
                # Warm-up: the pools fill, Django's URL resolver caches.
                await self.load(f"/{side}/{kind}/", self.clients, self.clients * 3)
        for side in ("backend", "stock"):
            await self.load(f"/{side}/gather/", 10, 100)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.server.stop()

    async def load(self, path: str, clients: int, total: int) -> Sample:
        cpu = self.server.cpu_seconds()
        if self.wrk:
            url = f"http://{HOST}:{self.server.port}{path}"
            done = await wrk.run_wrk(self.wrk, url, clients, self.seconds)
            requests, rate, p50, p99 = done.requests, done.rate, done.p50, done.p99
        else:
            result = await run_load(
                HOST, self.server.port, path, clients=clients, total=total
            )
            requests, rate = result.requests, result.rate
            p50, p99 = result.percentile(0.5), result.percentile(0.99)
        cpu_us = (self.server.cpu_seconds() - cpu) / requests * 1e6
        return Sample(rate, cpu_us, p99_ms=p99 * 1000, p50_ms=p50 * 1000)

    def contender(self, side: str, kind: str) -> Contender:
        key = f"{'ours' if side == 'backend' else side}_{kind}"

        async def run() -> Sample:
            return await self.load(f"/{side}/{kind}/", self.clients, self.requests)

        label = f"{LABELS[side]}, 3 {KINDS[kind]}"
        return Contender(key, label, run, ours=side == "backend")

    def gather_contender(self, side: str, clients: int) -> Contender:
        key = f"{'ours' if side == 'backend' else side}_gather_{clients}"
        how = "at once (gather)" if side == "backend" else "one after another"

        # (The Python client sends a number of requests: fewer for few clients.)
        total = min(self.requests, 200 * clients)

        async def run() -> Sample:
            return await self.load(f"/{side}/gather/", clients, total)

        label = f"{LABELS[side]}, 3 5 ms queries {how}, {clients} clients"
        return Contender(key, label, run, ours=side == "backend")

    @property
    def per_run(self) -> str:
        if self.wrk:
            return f"{self.seconds:g} s per run"
        return f"{self.requests:,} requests per run"

    def section(self) -> SectionResult:
        return SectionResult(
            key="asgi",
            title="ASGI end to end",
            unit="requests/s",
            description=(
                "uvicorn (one worker, h11, asyncio loop) serving a tiny Django "
                "project (no middleware) whose async view runs 3 queries, one "
                f"cursor each; {self.clients} concurrent keep-alive clients, "
                f"{self.per_run}. Two query kinds: trivial "
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
                "run them one after another. Load generator: "
                f"{self.generator}."
            ),
            contenders=[
                *(
                    self.contender(side, kind)
                    for kind in KINDS
                    for side in ("backend", "stock", "raw")
                ),
                *(
                    self.gather_contender(side, clients)
                    for clients in GATHER_CLIENTS
                    for side in ("backend", "stock")
                ),
            ],
            cpu_label="server CPU µs/request",
            ratios=[
                Ratio(
                    "ours_trivial",
                    "raw_trivial",
                    1.03,
                    "ASGI server CPU/request vs raw psycopg_pool",
                    measure="cpu",
                ),
                Ratio("ours_1ms", "raw_1ms", None, measure="cpu"),
                Ratio(
                    "ours_gather_10",
                    "stock_gather_10",
                    0.45,
                    "gather, p50 at 10 clients vs stock",
                    measure="p50",
                ),
                Ratio("ours_gather_100", "stock_gather_100", None, measure="p50"),
                Ratio("ours_gather_1", "stock_gather_1", None, measure="p50"),
                Ratio("ours_trivial", "stock_trivial", None, "vs stock, trivial"),
                Ratio("ours_1ms", "stock_1ms", None, "vs stock, 1 ms queries"),
                Ratio("raw_trivial", "stock_trivial", None, "the async ceiling"),
                Ratio("raw_1ms", "stock_1ms", None, "the async ceiling"),
            ],
        )
