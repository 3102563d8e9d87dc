"""1. Sequential round trips: ``SELECT %s::int`` one after another, one connection.

This backend with one cursor reused and with a new ``async with cursor()``
per query, and with psycopg's defaults instead of Django's; raw psycopg as
anchors.py measures it (``AsyncConnection``, its default cursor: server-side
binding, prepared after 5 executions) and with the client-side binding
cursor this backend uses by default, like Django (reused, and one per query);
asyncpg; Django's stock backend through ``sync_to_async``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from benchmarks.common import Contender, Ratio, Sample, SectionResult, Timer
from benchmarks.loops import SQL, round_trips

WARMUP = 200


def section(url: str, n: int) -> SectionResult:
    """The contenders, each timing ``n`` round trips."""

    async def backend(alias: str, per_query: bool) -> Sample:
        from django_async_backend.db import async_connections

        async def body() -> Sample:
            connection = async_connections[alias]
            await round_trips(connection, WARMUP)
            timer = Timer()
            await round_trips(connection, n, per_query)
            sample = timer.sample(n)
            await connection.close()
            return sample

        # A task of its own: a fresh connection, released when it ends.
        return await asyncio.create_task(body())

    async def raw_psycopg(factory: Any, per_query: bool) -> Sample:
        kwargs: dict[str, Any] = {"autocommit": True}
        if factory is not None:
            kwargs["cursor_factory"] = factory
        async with await psycopg.AsyncConnection.connect(url, **kwargs) as connection:
            await round_trips(connection, WARMUP)
            timer = Timer()
            await round_trips(connection, n, per_query)
            return timer.sample(n)

    async def asyncpg_driver() -> Sample:
        import asyncpg

        connection = await asyncpg.connect(url)
        try:
            for i in range(WARMUP):
                await connection.fetchrow("SELECT $1::int", i)
            timer = Timer()
            for i in range(n):
                await connection.fetchrow("SELECT $1::int", i)
            return timer.sample(n)
        finally:
            await connection.close()

    async def stock() -> Sample:
        from asgiref.sync import sync_to_async
        from django.db import connections

        def one(i: int) -> Any:
            with connections["stock"].cursor() as cursor:
                cursor.execute(SQL, (i,))
                return cursor.fetchone()

        for i in range(WARMUP):
            await sync_to_async(one)(i)
        timer = Timer()
        for i in range(n):
            await sync_to_async(one)(i)
        return timer.sample(n)

    def bind(fn: Callable[..., Awaitable[Sample]], *args: Any) -> Any:
        return lambda: fn(*args)

    contenders = [
        Contender(
            "ours",
            "this backend, cursor reused",
            bind(backend, "default", False),
            ours=True,
        ),
        Contender(
            "ours_per_query",
            "this backend, cursor per query",
            bind(backend, "default", True),
            ours=True,
        ),
        Contender(
            "ours_server",
            "this backend, cursor reused, server binding†",
            bind(backend, "server_binding", False),
            ours=True,
        ),
        Contender(
            "psycopg", "raw psycopg, cursor reused", bind(raw_psycopg, None, False)
        ),
        Contender(
            "psycopg_client",
            "raw psycopg ClientCursor, cursor reused",
            bind(raw_psycopg, psycopg.AsyncClientCursor, False),
        ),
        Contender(
            "psycopg_client_per_query",
            "raw psycopg ClientCursor, cursor per query",
            bind(raw_psycopg, psycopg.AsyncClientCursor, True),
        ),
        Contender("asyncpg", "asyncpg", asyncpg_driver),
        Contender("stock", "stock Django via sync_to_async", stock),
    ]
    ratios = [
        # Like for like: the same cursor class on both sides (see the notes).
        # Targets: client CPU per operation, at most a few percent above the
        # driver's (issue 16); throughput ratios are shown without a target.
        Ratio("ours", "psycopg_client", 1.03, "cursor reused", measure="cpu"),
        Ratio(
            "ours_per_query",
            "psycopg_client_per_query",
            1.05,
            "cursor per query",
            measure="cpu",
        ),
        Ratio("ours_server", "psycopg", None, "cursor reused, server binding"),
        Ratio("ours", "psycopg_client", None, "cursor reused, throughput"),
        Ratio("ours", "psycopg", None, "Django's binding vs psycopg's default"),
        Ratio("ours_per_query", "ours", None, "cost of a cursor per query"),
        Ratio("ours", "asyncpg", None),
        Ratio("ours", "stock", None),
    ]
    return SectionResult(
        key="sequential",
        title="Sequential round trips",
        unit="round trips/s",
        description=(
            f"`SELECT %s::int` then `fetchone()`, {n:,} times in a row on one "
            "connection (after a warm-up)."
        ),
        contenders=contenders,
        ratios=ratios,
    )
