"""Bad input: Django's exceptions, the psycopg error chained, nothing lost."""

import unittest
from typing import Any

import psycopg
from django.db import IntegrityError, ProgrammingError

from django_async_backend.db import async_connections
from scenarios import DatabaseTestCase


class ErrorTests(DatabaseTestCase):
    tables = ("testapp_account",)

    @property
    def connection(self) -> Any:
        # Each step (setUp, test, tearDown) runs in its own task here.
        return async_connections["default"]

    async def test_bad_sql_raises_programming_error_with_cause(self) -> None:
        async with self.connection.cursor() as cursor:
            with self.assertRaises(ProgrammingError) as ctx:
                await cursor.execute("SELEC 1")
        self.assertIsInstance(ctx.exception.__cause__, psycopg.errors.SyntaxError)

    async def test_connection_keeps_working_after_bad_sql(self) -> None:
        async with self.connection.cursor() as cursor:
            with self.assertRaises(ProgrammingError):
                await cursor.execute("SELECT * FROM no_such_table")
            await cursor.execute("SELECT 1")
            self.assertEqual(await cursor.fetchone(), (1,))
        self.assertTrue(await self.connection.get_autocommit())

    async def test_duplicate_key_raises_integrity_error(self) -> None:
        sql = "INSERT INTO testapp_account (name, balance) VALUES (%s, 0)"
        async with self.connection.cursor() as cursor:
            await cursor.execute(sql, ["dup"])
            with self.assertRaises(IntegrityError) as ctx:
                await cursor.execute(sql, ["dup"])
            await cursor.execute("SELECT count(*) FROM testapp_account")
            self.assertEqual(await cursor.fetchone(), (1,))
        self.assertIsInstance(ctx.exception.__cause__, psycopg.errors.UniqueViolation)


if __name__ == "__main__":
    unittest.main()
