"""2. Concurrency: many tasks sharing a few connections.

``tasks`` tasks each run ``per_task`` queries of 1 ms server time
(``SELECT pg_sleep(0.001), %s::int``), checking a connection out of a pool of
``pool`` connections for each query. This backend does it with
``OPTIONS["pool"]`` and ``independent_connection()``; raw psycopg_pool (with
autocommit connections, as the backend's: a checkout costs no BEGIN and no
ROLLBACK) and asyncpg with their pools; stock Django with ``sync_to_async``, which runs
every call on Django's one thread-sensitive thread (so on one connection),
as Django's async ORM does outside a request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

from benchmarks.common import Contender, Ratio, Sample, SectionResult, Timer

SQL = "SELECT pg_sleep(0.001), %s::int"


async def gather_workers(
    tasks: int, queries: int, worker: Callable[[], Awaitable[None]]
) -> Sample:
    """Run ``tasks`` workers at once; time their ``queries``."""
    timer = Timer()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return timer.sample(queries)


class Concurrency:
    """The contenders; the raw pools live between :meth:`open` and :meth:`close`."""

    def __init__(self, url: str, tasks: int, per_task: int, pool: int) -> None:
        self.url = url
        self.tasks = tasks
        self.per_task = per_task
        self.pool_size = pool
        self.queries = tasks * per_task
        self.stack = AsyncExitStack()
        self.psycopg_pool: Any = None
        self.psycopg_client_pool: Any = None
        self.asyncpg_pool: Any = None

    async def open(self) -> None:
        import asyncpg
        from psycopg import AsyncClientCursor
        from psycopg_pool import AsyncConnectionPool

        size = self.pool_size
        self.psycopg_pool = await self.stack.enter_async_context(
            AsyncConnectionPool(
                self.url,
                min_size=size,
                max_size=size,
                kwargs={"autocommit": True},
                open=False,
            )
        )
        await self.psycopg_pool.wait()
        # The backend's cursor class (Django binds parameters client-side).
        self.psycopg_client_pool = await self.stack.enter_async_context(
            AsyncConnectionPool(
                self.url,
                min_size=size,
                max_size=size,
                kwargs={"autocommit": True, "cursor_factory": AsyncClientCursor},
                open=False,
            )
        )
        await self.psycopg_client_pool.wait()
        self.asyncpg_pool = await asyncpg.create_pool(
            self.url, min_size=size, max_size=size
        )
        self.stack.push_async_callback(self.asyncpg_pool.close)

    async def close(self) -> None:
        from django_async_backend.db import async_connections

        await self.stack.aclose()
        await async_connections.close_all()  # the backend's pool on this loop

    async def ours(self) -> Sample:
        from django_async_backend.db import async_connections

        async def query(i: int) -> None:
            async with async_connections.independent_connection():
                async with async_connections["pooled"].cursor() as cursor:
                    await cursor.execute(SQL, (i,))
                    await cursor.fetchone()

        async def worker() -> None:
            for i in range(self.per_task):
                await query(i)

        # Warm-up: the first use opens the loop's pool; fill it.
        await asyncio.gather(*(query(i) for i in range(self.pool_size * 3)))
        return await gather_workers(self.tasks, self.queries, worker)

    async def psycopg(self) -> Sample:
        return await self.raw_pool(self.psycopg_pool)

    async def psycopg_client(self) -> Sample:
        return await self.raw_pool(self.psycopg_client_pool)

    async def raw_pool(self, pool: Any) -> Sample:

        async def worker() -> None:
            for i in range(self.per_task):
                async with pool.connection() as connection:
                    cursor = await connection.execute(SQL, (i,))
                    await cursor.fetchone()

        return await gather_workers(self.tasks, self.queries, worker)

    async def asyncpg(self) -> Sample:
        pool = self.asyncpg_pool

        async def worker() -> None:
            for i in range(self.per_task):
                async with pool.acquire() as connection:
                    await connection.fetchrow("SELECT pg_sleep(0.001), $1::int", i)

        return await gather_workers(self.tasks, self.queries, worker)

    async def stock(self) -> Sample:
        from asgiref.sync import sync_to_async
        from django.db import connections

        def one(i: int) -> Any:
            with connections["stock"].cursor() as cursor:
                cursor.execute(SQL, (i,))
                return cursor.fetchone()

        async def worker() -> None:
            for i in range(self.per_task):
                await sync_to_async(one)(i)

        await sync_to_async(one)(0)  # warm-up: connect
        return await gather_workers(self.tasks, self.queries, worker)

    def section(self) -> SectionResult:
        return SectionResult(
            key="concurrency",
            title="Concurrency",
            unit="queries/s",
            description=(
                f"{self.tasks} tasks x {self.per_task} queries of 1 ms server time "
                f"(`SELECT pg_sleep(0.001), %s::int`) over {self.pool_size} "
                "connections, one pool checkout per query. Stock Django's "
                "`sync_to_async` runs all of them on its one thread-sensitive "
                "thread, hence on one connection."
            ),
            contenders=[
                Contender(
                    "ours",
                    "this backend, pool + independent_connection",
                    self.ours,
                    ours=True,
                ),
                Contender("psycopg", "raw psycopg_pool (autocommit)", self.psycopg),
                Contender(
                    "psycopg_client",
                    "raw psycopg_pool, ClientCursor (autocommit)",
                    self.psycopg_client,
                ),
                Contender("asyncpg", "asyncpg pool", self.asyncpg),
                Contender("stock", "stock Django via sync_to_async", self.stock),
            ],
            ratios=[
                Ratio(
                    "ours",
                    "psycopg_client",
                    1.10,
                    "concurrency",
                    measure="cpu",
                ),
                Ratio("ours", "psycopg_client", None, "concurrency, throughput"),
                Ratio("ours", "psycopg", None, "Django's binding vs psycopg's default"),
                Ratio("ours", "stock", None, "concurrency vs stock Django"),
                Ratio("ours", "asyncpg", None),
            ],
        )
