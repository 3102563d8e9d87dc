"""1. Sequential round trips: ``SELECT %s::int`` one after another, one connection.

This backend with one cursor reused and with a new cursor per query, and
with psycopg's defaults instead of Django's (the ``server_binding`` alias);
raw psycopg with its default cursor (server-side binding, prepared after 5
executions) and with the client-side binding cursor this backend uses by
default, like Django; asyncpg; Django's stock backend through
``sync_to_async``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
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
from benchmarks.loops import SQL, Work, per_query, reused, through_sync_to_async


@contextlib.asynccontextmanager
async def section(url: str, config: Config) -> AsyncIterator[Section]:
    """The contenders, each timing ``config.sequential`` round trips."""
    n = config.sequential
    one_cursor = Work(reused, n, 200)
    new_cursors = Work(per_query, n, 200, warmup=reused)

    async def asyncpg_driver() -> Sample:
        import asyncpg

        connection = await asyncpg.connect(url)
        try:
            for i in range(200):
                await connection.fetchrow("SELECT $1::int", i)
            timer = Timer()
            for i in range(n):
                await connection.fetchrow("SELECT $1::int", i)
            return timer.sample(n)
        finally:
            await connection.close()

    def stock(i: int) -> Any:
        from django.db import connections

        with connections["stock"].cursor() as cursor:
            cursor.execute(SQL, (i,))
            return cursor.fetchone()

    yield Section(
        key="sequential",
        title="Sequential round trips",
        unit="round trips/s",
        description=(
            f"`SELECT %s::int` then `fetchone()`, {n:,} times in a row on one "
            "connection (after a warm-up)."
        ),
        contenders=[
            Contender(
                "ours",
                "this backend, cursor reused",
                lambda: one_cursor.on_backend("default"),
                ours=True,
            ),
            Contender(
                "ours_per_query",
                "this backend, cursor per query",
                lambda: new_cursors.on_backend("default"),
                ours=True,
            ),
            Contender(
                "ours_server",
                "this backend, cursor reused, server binding†",
                lambda: one_cursor.on_backend("server_binding"),
                ours=True,
            ),
            Contender(
                "psycopg",
                "raw psycopg, cursor reused",
                lambda: one_cursor.on_psycopg(url, client_cursor=False),
            ),
            Contender(
                "psycopg_client",
                "raw psycopg ClientCursor, cursor reused",
                lambda: one_cursor.on_psycopg(url, client_cursor=True),
            ),
            Contender(
                "psycopg_client_per_query",
                "raw psycopg ClientCursor, cursor per query",
                lambda: new_cursors.on_psycopg(url, client_cursor=True),
            ),
            Contender("asyncpg", "asyncpg", asyncpg_driver),
            Contender(
                "stock",
                "stock Django via sync_to_async",
                lambda: through_sync_to_async(stock, n, 200),
            ),
        ],
        ratios=[
            # Targets: client CPU per operation, at most a few percent above
            # the driver's with the same cursor class (issue 16).
            Ratio("ours", "psycopg_client", 1.03, "cursor reused", "cpu"),
            Ratio(
                "ours_per_query",
                "psycopg_client_per_query",
                1.05,
                "cursor per query",
                "cpu",
            ),
            Ratio("ours_server", "psycopg", None, "cursor reused, server binding"),
            Ratio("ours", "psycopg_client", None, "cursor reused, throughput"),
            Ratio("ours", "psycopg", None, "Django's binding vs psycopg's default"),
            Ratio("ours_per_query", "ours", None, "cost of a cursor per query"),
            Ratio("ours", "asyncpg"),
            Ratio("ours", "stock"),
        ],
        note=(
            '† `OPTIONS = {"server_side_binding": True, "prepare_threshold": 5}`: '
            "psycopg's own defaults (parameters bound by the server, statements "
            "prepared after 5 executions), which raw psycopg uses above. This "
            "backend's default is Django's: parameters bound client-side by "
            "psycopg's `ClientCursor`, no prepared statements. " + LIKE_FOR_LIKE
        ),
    )
