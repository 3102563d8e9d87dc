"""The timed loops that this backend and raw psycopg run alike, and their runs.

Both connection kinds give ``async with connection.cursor() as cursor`` with
``execute``/``fetchone``: this backend's async wrapper and a psycopg
``AsyncConnection``. Running one loop for both keeps the work identical, so
that the difference measured is the connection layer's alone. Stock Django
runs the same statements in a function called through ``sync_to_async``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import psycopg

from benchmarks.common import Sample, Timer, in_task

SQL = "SELECT %s::int"
Loop = Callable[[Any, int], Awaitable[None]]  # (connection, operations)
Atomic = Callable[[], AbstractAsyncContextManager[Any]]


async def reused(connection: Any, n: int) -> None:
    """``n`` times ``SELECT %s::int`` then ``fetchone()``, on one cursor."""
    async with connection.cursor() as cursor:
        for i in range(n):
            await cursor.execute(SQL, (i,))
            await cursor.fetchone()


async def per_query(connection: Any, n: int) -> None:
    """The same on a new cursor for each query."""
    for i in range(n):
        async with connection.cursor() as cursor:
            await cursor.execute(SQL, (i,))
            await cursor.fetchone()


async def nested_transactions(connection: Any, n: int, atomic: Atomic) -> None:
    """``n`` transactions: SELECT, savepoint, SELECT, release, commit."""
    for i in range(n):
        async with connection.cursor() as cursor:
            async with atomic():
                await cursor.execute(SQL, (i,))
                await cursor.fetchone()
                async with atomic():
                    await cursor.execute(SQL, (i,))
                    await cursor.fetchone()


async def backend_transactions(connection: Any, n: int) -> None:
    from django_async_backend.db.transaction import async_atomic

    await nested_transactions(connection, n, async_atomic)


async def psycopg_transactions(connection: Any, n: int) -> None:
    await nested_transactions(connection, n, connection.transaction)


@dataclass(frozen=True)
class Work:
    """``loop(connection, n)``, timed, after ``warmups`` operations of
    ``warmup`` (by default, of ``loop``)."""

    loop: Loop
    n: int
    warmups: int
    warmup: Loop | None = None

    async def timed(self, connection: Any) -> Sample:
        await (self.warmup or self.loop)(connection, self.warmups)
        timer = Timer()
        await self.loop(connection, self.n)
        return timer.sample(self.n)

    async def on_backend(self, alias: str) -> Sample:
        from django_async_backend.db import async_connections

        async def body() -> Sample:
            connection = async_connections[alias]
            sample = await self.timed(connection)
            await connection.close()
            return sample

        return await in_task(body)

    async def on_psycopg(self, url: str, client_cursor: bool) -> Sample:
        kwargs: dict[str, Any] = {"autocommit": True}
        if client_cursor:
            kwargs["cursor_factory"] = psycopg.AsyncClientCursor
        async with await psycopg.AsyncConnection.connect(url, **kwargs) as connection:
            return await self.timed(connection)


async def through_sync_to_async(
    one: Callable[[int], object], n: int, warmups: int
) -> Sample:
    """Stock Django: ``one(i)`` through ``sync_to_async``, ``n`` times."""
    from asgiref.sync import sync_to_async

    for i in range(warmups):
        await sync_to_async(one)(i)
    timer = Timer()
    for i in range(n):
        await sync_to_async(one)(i)
    return timer.sample(n)
