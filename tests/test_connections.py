"""async_connections: per-task connections, independent_connection, close."""

import asyncio
import unittest

from django.core.exceptions import ImproperlyConfigured
from django.utils.connection import ConnectionDoesNotExist

import support
from aliases import backend_pid
from django_async_backend.db import async_connections


class HandlerTests(unittest.IsolatedAsyncioTestCase):
    async def asyncTearDown(self) -> None:
        await async_connections.close_all()

    async def test_unknown_alias_names_it(self) -> None:
        with self.assertRaisesRegex(ConnectionDoesNotExist, "'nope'"):
            async_connections["nope"]

    async def test_alias_of_another_engine_is_refused(self) -> None:
        with self.assertRaises(ImproperlyConfigured) as ctx:
            async_connections["sqlite"]
        self.assertIn("DATABASES['sqlite']", str(ctx.exception))
        self.assertIn("django_async_backend.db.backends.postgresql", str(ctx.exception))

    async def test_other_aliases_are_untouched(self) -> None:
        from django.db import connections

        connection = async_connections["default"]
        await backend_pid(connection)
        self.assertIsNone(connections["stock"].connection)
        self.assertEqual([c.alias for c in async_connections.all()], ["default"])

    async def test_connection_opens_lazily(self) -> None:
        connection = async_connections["default"]
        self.assertIsNone(connection.connection)
        await backend_pid(connection)
        self.assertIsNotNone(connection.connection)

    async def test_same_task_gets_same_connection(self) -> None:
        first = await backend_pid(async_connections["default"])
        second = await backend_pid(async_connections["default"])
        self.assertIs(async_connections["default"], async_connections["default"])
        self.assertEqual(first, second)

    async def test_aliases_have_separate_connections(self) -> None:
        default = await backend_pid(async_connections["default"])
        other = await backend_pid(async_connections["other"])
        self.assertNotEqual(default, other)

    async def test_close_then_use_reopens(self) -> None:
        connection = async_connections["default"]
        first = await backend_pid(connection)
        await connection.close()
        self.assertIsNone(connection.connection)
        self.assertNotEqual(await backend_pid(connection), first)

    async def test_close_all_closes_the_tasks_connections(self) -> None:
        before = support.count_sessions()
        await backend_pid(async_connections["default"])
        await backend_pid(async_connections["other"])
        self.assertEqual(support.count_sessions(), before + 2)
        await async_connections.close_all()
        self.assertEqual(await support.sessions_once_settled(before), before)


class IndependentConnectionTests(unittest.IsolatedAsyncioTestCase):
    async def asyncTearDown(self) -> None:
        await async_connections.close_all()

    async def test_block_gets_fresh_connection_and_restores_outer(self) -> None:
        outer = async_connections["default"]
        outer_pid = await backend_pid(outer)
        async with async_connections.independent_connection():
            inner = async_connections["default"]
            self.assertIsNot(inner, outer)
            self.assertNotEqual(await backend_pid(inner), outer_pid)
        self.assertIs(async_connections["default"], outer)
        self.assertEqual(await backend_pid(outer), outer_pid)

    async def test_block_closes_its_connections(self) -> None:
        before = support.count_sessions()
        async with async_connections.independent_connection():
            await backend_pid(async_connections["default"])
            await backend_pid(async_connections["other"])
            self.assertEqual(support.count_sessions(), before + 2)
        self.assertEqual(await support.sessions_once_settled(before), before)

    async def test_block_closes_its_connections_on_error(self) -> None:
        before = support.count_sessions()
        with self.assertRaises(ZeroDivisionError):
            async with async_connections.independent_connection():
                await backend_pid(async_connections["default"])
                1 / 0  # noqa: B018
        self.assertEqual(await support.sessions_once_settled(before), before)

    async def test_parallel_queries_overlap_on_the_server(self) -> None:
        async def sleep_and_report() -> tuple[object, object, int]:
            async with async_connections.independent_connection():
                async with async_connections["default"].cursor() as cursor:
                    await cursor.execute(
                        "SELECT clock_timestamp(), pg_sleep(0.3), "
                        "clock_timestamp(), pg_backend_pid()"
                    )
                    start, _, end, pid = await cursor.fetchone()
                    return start, end, pid

        results = await asyncio.gather(*(sleep_and_report() for _ in range(3)))
        starts, ends, pids = zip(*results, strict=True)
        self.assertEqual(len(set(pids)), 3)
        # Every query started before any of them finished: they ran at once.
        self.assertLess(max(starts), min(ends))


class NoEventLoopTests(unittest.TestCase):
    def test_sync_code_gets_a_clear_error(self) -> None:
        with self.assertRaisesRegex(RuntimeError, "running event loop.*django.db"):
            async_connections["default"]


if __name__ == "__main__":
    unittest.main()
