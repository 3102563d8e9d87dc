"""What docs/pgbouncer.md promises behind transaction pooling.

These tests only run through PgBouncer (``python3 dev.py test --pgbouncer``,
which sets DAB_SERVER_URL). Concurrent clients interleave their statements,
so that server connections really are shared between them; each test checks
that this happened (a client saw more than one server session), then that
the client's settings held on every statement anyway.
"""

from __future__ import annotations

import asyncio
import unittest
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from django.conf import settings
from psycopg import IsolationLevel

import support  # noqa: F401 - configures Django
from aliases import temporary_alias
from django_async_backend.db import async_connections
from django_async_backend.db.transaction import async_atomic

ROUNDS = 15
TIME_ZONES = ["UTC", "Europe/Paris", "Asia/Tokyo", "America/New_York", "Africa/Lagos"]


@contextmanager
def aliases(overrides: Callable[[str], dict[str, Any]]) -> Iterator[list[str]]:
    """One temporary alias per entry of TIME_ZONES."""
    with ExitStack() as stack:
        yield [
            stack.enter_context(temporary_alias(f"bouncer{number}", **overrides(zone)))
            for number, zone in enumerate(TIME_ZONES)
        ]


async def while_a_server_is_held(
    step: Callable[[str], Awaitable[tuple[Any, int]]], alias: str
) -> tuple[Any, int]:
    """Run ``step`` while another client holds a server session in a transaction.

    PgBouncer hands out the server session released last first; holding it
    makes ``step`` run on another one, so every client moves between server
    sessions whatever the timing.
    """
    held, done = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        try:
            async with async_atomic():
                async with async_connections["default"].cursor() as cursor:
                    await cursor.execute("SELECT 1")
                    held.set()
                    await done.wait()
        finally:
            held.set()  # on failure too: `await task` below re-raises it

    task = asyncio.create_task(holder())
    try:
        await held.wait()
        return await step(alias)
    finally:
        done.set()
        await task


@unittest.skipUnless(
    settings.DAB_SERVER_URL, "needs PgBouncer: python3 dev.py test --pgbouncer"
)
class TransactionPoolingTests(unittest.IsolatedAsyncioTestCase):
    async def asyncTearDown(self) -> None:
        await async_connections.close_all()

    async def interleave(
        self, names: list[str], step: Callable[[str], Awaitable[tuple[Any, int]]]
    ) -> dict[str, list[tuple[Any, int]]]:
        """Run ``step`` ROUNDS times per alias, all aliases at once.

        Each alias is driven by its own task (its own client connection);
        ``step`` returns (what it read, the server pid it ran on).
        """

        async def client(alias: str) -> list[tuple[Any, int]]:
            results = []
            for number in range(ROUNDS):
                if number % 2:
                    results.append(await step(alias))
                else:
                    results.append(await while_a_server_is_held(step, alias))
                await asyncio.sleep(0)
            return results

        found = await asyncio.gather(*(client(alias) for alias in names))
        seen = dict(zip(names, found, strict=True))
        # The point of the test: clients really moved between server sessions.
        self.assertTrue(
            any(len({pid for _, pid in runs}) > 1 for runs in seen.values())
        )
        return seen

    async def test_time_zone_holds_on_every_statement(self) -> None:
        async def show_time_zone(alias: str) -> tuple[Any, int]:
            async with async_connections[alias].cursor() as cursor:
                await cursor.execute(
                    "SELECT current_setting('TimeZone'), pg_backend_pid()"
                )
                zone, pid = await cursor.fetchone()
            return zone, pid

        with aliases(lambda zone: {"TIME_ZONE": zone}) as names:
            seen = await self.interleave(names, show_time_zone)
        for alias, zone in zip(names, TIME_ZONES, strict=True):
            self.assertEqual({value for value, _ in seen[alias]}, {zone})

    async def test_isolation_level_holds_in_every_transaction(self) -> None:
        async def show_isolation(alias: str) -> tuple[Any, int]:
            async with async_atomic(using=alias):
                async with async_connections[alias].cursor() as cursor:
                    await cursor.execute(
                        "SELECT current_setting('transaction_isolation'), "
                        "pg_backend_pid()"
                    )
                    level, pid = await cursor.fetchone()
            return level, pid

        level = IsolationLevel.SERIALIZABLE
        options = {"OPTIONS": {"isolation_level": level}}
        with aliases(lambda zone: options) as names:
            seen = await self.interleave(names, show_isolation)
        for runs in seen.values():
            self.assertEqual({value for value, _ in runs}, {"serializable"})

    async def test_statements_are_never_prepared(self) -> None:
        async def same_statement(alias: str) -> tuple[Any, int]:
            connection = async_connections[alias]
            async with connection.cursor() as cursor:
                await cursor.execute("SELECT %s::int * 2, pg_backend_pid()", [21])
                value, pid = await cursor.fetchone()
            return (value, connection.connection.prepare_threshold), pid

        # Server-side binding sends each statement with the extended
        # protocol, where psycopg would prepare it given a threshold.
        options = {"OPTIONS": {"server_side_binding": True}}
        with aliases(lambda zone: options) as names:
            seen = await self.interleave(names, same_statement)
        for runs in seen.values():
            self.assertEqual({value for value, _ in runs}, {(42, None)})
