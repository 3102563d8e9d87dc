"""The package's test cases, under pytest-django and this plugin."""

from inner_support import add_account, count

from django_async_backend.db import async_connections
from django_async_backend.test import AsyncioTestCase, AsyncioTransactionTestCase


class RolledBack(AsyncioTestCase):
    async def test_write(self) -> None:
        await add_account("rolled back")
        self.assertEqual(await count("testapp_account"), 1)

    async def test_sees_nothing(self) -> None:
        self.assertEqual(await count("testapp_account"), 0)


class Committed(AsyncioTransactionTestCase):
    async def test_commit(self) -> None:
        await add_account("committed")
        async with async_connections.independent_connection():
            self.assertEqual(await count("testapp_account"), 1)

    async def test_flushed(self) -> None:
        self.assertEqual(await count("testapp_account"), 0)
