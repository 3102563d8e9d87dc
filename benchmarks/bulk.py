"""Bulk work: loading rows with COPY (`copy`), and pipelined INSERTs (`pipeline`).

``copy``: the same rows loaded three ways on this backend: ``cursor.copy()``
(``COPY ... FROM STDIN``), ``cursor.executemany()`` (psycopg pipelines it)
and the native ORM's ``abulk_create()``.

``pipeline``: small INSERTs in one transaction, one round trip each or all
in ``connection.pipeline()``, on loopback and with 1 ms more per round trip:
a network namespace whose loopback has ``tc netem delay 0.5ms`` (each way),
crossed by two relays (``benchmarks/relay.py``) between unix sockets, when
root and the kernel allow; else a relay on 127.0.0.1 that delays the
server's replies by 1 ms. The section says which, and the extra round-trip
time measured through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, cast

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from benchmarks.common import Contender, Ratio, Sample, SectionResult, Timer
from benchmarks.orm import create_table, drop_table

__all__ = [
    "LATENCY", "copy_section", "create_pipeline_table", "create_table",
    "drop_pipeline_table", "drop_table", "latency", "pipeline_section",
]  # fmt: skip

PIPELINE_TABLE = "bench_pipeline"
LATENCY = "latency"  # the alias that goes through the added latency
PROBES = 200  # round trips timed to measure the latency added


def copy_section(url: str, rows: int) -> SectionResult:
    """COPY vs executemany vs abulk_create, ``rows`` rows each."""
    from benchmarks.project.models import TABLE, Item

    values = [(i, f"item {i}") for i in range(rows)]

    def load(fill: Callable[[Any], Awaitable[None]]) -> Callable[[], Awaitable[Sample]]:
        async def run() -> Sample:
            from django_async_backend.db import async_connections

            async def body() -> Sample:
                connection = async_connections["default"]
                async with connection.cursor() as cursor:
                    await cursor.execute(f"TRUNCATE {TABLE}")
                    timer = Timer()
                    await fill(cursor)
                    sample = timer.sample(rows)
                    await cursor.execute(f"SELECT count(*) FROM {TABLE}")
                    assert await cursor.fetchone() == (rows,)
                return sample

            return await asyncio.create_task(body())

        return run

    async def copy(cursor: Any) -> None:
        async with cursor.copy(f"COPY {TABLE} (value, name) FROM STDIN") as copy:
            for row in values:
                await copy.write_row(row)

    async def executemany(cursor: Any) -> None:
        sql = f"INSERT INTO {TABLE} (value, name) VALUES (%s, %s)"
        await cursor.executemany(sql, values)

    async def bulk_create(cursor: Any) -> None:
        items = [Item(value=value, name=name) for value, name in values]
        await Item.objects.using("default").abulk_create(items)

    return SectionResult(
        key="copy",
        title="Bulk loading",
        unit="rows/s",
        description=(
            f"{rows:,} rows of `(int, text)` loaded into an empty table on one "
            "connection: `cursor.copy()` with `write_row()` per row (`COPY ... "
            "FROM STDIN`), `cursor.executemany()` of one INSERT (which psycopg "
            "sends as a pipeline), and the native ORM's `abulk_create()` (one "
            "INSERT of every row; the time includes building the instances)."
        ),
        contenders=[
            Contender("copy", "this backend, cursor.copy()", load(copy), ours=True),
            Contender("many", "this backend, executemany()", load(executemany)),
            Contender("orm", "this backend, abulk_create()", load(bulk_create)),
        ],
        ratios=[
            Ratio("copy", "many", note="COPY vs executemany"),
            Ratio("copy", "orm", note="COPY vs abulk_create"),
        ],
    )


def pipeline_section(n: int, link: Link) -> SectionResult:
    """``n`` INSERTs one by one vs in a pipeline, direct and through ``link``."""

    def inserts(alias: str, piped: bool) -> Callable[[], Awaitable[Sample]]:
        async def run() -> Sample:
            from django_async_backend.db import async_connections
            from django_async_backend.db.transaction import async_atomic

            async def body() -> Sample:
                connection = cast(Any, async_connections[alias])
                sql = f"INSERT INTO {PIPELINE_TABLE} (value) VALUES (%s)"
                async with connection.cursor() as cursor:
                    await cursor.execute(f"TRUNCATE {PIPELINE_TABLE}")
                    timer = Timer()
                    async with async_atomic(using=alias):
                        if piped:
                            async with connection.pipeline():
                                for i in range(n):
                                    await cursor.execute(sql, [i])
                        else:
                            for i in range(n):
                                await cursor.execute(sql, [i])
                    return timer.sample(n)

            return await asyncio.create_task(body())

        return run

    extra = f"+{link.added_ms:.1f} ms"
    return SectionResult(
        key="pipeline",
        title="Pipelined INSERTs",
        unit="INSERTs/s",
        description=(
            f"{n:,} one-row INSERTs in one `async_atomic()` block on one cursor, "
            "awaited one by one (a round trip each) or inside `async with "
            "connection.pipeline():` (sent together), on loopback and with "
            f"latency added by {link.method}; measured over {PROBES} `SELECT 1`, "
            f"it adds {link.added_ms:.2f} ms per round trip."
        ),
        contenders=[
            Contender("one", "one by one, loopback", inserts("default", False), True),
            Contender("piped", "pipeline, loopback", inserts("default", True), True),
            Contender("one_far", f"one by one, {extra}", inserts(LATENCY, False), True),
            Contender("piped_far", f"pipeline, {extra}", inserts(LATENCY, True), True),
        ],
        ratios=[
            Ratio("piped", "one", note="pipeline vs one by one, loopback"),
            Ratio("piped_far", "one_far", note=f"pipeline vs one by one, {extra}"),
        ],
    )


def create_pipeline_table(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"DROP TABLE IF EXISTS {PIPELINE_TABLE}")
        connection.execute(f"CREATE TABLE {PIPELINE_TABLE} (value int NOT NULL)")


def drop_pipeline_table(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"DROP TABLE IF EXISTS {PIPELINE_TABLE}")


# ##### The added latency #####


class Link:
    """A path to PostgreSQL with 1 ms more per round trip, while open."""

    def __init__(self, method: str, host: str, port: str) -> None:
        self.method, self.host, self.port = method, host, port
        self.processes: list[subprocess.Popen[str]] = []
        self.cleanups: list[Callable[[], object]] = []
        self.added_ms = 0.0

    def relay(self, *args: str, namespace: str | None = None) -> str:
        """Start ``benchmarks.relay``; return the address it listens on."""
        argv = [sys.executable, "-m", "benchmarks.relay", *args]
        if namespace is not None:
            argv = ["ip", "netns", "exec", namespace, *argv]
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        self.processes.append(process)
        line = process.stdout.readline() if process.stdout else ""
        if not line.startswith("listening "):
            raise RuntimeError(f"the relay did not start: {' '.join(argv)}")
        return line.split(" ", 1)[1].strip()

    def close(self) -> None:
        for process in self.processes:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        for cleanup in reversed(self.cleanups):
            with contextlib.suppress(Exception):
                cleanup()


def _netem_link(url: str) -> Link:
    """A network namespace whose loopback delays each packet by 0.5 ms."""
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("tc") is None:
        raise RuntimeError("needs root, ip and tc")
    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute("SHOW unix_socket_directories").fetchone()
        port = connection.info.port
    socket = f"{str(row[0] if row else '').split(',')[0].strip()}/.s.PGSQL.{port}"
    if not os.path.exists(socket):
        raise RuntimeError(f"no server socket at {socket}")
    namespace = f"dab-bench-{os.getpid()}"
    directory = tempfile.mkdtemp(prefix="dab-bench-")
    method = "`tc netem delay 0.5ms` on a network namespace's loopback"
    link = Link(method, directory, "5432")
    link.cleanups.append(lambda: shutil.rmtree(directory, ignore_errors=True))
    inside = ["ip", "netns", "exec", namespace]
    try:
        _run("ip", "netns", "add", namespace)
        link.cleanups.append(lambda: _run("ip", "netns", "del", namespace))
        _run(*inside, "ip", "link", "set", "lo", "up")
        _run(*inside, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay",
             "0.5ms")  # fmt: skip
        # Unix socket in, the namespace's (delayed) loopback, unix socket out.
        hop = link.relay("--listen", "tcp:127.0.0.1:0", "--upstream",
                         f"unix:{socket}", namespace=namespace)  # fmt: skip
        link.relay("--listen", f"unix:{directory}/.s.PGSQL.5432", "--upstream",
                   hop, namespace=namespace)  # fmt: skip
    except BaseException:
        link.close()
        raise
    return link


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def _delay_link(url: str) -> Link:
    """A relay on 127.0.0.1 that delays the server's replies by 1 ms."""
    info = conninfo_to_dict(url)
    upstream = f"tcp:{info.get('host') or '127.0.0.1'}:{info.get('port') or 5432}"
    link = Link("a relay on 127.0.0.1 delaying each reply by 1 ms", "", "")
    try:
        address = link.relay("--listen", "tcp:127.0.0.1:0", "--upstream", upstream,
                             "--delay", "0.001")  # fmt: skip
    except BaseException:
        link.close()
        raise
    link.host, _, link.port = address.removeprefix("tcp:").rpartition(":")
    return link


@contextlib.contextmanager
def latency(url: str) -> Iterator[Link]:
    """The ``latency`` alias: ``default`` through a 1 ms link, while open."""
    from django.db import connections

    try:
        link = _netem_link(url)
    except (RuntimeError, OSError, subprocess.CalledProcessError):
        link = _delay_link(url)  # no netem here (a container's kernel, say)
    settings = dict(connections.settings["default"], HOST=link.host, PORT=link.port)
    connections.settings[LATENCY] = settings
    try:
        direct = _round_trip(url, {})
        through = _round_trip(url, {"host": link.host, "port": link.port})
        link.added_ms = (through - direct) * 1000
        yield link
    finally:
        del connections.settings[LATENCY]
        link.close()


def _round_trip(url: str, overrides: dict[str, str]) -> float:
    """Seconds per ``SELECT 1`` round trip (the median of ``PROBES``)."""
    conninfo = make_conninfo(url, **overrides)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        times = []
        for _ in range(PROBES):
            started = time.perf_counter()
            connection.execute("SELECT 1").fetchone()
            times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]
