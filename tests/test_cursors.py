"""Async cursors: execute, executemany, fetching, iteration, named cursors."""

import asyncio
import unittest
from typing import Any

from django.db import connections

from aliases import temporary_alias
from django_async_backend.db import async_connections
from scenarios import DatabaseTestCase

HOSTILE = [
    "'; DROP TABLE testapp_item; --",
    "Robert'); DELETE FROM testapp_account; --",
    "%s %(x)s {} \\ \x01 ' \" $$ $tag$",
    "ünïcødé ✓ 🎉",
]


class CursorTests(DatabaseTestCase):
    tables = ("testapp_item",)

    @property
    def connection(self) -> Any:
        # Each step (setUp, test, tearDown) runs in its own task here.
        return async_connections["default"]

    async def insert(self, *names: str) -> None:
        async with self.connection.cursor() as cursor:
            await cursor.executemany(
                "INSERT INTO testapp_item (name, created) VALUES (%s, now())",
                [(name,) for name in names],
            )

    async def test_execute_with_positional_params(self) -> None:
        async with self.connection.cursor() as cursor:
            await cursor.execute("SELECT %s::int + %s::int", [2, 3])
            self.assertEqual(await cursor.fetchone(), (5,))

    async def test_execute_with_named_params(self) -> None:
        async with self.connection.cursor() as cursor:
            await cursor.execute(
                "SELECT %(a)s::text || %(b)s::text", {"a": "x", "b": "y"}
            )
            self.assertEqual(await cursor.fetchone(), ("xy",))

    async def test_executemany_inserts_every_row(self) -> None:
        await self.insert("a", "b", "c")
        async with self.connection.cursor() as cursor:
            await cursor.execute("SELECT name FROM testapp_item ORDER BY name")
            self.assertEqual(await cursor.fetchall(), [("a",), ("b",), ("c",)])

    async def test_fetchmany_returns_chunks(self) -> None:
        await self.insert("a", "b", "c")
        async with self.connection.cursor() as cursor:
            await cursor.execute("SELECT name FROM testapp_item ORDER BY name")
            self.assertEqual(await cursor.fetchmany(2), [("a",), ("b",)])
            self.assertEqual(await cursor.fetchmany(2), [("c",)])
            self.assertEqual(await cursor.fetchmany(2), [])

    async def test_async_for_iterates_rows(self) -> None:
        await self.insert("a", "b")
        async with self.connection.cursor() as cursor:
            await cursor.execute("SELECT name FROM testapp_item ORDER BY name")
            self.assertEqual([row async for row in cursor], [("a",), ("b",)])

    async def test_rowcount_and_description(self) -> None:
        await self.insert("a", "b")
        async with self.connection.cursor() as cursor:
            await cursor.execute("UPDATE testapp_item SET name = name || '!'")
            self.assertEqual(cursor.rowcount, 2)
            await cursor.execute("SELECT id, name FROM testapp_item")
            self.assertEqual([col.name for col in cursor.description], ["id", "name"])

    async def test_cursor_closes_on_exit(self) -> None:
        async with self.connection.cursor() as cursor:
            await cursor.execute("SELECT 1")
        self.assertTrue(cursor.closed)

    async def test_unopened_cursor_explains_async_with(self) -> None:
        cursor = self.connection.cursor()
        with self.assertRaisesRegex(RuntimeError, "async with connection.cursor"):
            await cursor.execute("SELECT 1")

    async def test_hostile_strings_round_trip_as_values(self) -> None:
        await self.insert(*HOSTILE)
        async with self.connection.cursor() as cursor:
            await cursor.execute(
                "SELECT name FROM testapp_item WHERE name = ANY(%s)", [HOSTILE]
            )
            self.assertCountEqual([row[0] for row in await cursor.fetchall()], HOSTILE)
            await cursor.execute("SELECT count(*) FROM testapp_account")
            self.assertIsNotNone(await cursor.fetchone())

    async def test_sync_side_sees_committed_rows(self) -> None:
        await self.insert("seen")

        def sync_count() -> int:
            # Django's stock sync backend on the same database, in a thread.
            try:
                with connections["stock"].cursor() as cursor:
                    cursor.execute(
                        "SELECT count(*) FROM testapp_item WHERE name = 'seen'"
                    )
                    return int(cursor.fetchone()[0])
            finally:
                connections["stock"].close()

        self.assertEqual(await asyncio.to_thread(sync_count), 1)


class ServerSideCursorTests(unittest.IsolatedAsyncioTestCase):
    async def asyncTearDown(self) -> None:
        await async_connections.close_all()

    async def test_chunked_cursor_streams_in_chunks(self) -> None:
        connection = async_connections["default"]
        async with connection.chunked_cursor() as cursor:
            await cursor.execute("SELECT generate_series(1, 2500)")
            first = await cursor.fetchmany(1000)
            rest = [row async for row in cursor]
        self.assertEqual(len(first), 1000)
        self.assertEqual(len(rest), 1500)
        self.assertEqual(rest[-1], (2500,))

    async def test_chunked_cursor_is_a_named_cursor_on_the_server(self) -> None:
        connection = async_connections["default"]
        async with connection.chunked_cursor() as cursor:
            await cursor.execute("SELECT generate_series(1, 10)")
            await cursor.fetchmany(1)
            async with connection.cursor() as probe:
                await probe.execute("SELECT count(*) FROM pg_cursors")
                self.assertEqual(await probe.fetchone(), (1,))

    async def test_chunked_cursor_binds_params_client_side(self) -> None:
        connection = async_connections["default"]
        async with connection.chunked_cursor() as cursor:
            await cursor.execute("SELECT generate_series(1, %s)", [3])
            self.assertEqual(await cursor.fetchall(), [(1,), (2,), (3,)])

    async def test_disable_server_side_cursors_gives_a_plain_cursor(self) -> None:
        with temporary_alias("plain", DISABLE_SERVER_SIDE_CURSORS=True):
            connection = async_connections["plain"]
            async with connection.chunked_cursor() as cursor:
                await cursor.execute("SELECT generate_series(1, 10)")
                self.assertEqual(await cursor.fetchmany(2), [(1,), (2,)])
                async with connection.cursor() as probe:
                    await probe.execute("SELECT count(*) FROM pg_cursors")
                    self.assertEqual(await probe.fetchone(), (0,))
                self.assertEqual(len(await cursor.fetchall()), 8)


if __name__ == "__main__":
    unittest.main()
