"""The timed loops that this backend and raw psycopg run alike.

Both connection kinds give ``async with connection.cursor() as cursor`` with
``execute``/``fetchone``: this backend's async wrapper and a psycopg
``AsyncConnection``. Running one loop for both keeps the work identical, so
that the difference measured is the connection layer's alone.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

SQL = "SELECT %s::int"

Atomic = Callable[[], AbstractAsyncContextManager[Any]]


async def round_trips(connection: Any, n: int, per_query: bool = False) -> None:
    """``n`` times ``SELECT %s::int`` then ``fetchone()``.

    On one cursor, or (``per_query``) on a new cursor for each query.
    """
    if per_query:
        for i in range(n):
            async with connection.cursor() as cursor:
                await cursor.execute(SQL, (i,))
                await cursor.fetchone()
        return
    async with connection.cursor() as cursor:
        for i in range(n):
            await cursor.execute(SQL, (i,))
            await cursor.fetchone()


async def nested_transactions(connection: Any, n: int, atomic: Atomic) -> None:
    """``n`` transactions: SELECT, savepoint, SELECT, release, commit.

    ``atomic`` opens a block: ``async_atomic`` for this backend,
    ``connection.transaction`` for raw psycopg. One cursor per transaction.
    """
    for i in range(n):
        async with connection.cursor() as cursor:
            async with atomic():
                await cursor.execute(SQL, (i,))
                await cursor.fetchone()
                async with atomic():
                    await cursor.execute(SQL, (i,))
                    await cursor.fetchone()
