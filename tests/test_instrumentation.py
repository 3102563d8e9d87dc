"""Query logging, ``connection_created`` and ``execute_wrapper``."""

from __future__ import annotations

import unittest
from typing import Any

from django.db.backends.signals import connection_created
from django.test import override_settings

import support  # noqa: F401 - configures Django
from aliases import backend_pid
from django_async_backend.db import async_connections
from django_async_backend.db.backends.postgresql.base import AsyncDatabaseWrapper

LOGGER = "django.db.backends"


class QueryLoggingTests(unittest.IsolatedAsyncioTestCase):
    async def asyncTearDown(self) -> None:
        await async_connections.close_all()

    async def _run_queries(self) -> Any:
        connection = async_connections["default"]
        async with connection.cursor() as cursor:
            await cursor.execute("SELECT %s::int + 1", [41])
            self.assertEqual(await cursor.fetchone(), (42,))
            await cursor.execute("SELECT 'plain'")
        return connection

    def _assert_recorded(self, connection: Any, logs: Any) -> None:
        sqls = [query["sql"] for query in connection.queries]
        self.assertEqual(sqls[-2:], ["SELECT 41::int + 1", "SELECT 'plain'"])
        for query in connection.queries:
            self.assertEqual(set(query), {"sql", "time"})
            float(query["time"])
        records = [r for r in logs.records if getattr(r, "alias", None) == "default"]
        self.assertEqual(
            [r.sql for r in records][-2:], ["SELECT 41::int + 1", "SELECT 'plain'"]
        )
        self.assertTrue(all(r.levelname == "DEBUG" for r in records))
        self.assertEqual(records[-2].params, [41])
        self.assertIn("SELECT 41::int + 1", records[-2].getMessage())

    async def test_force_debug_cursor_records_queries(self) -> None:
        connection = async_connections["default"]
        connection.force_debug_cursor = True
        with self.assertLogs(LOGGER, "DEBUG") as logs:
            await self._run_queries()
        self._assert_recorded(connection, logs)

    async def test_debug_setting_records_queries(self) -> None:
        with override_settings(DEBUG=True), self.assertLogs(LOGGER, "DEBUG") as logs:
            connection = await self._run_queries()
        self._assert_recorded(connection, logs)

    async def test_executemany_is_recorded_with_its_count(self) -> None:
        connection = async_connections["default"]
        connection.force_debug_cursor = True
        async with connection.cursor() as cursor:
            await cursor.execute("CREATE TEMPORARY TABLE dab_log (n int)")
            await cursor.executemany("INSERT INTO dab_log VALUES (%s)", [[1], [2], [3]])
        self.assertEqual(
            connection.queries[-1]["sql"], "3 times: INSERT INTO dab_log VALUES (%s)"
        )

    async def test_nothing_recorded_without_debug(self) -> None:
        with self.assertNoLogs(LOGGER, "DEBUG"):
            connection = await self._run_queries()
        self.assertEqual(connection.queries, [])
        self.assertEqual(len(connection.queries_log), 0)


class ConnectionCreatedTests(unittest.IsolatedAsyncioTestCase):
    def setUp(self) -> None:
        self.sync_calls: list[tuple[Any, Any]] = []
        self.async_calls: list[tuple[Any, Any]] = []

        def sync_receiver(sender: Any, connection: Any, **kwargs: Any) -> None:
            self.sync_calls.append((sender, connection))

        async def async_receiver(sender: Any, connection: Any, **kwargs: Any) -> None:
            self.async_calls.append((sender, connection))

        # Strong references: the receivers are local functions.
        connection_created.connect(sync_receiver, weak=False, dispatch_uid="dab-sync")
        connection_created.connect(async_receiver, weak=False, dispatch_uid="dab-async")

    def tearDown(self) -> None:
        connection_created.disconnect(dispatch_uid="dab-sync")
        connection_created.disconnect(dispatch_uid="dab-async")

    async def asyncTearDown(self) -> None:
        await async_connections.close_all()

    def _calls_for(self, calls: list[tuple[Any, Any]], connection: Any) -> list[Any]:
        return [sender for sender, c in calls if c is connection]

    async def test_sent_once_per_new_connection_to_both_kinds(self) -> None:
        connection = async_connections["default"]
        first = await backend_pid(connection)
        await backend_pid(connection)
        self.assertEqual(
            self._calls_for(self.sync_calls, connection), [type(connection)]
        )
        self.assertEqual(
            self._calls_for(self.async_calls, connection), [type(connection)]
        )
        self.assertIs(type(connection), AsyncDatabaseWrapper)

        await connection.close()
        self.assertNotEqual(await backend_pid(connection), first)
        self.assertEqual(len(self._calls_for(self.sync_calls, connection)), 2)
        self.assertEqual(len(self._calls_for(self.async_calls, connection)), 2)


class ExecuteWrapperTests(unittest.IsolatedAsyncioTestCase):
    async def asyncTearDown(self) -> None:
        await async_connections.close_all()

    async def test_async_wrapper_observes_execute(self) -> None:
        seen: list[tuple[Any, ...]] = []

        async def observer(
            execute: Any, sql: Any, params: Any, many: bool, context: Any
        ) -> Any:
            seen.append((sql, params, many, context["connection"]))
            return await execute(sql, params, many, context)

        connection = async_connections["default"]
        with connection.execute_wrapper(observer):
            async with connection.cursor() as cursor:
                await cursor.execute("SELECT %s::int * 2", [21])
                self.assertEqual(await cursor.fetchone(), (42,))
        self.assertEqual(seen, [("SELECT %s::int * 2", [21], False, connection)])

    async def test_sync_wrapper_returning_execute(self) -> None:
        seen: list[tuple[Any, ...]] = []

        def observer(
            execute: Any, sql: Any, params: Any, many: bool, context: Any
        ) -> Any:
            seen.append((sql, params, many))
            return execute(sql, params, many, context)

        connection = async_connections["default"]
        with connection.execute_wrapper(observer):
            async with connection.cursor() as cursor:
                await cursor.execute("SELECT %s::int * 2", [21])
                self.assertEqual(await cursor.fetchone(), (42,))
        self.assertEqual(seen, [("SELECT %s::int * 2", [21], False)])

    async def test_wrappers_nest_in_djangos_order(self) -> None:
        events: list[str] = []

        def make(name: str) -> Any:
            async def wrapper(
                execute: Any, sql: Any, params: Any, many: bool, context: Any
            ) -> Any:
                events.append(f"{name} before")
                result = await execute(sql, params, many, context)
                events.append(f"{name} after")
                return result

            return wrapper

        connection = async_connections["default"]
        with (
            connection.execute_wrapper(make("outer")),
            connection.execute_wrapper(make("inner")),
        ):
            async with connection.cursor() as cursor:
                await cursor.execute("SELECT 1")
        self.assertEqual(
            events, ["outer before", "inner before", "inner after", "outer after"]
        )
        self.assertEqual(connection.execute_wrappers, [])

    async def test_executemany_goes_through_wrappers(self) -> None:
        seen: list[tuple[Any, ...]] = []

        async def observer(
            execute: Any, sql: Any, params: Any, many: bool, context: Any
        ) -> Any:
            seen.append((sql, params, many))
            return await execute(sql, params, many, context)

        connection = async_connections["default"]
        async with connection.cursor() as cursor:
            await cursor.execute("CREATE TEMPORARY TABLE dab_wrapped (n int)")
            with connection.execute_wrapper(observer):
                await cursor.executemany(
                    "INSERT INTO dab_wrapped VALUES (%s)", [[1], [2], [3]]
                )
            await cursor.execute("SELECT sum(n) FROM dab_wrapped")
            self.assertEqual(await cursor.fetchone(), (6,))
        self.assertEqual(
            seen, [("INSERT INTO dab_wrapped VALUES (%s)", [[1], [2], [3]], True)]
        )


if __name__ == "__main__":
    unittest.main()
