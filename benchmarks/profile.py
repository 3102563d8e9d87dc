"""Where the backend's time goes: client CPU per operation, and a profile.

    python -m benchmarks.profile [SCENARIO ...] [--n N] [--pyinstrument]

For each scenario this runs the backend's loop and the raw psycopg loop of
the same work, interleaved over a few rounds, and prints the client CPU time
(``time.process_time``) per operation: unlike throughput, it hardly depends on
what else the machine runs, and the difference is the backend's own cost.
With ``--pyinstrument`` (``pip install pyinstrument``) it then profiles the
backend's loop and prints the call tree.

Scenarios: ``reused`` (one cursor, ``SELECT %s::int``), ``per-query`` (a new
cursor per query), ``transaction`` (nested atomic blocks, 6 statements),
``pool`` (one pool checkout per query, ``independent_connection()``) and
``request`` (what an ASGI view's task does: a task with its own pooled
connection running 3 queries, one cursor each).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import psycopg

from benchmarks.common import database_url, setup_django
from benchmarks.loops import SQL, nested_transactions, round_trips

Loop = Callable[[int], Awaitable[None]]


async def ours_loop(scenario: str) -> tuple[Loop, Callable[[], Awaitable[None]]]:
    """The backend's loop for ``scenario``, and how to clean up after it."""
    from django_async_backend.db import async_connections
    from django_async_backend.db.transaction import async_atomic

    alias = "pooled" if scenario in ("pool", "request") else "default"
    connection = async_connections[alias]
    await connection.ensure_connection()

    async def reused(n: int) -> None:
        await round_trips(connection, n)

    async def per_query(n: int) -> None:
        await round_trips(connection, n, per_query=True)

    async def transaction(n: int) -> None:
        await nested_transactions(connection, n, async_atomic)

    async def pool(n: int) -> None:
        for i in range(n):
            async with async_connections.independent_connection():
                async with async_connections[alias].cursor() as cursor:
                    await cursor.execute(SQL, (i,))
                    await cursor.fetchone()

    async def view() -> None:
        # What a request's task does: its own pooled connection, 3 cursors.
        pooled = async_connections[alias]
        for i in range(3):
            async with pooled.cursor() as cursor:
                await cursor.execute(SQL, (i,))
                await cursor.fetchone()

    async def request(n: int) -> None:
        for _ in range(n):
            await asyncio.create_task(view())

    loops: dict[str, Loop] = {
        "reused": reused,
        "per-query": per_query,
        "transaction": transaction,
        "pool": pool,
        "request": request,
    }
    return loops[scenario], connection.close


async def raw_loop(
    scenario: str, url: str
) -> tuple[Loop, Callable[[], Awaitable[None]]]:
    """Raw psycopg doing the same work, with the backend's cursor class."""
    if scenario in ("pool", "request"):
        from psycopg_pool import AsyncConnectionPool

        pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=1,
            kwargs={"autocommit": True, "cursor_factory": psycopg.AsyncClientCursor},
            open=False,
        )
        await pool.open(wait=True)

        async def checkout(n: int) -> None:
            for i in range(n):
                async with pool.connection() as connection:
                    cursor = await connection.execute(SQL, (i,))
                    await cursor.fetchone()

        async def view() -> None:
            async with pool.connection() as connection:
                for i in range(3):
                    async with connection.cursor() as cursor:
                        await cursor.execute(SQL, (i,))
                        await cursor.fetchone()

        async def request(n: int) -> None:
            for _ in range(n):
                await asyncio.create_task(view())

        return (checkout if scenario == "pool" else request), pool.close
    connection = await psycopg.AsyncConnection.connect(
        url, autocommit=True, cursor_factory=psycopg.AsyncClientCursor
    )

    async def reused(n: int) -> None:
        await round_trips(connection, n)

    async def per_query(n: int) -> None:
        await round_trips(connection, n, per_query=True)

    async def transaction(n: int) -> None:
        await nested_transactions(connection, n, connection.transaction)

    loops: dict[str, Loop] = {
        "reused": reused,
        "per-query": per_query,
        "transaction": transaction,
    }
    return loops[scenario], connection.close


async def cpu_per_op(make: Callable[[], Awaitable[Any]], n: int) -> tuple[float, float]:
    """(client CPU µs, wall µs) per operation of one run, in a task of its own."""

    async def body() -> tuple[float, float]:
        loop, cleanup = await make()
        await loop(100)  # warm-up
        cpu, wall = time.process_time(), time.perf_counter()
        await loop(n)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        await cleanup()
        return cpu / n * 1e6, wall / n * 1e6

    return await asyncio.create_task(body())


async def compare(scenario: str, n: int, rounds: int) -> None:
    url = database_url()
    results: dict[str, list[tuple[float, float]]] = {"ours": [], "raw": []}
    for _ in range(rounds):
        results["ours"].append(await cpu_per_op(lambda: ours_loop(scenario), n))
        results["raw"].append(await cpu_per_op(lambda: raw_loop(scenario, url), n))
    cpu = {key: statistics.median(c for c, _ in runs) for key, runs in results.items()}
    wall = {key: statistics.median(w for _, w in runs) for key, runs in results.items()}
    print(
        f"{scenario:<12} client CPU/op: backend {cpu['ours']:6.1f} µs, raw psycopg "
        f"{cpu['raw']:6.1f} µs, overhead {cpu['ours'] - cpu['raw']:+6.1f} µs "
        f"({cpu['ours'] / cpu['raw'] - 1:+.0%}); wall/op {wall['ours']:6.1f} vs "
        f"{wall['raw']:6.1f} µs"
    )


async def profile(scenario: str, n: int) -> None:
    from pyinstrument import Profiler

    async def body() -> None:
        loop, cleanup = await ours_loop(scenario)
        await loop(100)
        profiler = Profiler(interval=0.0002, async_mode="disabled")
        profiler.start()
        await loop(n)
        profiler.stop()
        await cleanup()
        print(f"\n===== {scenario}: backend loop, {n} operations =====")
        print(profiler.output_text(unicode=True, time="percent_of_total"))
        flat = profiler.output_text(
            unicode=True, time="percent_of_total", flat=True, show_all=True
        )
        print("\n".join(flat.splitlines()[:45]))

    await asyncio.create_task(body())


async def main_async(args: argparse.Namespace) -> None:
    from django_async_backend.db import async_connections

    for scenario in args.scenarios:
        await compare(scenario, args.n, args.rounds)
    if args.pyinstrument:
        for scenario in args.scenarios:
            await profile(scenario, args.n)
    await async_connections.close_all()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile")
    choices = ["reused", "per-query", "transaction", "pool", "request"]
    parser.add_argument("scenarios", nargs="*", help=f"among {', '.join(choices)}")
    parser.add_argument("--n", type=int, default=3000, help="operations per run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pyinstrument", action="store_true")
    args = parser.parse_args(argv)
    args.scenarios = args.scenarios or choices
    if unknown := set(args.scenarios) - set(choices):
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    setup_django()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
