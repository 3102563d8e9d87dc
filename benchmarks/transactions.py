"""3. Transactions: many small transactions, each with a savepoint.

Every transaction is BEGIN, ``SELECT %s::int``, SAVEPOINT, ``SELECT %s::int``,
RELEASE SAVEPOINT, COMMIT (six round trips), written three ways: this
backend's nested ``async_atomic()``, raw psycopg's nested
``conn.transaction()``, and stock Django's nested ``transaction.atomic`` in a
function called through ``sync_to_async``. One cursor per transaction.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

from benchmarks.common import Contender, Ratio, Sample, SectionResult, Timer
from benchmarks.loops import SQL, nested_transactions

WARMUP = 100


def section(url: str, n: int) -> SectionResult:
    """The contenders, each timing ``n`` transactions."""

    async def ours() -> Sample:
        from django_async_backend.db import async_connections
        from django_async_backend.db.transaction import async_atomic

        async def body() -> Sample:
            connection = async_connections["default"]
            await nested_transactions(connection, WARMUP, async_atomic)
            timer = Timer()
            await nested_transactions(connection, n, async_atomic)
            sample = timer.sample(n)
            await connection.close()
            return sample

        # A task of its own: a fresh connection, released when it ends.
        return await asyncio.create_task(body())

    async def raw_psycopg(cursor_factory: Any = None) -> Sample:
        kwargs: dict[str, Any] = {"autocommit": True}
        if cursor_factory is not None:
            kwargs["cursor_factory"] = cursor_factory
        async with await psycopg.AsyncConnection.connect(url, **kwargs) as connection:
            atomic = connection.transaction
            await nested_transactions(connection, WARMUP, atomic)
            timer = Timer()
            await nested_transactions(connection, n, atomic)
            return timer.sample(n)

    async def stock() -> Sample:
        from asgiref.sync import sync_to_async
        from django.db import connections, transaction

        def one(i: int) -> None:
            with connections["stock"].cursor() as cursor:
                with transaction.atomic(using="stock"):
                    cursor.execute(SQL, (i,))
                    cursor.fetchone()
                    with transaction.atomic(using="stock"):
                        cursor.execute(SQL, (i,))
                        cursor.fetchone()

        for i in range(WARMUP):
            await sync_to_async(one)(i)
        timer = Timer()
        for i in range(n):
            await sync_to_async(one)(i)
        return timer.sample(n)

    return SectionResult(
        key="transactions",
        title="Transactions",
        unit="transactions/s",
        description=(
            f"{n:,} transactions in a row, each `SELECT`, savepoint, `SELECT`, "
            "release, commit (6 round trips): nested `async_atomic()` vs raw "
            "psycopg's nested `conn.transaction()` vs stock Django's nested "
            "`atomic` called through `sync_to_async`."
        ),
        contenders=[
            Contender("ours", "this backend, async_atomic", ours, ours=True),
            Contender("psycopg", "raw psycopg, conn.transaction()", raw_psycopg),
            Contender(
                "psycopg_client",
                "raw psycopg ClientCursor, conn.transaction()",
                lambda: raw_psycopg(psycopg.AsyncClientCursor),
            ),
            Contender("stock", "stock Django, sync_to_async(atomic)", stock),
        ],
        ratios=[
            Ratio("ours", "psycopg_client", 1.05, "transactions", measure="cpu"),
            Ratio("ours", "psycopg_client", None, "transactions, throughput"),
            Ratio("ours", "psycopg", None, "Django's binding vs psycopg's default"),
            Ratio("ours", "stock", None),
        ],
    )
