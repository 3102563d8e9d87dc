"""Test cases that do what users' tests do to their connections (not collected).

Run by tests/test_testcases.py with unittest, Django's runner and pytest.
Each class is a scenario; its tests run in name order and check what the
earlier ones left behind.
"""

from __future__ import annotations

from typing import Any

from django.db import connections

import support  # configures Django (pytest and unittest runs)
from django_async_backend.db import async_connections
from django_async_backend.test import AsyncioTestCase, AsyncioTransactionTestCase
from django_async_backend.utils.loops import loop_state


async def add_account(name: str) -> None:
    async with async_connections["default"].cursor() as cursor:
        await cursor.execute(
            "INSERT INTO testapp_account (name, balance) VALUES (%s, 0)", [name]
        )


async def account_names() -> list[str]:
    async with async_connections["default"].cursor() as cursor:
        await cursor.execute("SELECT name FROM testapp_account ORDER BY name")
        return [row[0] for row in await cursor.fetchall()]


support.ensure_test_tables()


class ClassData(AsyncioTestCase):
    @classmethod
    async def asyncSetUpTestData(cls) -> None:
        await add_account("class-data")


class ClosesInATest(ClassData):
    async def test_1_closes_the_connection(self) -> None:
        await add_account("t1")
        await async_connections["default"].close()

    async def test_2_starts_clean_with_the_class_data(self) -> None:
        self.assertEqual(await account_names(), ["class-data"])
        await add_account("t2")

    async def test_3_is_isolated_as_always(self) -> None:
        self.assertEqual(await account_names(), ["class-data"])


class ClosesInSetUp(ClassData):
    async def asyncSetUp(self) -> None:
        if self._testMethodName == "test_1_set_up_closed_it":
            await async_connections["default"].close()

    async def test_1_set_up_closed_it(self) -> None:
        pass

    async def test_2_starts_clean_with_the_class_data(self) -> None:
        self.assertEqual(await account_names(), ["class-data"])


class ClosesInTearDown(ClassData):
    async def asyncTearDown(self) -> None:
        await async_connections["default"].close()

    async def test_1_writes(self) -> None:
        self.assertEqual(await account_names(), ["class-data"])
        await add_account("t1")

    async def test_2_starts_clean_with_the_class_data(self) -> None:
        self.assertEqual(await account_names(), ["class-data"])


class QueriesStayWithTheirTest(AsyncioTestCase):
    async def test_1_logs_queries(self) -> None:
        connection = async_connections["default"]
        connection.force_debug_cursor = True
        try:
            await account_names()
            self.assertEqual(len(connection.queries), 1)
        finally:
            connection.force_debug_cursor = False

    async def test_2_sees_none_of_them(self) -> None:
        self.assertEqual(async_connections["default"].queries, [])


class CleanupsGetTheConnection(AsyncioTransactionTestCase):
    async def test_a_cleanup_closes_the_connection(self) -> None:
        await account_names()
        self.addAsyncCleanup(async_connections["default"].close)

    async def test_a_cleanup_queries(self) -> None:
        await add_account("from-the-test")

        async def check() -> None:
            self.assertEqual(await account_names(), ["from-the-test"])

        self.addAsyncCleanup(check)


class CleanupsGetTheTransaction(ClassData):
    async def test_a_cleanup_queries_inside_the_test_transaction(self) -> None:
        await add_account("from-the-test")

        async def check() -> None:
            self.assertEqual(await account_names(), ["class-data", "from-the-test"])

        self.addAsyncCleanup(check)

    async def test_a_cleanup_closes_the_connection(self) -> None:
        await account_names()
        self.addAsyncCleanup(async_connections["default"].close)

    async def test_z_after_them_all(self) -> None:
        self.assertEqual(await account_names(), ["class-data"])


class CleanupsRestoreSettingsFirst(AsyncioTransactionTestCase):
    def setUp(self) -> None:
        settings_dict: dict[str, Any] = connections.settings["default"]
        self.addCleanup(settings_dict.__setitem__, "CONN_MAX_AGE", 0)
        settings_dict["CONN_MAX_AGE"] = 600  # the connection may be kept

    async def test_1_uses_a_connection(self) -> None:
        await account_names()

    async def test_2_none_was_kept(self) -> None:
        # The cleanup restored CONN_MAX_AGE = 0 before test 1's connection
        # was released: closed, not parked for reuse.
        self.assertEqual(loop_state().idle.get("default", []), [])


SAMPLES = [
    ClosesInATest,
    ClosesInSetUp,
    ClosesInTearDown,
    QueriesStayWithTheirTest,
    CleanupsGetTheConnection,
    CleanupsGetTheTransaction,
    CleanupsRestoreSettingsFirst,
]
TESTS = 16  # in all of SAMPLES
del ClassData
