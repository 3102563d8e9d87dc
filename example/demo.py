"""A small tour of django-async-backend: run it with ``python3 dev.py demo``.

It configures Django from ``DATABASE_URL`` (dev.py sets it; it boots a
throwaway PostgreSQL when none is reachable), then opens async connections
and prints what it did: a query, a transaction with a savepoint and an
on_commit callback, and three slow queries run in parallel on independent
connections.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any


def configure() -> None:
    """Set up Django with the test settings' DATABASE_URL parsing."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
    import django

    django.setup()


async def tour() -> None:
    from django_async_backend.db import async_connections
    from django_async_backend.db.transaction import async_atomic

    connection = async_connections["default"]
    async with connection.cursor() as cursor:
        await cursor.execute("SELECT version(), %s::text", ["hello from async"])
        version, greeting = await cursor.fetchone()
    print(f"1. connected: {version.split(',')[0]}; server echoed {greeting!r}")

    async with connection.cursor() as cursor:
        await cursor.execute(
            "CREATE TEMPORARY TABLE demo_account (name text PRIMARY KEY, balance int)"
        )
    notes: list[str] = []

    async def notify() -> None:
        notes.append("on_commit callback ran after COMMIT")

    async with async_atomic():
        async with connection.cursor() as cursor:
            await cursor.executemany(
                "INSERT INTO demo_account VALUES (%s, %s)", [("alice", 100), ("bob", 0)]
            )
        try:
            async with async_atomic():  # a savepoint
                async with connection.cursor() as cursor:
                    await cursor.execute("UPDATE demo_account SET balance = 1000000")
                raise RuntimeError("changed my mind")
        except RuntimeError:
            pass  # only the savepoint is rolled back
        await connection.on_commit(notify)
    async with connection.cursor() as cursor:
        await cursor.execute("SELECT name, balance FROM demo_account ORDER BY name")
        rows: list[Any] = await cursor.fetchall()
    print(f"2. transaction committed {rows}; the savepoint was rolled back")
    print(f"   {notes[0]}")

    async def slow_query() -> int:
        async with async_connections.independent_connection():
            async with async_connections["default"].cursor() as cursor:
                await cursor.execute("SELECT pg_sleep(0.3), pg_backend_pid()")
                return int((await cursor.fetchone())[1])

    start = time.perf_counter()
    pids = await asyncio.gather(slow_query(), slow_query(), slow_query())
    elapsed = time.perf_counter() - start
    print(
        f"3. three 0.3 s queries on independent connections (server pids {pids}) "
        f"took {elapsed:.2f} s in parallel"
    )
    await async_connections.close_all()
    print("4. connections closed")


def main() -> None:
    configure()
    asyncio.run(tour())


if __name__ == "__main__":
    main()
