"""6. Bulk loading (``copy``) and 7. Pipelined INSERTs (``pipeline``).

The added latency of ``pipeline`` is a relay on 127.0.0.1
(``benchmarks/relay.py``, a process of its own so that its CPU is not the
benchmark's) that delays the server's replies by 1 ms; the section gives the
extra round-trip time measured through it.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, cast

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from benchmarks import orm
from benchmarks.common import (
    Config,
    Contender,
    Ratio,
    Sample,
    Section,
    Timer,
    in_task,
    table,
)

PIPELINE_TABLE = "bench_pipeline"
LATENCY = "latency"  # the alias that goes through the added latency
PROBES = 200  # round trips timed to measure the latency added


@contextlib.asynccontextmanager
async def copy_section(url: str, config: Config) -> AsyncIterator[Section]:
    """COPY vs executemany vs abulk_create, ``config.bulk_rows`` rows each."""
    from benchmarks.project.models import TABLE, Item
    from django_async_backend.db import async_connections

    rows = config.bulk_rows
    values = [(i, f"item {i}") for i in range(rows)]

    def load(fill: Callable[[Any], Awaitable[None]]) -> Callable[[], Awaitable[Sample]]:
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

        return lambda: in_task(body)

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

    section = Section(
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
            Contender("copy", "this backend, cursor.copy()", load(copy), True),
            Contender("many", "this backend, executemany()", load(executemany)),
            Contender("orm", "this backend, abulk_create()", load(bulk_create)),
        ],
        ratios=[
            Ratio("copy", "many", note="COPY vs executemany"),
            Ratio("copy", "orm", note="COPY vs abulk_create"),
        ],
    )
    with orm.table(url):
        yield section


@contextlib.asynccontextmanager
async def pipeline_section(url: str, config: Config) -> AsyncIterator[Section]:
    """``n`` INSERTs one by one vs in a pipeline, direct and through the relay."""
    from django_async_backend.db import async_connections
    from django_async_backend.db.transaction import async_atomic

    n = config.inserts

    def inserts(key: str, label: str, alias: str, piped: bool) -> Contender:
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

        return Contender(key, label, lambda: in_task(body), ours=True)

    create = f"CREATE TABLE {PIPELINE_TABLE} (value int NOT NULL)"
    with table(url, PIPELINE_TABLE, create), latency(url) as added_ms:
        extra = f"+{added_ms:.1f} ms"
        yield Section(
            key="pipeline",
            title="Pipelined INSERTs",
            unit="INSERTs/s",
            description=(
                f"{n:,} one-row INSERTs in one `async_atomic()` block on one "
                "cursor, awaited one by one (a round trip each) or inside "
                "`async with connection.pipeline():` (sent together), on "
                "loopback and with latency added by a relay on 127.0.0.1 "
                f"delaying each reply by 1 ms; measured over {PROBES} "
                f"`SELECT 1`, it adds {added_ms:.2f} ms per round trip."
            ),
            contenders=[
                inserts("one", "one by one, loopback", "default", False),
                inserts("piped", "pipeline, loopback", "default", True),
                inserts("one_far", f"one by one, {extra}", LATENCY, False),
                inserts("piped_far", f"pipeline, {extra}", LATENCY, True),
            ],
            ratios=[
                Ratio("piped", "one", note="pipeline vs one by one, loopback"),
                Ratio("piped_far", "one_far", note=f"pipeline vs one by one, {extra}"),
            ],
        )


@contextlib.contextmanager
def latency(url: str) -> Iterator[float]:
    """The ``latency`` alias, ``default`` through the relay, while open; yields
    the milliseconds it adds to a round trip."""
    from django.db import connections

    info = conninfo_to_dict(url)
    upstream = f"{info.get('host') or '127.0.0.1'}:{info.get('port') or 5432}"
    argv = [sys.executable, "-m", "benchmarks.relay", upstream, "0.001"]
    relay = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        line = relay.stdout.readline() if relay.stdout else ""
        if not line.startswith("listening "):
            raise RuntimeError(f"the relay did not start: {' '.join(argv)}")
        host, _, port = line.split()[1].rpartition(":")
        connections.settings[LATENCY] = dict(
            connections.settings["default"], HOST=host, PORT=port
        )
        try:
            direct = round_trip(url)
            through = round_trip(make_conninfo(url, host=host, port=port))
            yield (through - direct) * 1000
        finally:
            del connections.settings[LATENCY]
    finally:
        relay.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            relay.wait(timeout=5)


def round_trip(conninfo: str) -> float:
    """Seconds per ``SELECT 1`` round trip (the median of ``PROBES``)."""
    with psycopg.connect(conninfo, autocommit=True) as connection:
        times = []
        for _ in range(PROBES):
            started = time.perf_counter()
            connection.execute("SELECT 1").fetchone()
            times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]
