"""2. Concurrency: many tasks sharing a few pooled connections.

This backend with ``OPTIONS["pool"]`` and ``independent_connection()``, raw
psycopg_pool (autocommit connections, as the backend's: a checkout costs no
BEGIN and no ROLLBACK) and asyncpg with their pools, and stock Django through
``sync_to_async`` (every call on its one thread-sensitive thread, so on one
connection, as Django's async ORM does outside a request).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from benchmarks.common import (
    LIKE_FOR_LIKE,
    Config,
    Contender,
    Ratio,
    Sample,
    Section,
    Timer,
)

SQL = "SELECT pg_sleep(0.001), %s::int"


@contextlib.asynccontextmanager
async def section(url: str, config: Config) -> AsyncIterator[Section]:
    """The contenders; the raw pools are open while the section is."""
    import asyncpg
    from psycopg import AsyncClientCursor
    from psycopg_pool import AsyncConnectionPool

    from benchmarks.project.settings import POOL_SIZE
    from django_async_backend.db import async_connections

    tasks, per_task = config.tasks, config.per_task

    async def gather(worker: Callable[[], Awaitable[None]]) -> Sample:
        """Run ``tasks`` workers at once; time their queries."""
        timer = Timer()
        await asyncio.gather(*(worker() for _ in range(tasks)))
        return timer.sample(tasks * per_task)

    async def ours() -> Sample:
        async def query(i: int) -> None:
            async with async_connections.independent_connection():
                async with async_connections["pooled"].cursor() as cursor:
                    await cursor.execute(SQL, (i,))
                    await cursor.fetchone()

        async def worker() -> None:
            for i in range(per_task):
                await query(i)

        # Warm-up: the first use opens the loop's pool; fill it.
        await asyncio.gather(*(query(i) for i in range(POOL_SIZE * 3)))
        return await gather(worker)

    async def raw_pool(pool: Any) -> Sample:
        async def worker() -> None:
            for i in range(per_task):
                async with pool.connection() as connection:
                    cursor = await connection.execute(SQL, (i,))
                    await cursor.fetchone()

        return await gather(worker)

    async def on_asyncpg(pool: Any) -> Sample:
        async def worker() -> None:
            for i in range(per_task):
                async with pool.acquire() as connection:
                    await connection.fetchrow("SELECT pg_sleep(0.001), $1::int", i)

        return await gather(worker)

    async def stock() -> Sample:
        from asgiref.sync import sync_to_async
        from django.db import connections

        def one(i: int) -> Any:
            with connections["stock"].cursor() as cursor:
                cursor.execute(SQL, (i,))
                return cursor.fetchone()

        async def worker() -> None:
            for i in range(per_task):
                await sync_to_async(one)(i)

        await sync_to_async(one)(0)  # warm-up: connect
        return await gather(worker)

    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(async_connections.close_all)  # the backend's pool
        pools = []
        for kwargs in ({}, {"cursor_factory": AsyncClientCursor}):
            pool = AsyncConnectionPool(
                url,
                min_size=POOL_SIZE,
                max_size=POOL_SIZE,
                kwargs={"autocommit": True, **kwargs},
                open=False,
            )
            pools.append(await stack.enter_async_context(pool))
            await pool.wait()
        psycopg_pool, client_pool = pools
        asyncpg_pool = await asyncpg.create_pool(
            url, min_size=POOL_SIZE, max_size=POOL_SIZE
        )
        stack.push_async_callback(asyncpg_pool.close)
        yield Section(
            key="concurrency",
            title="Concurrency",
            unit="queries/s",
            description=(
                f"{tasks} tasks x {per_task} queries of 1 ms server time "
                f"(`SELECT pg_sleep(0.001), %s::int`) over {POOL_SIZE} "
                "connections, one pool checkout per query. Stock Django's "
                "`sync_to_async` runs all of them on its one thread-sensitive "
                "thread, hence on one connection."
            ),
            contenders=[
                Contender(
                    "ours", "this backend, pool + independent_connection", ours, True
                ),
                Contender(
                    "psycopg",
                    "raw psycopg_pool (autocommit)",
                    lambda: raw_pool(psycopg_pool),
                ),
                Contender(
                    "psycopg_client",
                    "raw psycopg_pool, ClientCursor (autocommit)",
                    lambda: raw_pool(client_pool),
                ),
                Contender("asyncpg", "asyncpg pool", lambda: on_asyncpg(asyncpg_pool)),
                Contender("stock", "stock Django via sync_to_async", stock),
            ],
            ratios=[
                Ratio("ours", "psycopg_client", 1.10, "concurrency", "cpu"),
                Ratio("ours", "psycopg_client", None, "concurrency, throughput"),
                Ratio("ours", "psycopg", None, "Django's binding vs psycopg's default"),
                Ratio("ours", "stock", None, "concurrency vs stock Django"),
                Ratio("ours", "asyncpg"),
            ],
            note=LIKE_FOR_LIKE,
        )
