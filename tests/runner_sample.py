"""Tests run by test_runners.py through Django's test runner (not collected)."""

from django_async_backend.db import async_connections
from django_async_backend.test import AsyncioTestCase, AsyncioTransactionTestCase


async def current_database() -> str:
    async with async_connections["default"].cursor() as cursor:
        await cursor.execute("SELECT current_database()")
        return str((await cursor.fetchone())[0])


class RollbackSample(AsyncioTestCase):
    async def test_uses_the_test_database(self) -> None:
        self.assertTrue((await current_database()).startswith("test_"))


class CommitSample(AsyncioTransactionTestCase):
    async def test_uses_the_test_database(self) -> None:
        self.assertTrue((await current_database()).startswith("test_"))
