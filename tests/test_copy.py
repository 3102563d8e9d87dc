"""COPY: ``async with cursor.copy(sql) as copy:`` on the task's connection.

Rows go in with ``write_row()``/``write()`` (``COPY ... FROM STDIN``) and
come out with ``rows()``/``read_row()``/``read()`` (``COPY ... TO STDOUT``),
inside ``async_atomic()`` as part of its transaction. Errors are Django's,
with psycopg's chained; the statement is logged in ``connection.queries``;
after a bad row, an early exit, an exception or a cancellation the
connection is clean and usable. Each runs on a plain and a pooled alias.
"""

from __future__ import annotations

import asyncio
import os
import unittest
import uuid
from typing import Any

import psycopg
from django.conf import settings
from django.db import DataError, ProgrammingError, connections
from django.test.utils import CaptureQueriesContext

from aliases import backend_pid, temporary_alias
from django_async_backend.db import async_connections
from django_async_backend.db.transaction import async_atomic
from django_async_backend.utils.loops import loop_state
from support import outside, poll, session_state, settle_background

TABLE = "test_copy_rows"


def stored() -> list[tuple[Any, ...]]:
    return [tuple(row) for row in outside(f"SELECT id, name FROM {TABLE} ORDER BY id")]


class CopyScenarios(unittest.IsolatedAsyncioTestCase):
    alias = "copying"
    alias_options: dict[str, Any] = {}

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        outside(
            f"CREATE TABLE IF NOT EXISTS {TABLE} "
            "(id int PRIMARY KEY, name text NOT NULL, amount numeric)"
        )

    def setUp(self) -> None:
        outside(f"TRUNCATE {TABLE}")
        self.app = f"dab-copy-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        options = {"application_name": self.app, **self.alias_options}
        self.enterContext(temporary_alias(self.alias, OPTIONS=options))
        self.connection = async_connections  # (per task: fetched in tests)

    async def asyncTearDown(self) -> None:
        await settle_background()
        await async_connections.close_all()
        await loop_state().close_pools()

    def cursor(self) -> Any:
        return async_connections[self.alias].cursor()

    async def assert_usable(self) -> None:
        """The connection answers, outside any transaction, and is idle."""
        connection = async_connections[self.alias]
        async with connection.cursor() as cursor:
            await cursor.execute("SELECT 1")
            self.assertEqual(await cursor.fetchone(), (1,))
        if not settings.DAB_SERVER_URL:  # (behind PgBouncer: not its session)
            pid = await backend_pid(connection)
            self.assertTrue(await poll(lambda: session_state(pid) == "idle"))

    # ---- COPY FROM STDIN and TO STDOUT -----------------------------------

    async def test_rows_written_are_stored_and_read_back(self) -> None:
        async with self.cursor() as cursor:
            async with cursor.copy(f"COPY {TABLE} (id, name) FROM STDIN") as copy:
                for number in range(1, 4):
                    await copy.write_row((number, f"name {number}\t'\\"))
            self.assertEqual(cursor.rowcount, 3)
            sql = f"COPY (SELECT id, name FROM {TABLE} ORDER BY id) TO STDOUT"
            async with cursor.copy(sql) as copy:
                copy.set_types(["int4", "text"])
                rows = [row async for row in copy.rows()]
        expected = [(n, f"name {n}\t'\\") for n in range(1, 4)]
        self.assertEqual(rows, expected)
        self.assertEqual(stored(), expected)

    async def test_raw_data_in_the_copy_format(self) -> None:
        async with self.cursor() as cursor:
            sql = f"COPY {TABLE} (id, name) FROM STDIN (FORMAT csv)"
            async with cursor.copy(sql) as copy:
                await copy.write('1,"a, b"\n2,c\n')
            async with cursor.copy(f"COPY {TABLE} (id) TO STDOUT") as copy:
                data = bytearray()
                while block := await copy.read():
                    data += block
        self.assertEqual(stored(), [(1, "a, b"), (2, "c")])
        self.assertEqual(sorted(bytes(data).split()), [b"1", b"2"])

    async def test_parameters_are_bound_in_a_copy_query(self) -> None:
        outside(f"INSERT INTO {TABLE} (id, name) VALUES (1, 'a'), (2, 'b')")
        sql = f"COPY (SELECT name FROM {TABLE} WHERE id = %s) TO STDOUT"
        async with self.cursor() as cursor, cursor.copy(sql, [2]) as copy:
            self.assertEqual(await copy.read_row(), ("b",))
            self.assertIsNone(await copy.read_row())

    # ---- transactions ------------------------------------------------------

    async def test_copy_commits_with_its_async_atomic_block(self) -> None:
        async with async_atomic(using=self.alias):
            async with self.cursor() as cursor:
                async with cursor.copy(f"COPY {TABLE} (id, name) FROM STDIN") as copy:
                    await copy.write_row((1, "in the transaction"))
            self.assertEqual(stored(), [])  # not committed yet
        self.assertEqual(stored(), [(1, "in the transaction")])

    async def test_copy_is_rolled_back_with_its_async_atomic_block(self) -> None:
        with self.assertRaises(ValueError):
            async with async_atomic(using=self.alias):
                async with self.cursor() as cursor:
                    sql = f"COPY {TABLE} (id, name) FROM STDIN"
                    async with cursor.copy(sql) as copy:
                        await copy.write_row((1, "rolled back"))
                raise ValueError
        self.assertEqual(stored(), [])
        await self.assert_usable()

    # ---- errors -------------------------------------------------------------

    async def test_a_bad_row_is_djangos_data_error_and_the_connection_works_after(
        self,
    ) -> None:
        async with self.cursor() as cursor:
            with self.assertRaises(DataError) as caught:
                sql = f"COPY {TABLE} (id, name) FROM STDIN"
                async with cursor.copy(sql) as copy:
                    await copy.write_row((1, "good"))
                    await copy.write_row(("not a number", "bad"))
        error = caught.exception
        self.assertIsInstance(error.__cause__, psycopg.errors.InvalidTextRepresentation)
        self.assertIn(
            'invalid input syntax for type integer: "not a number"', str(error)
        )
        self.assertEqual(stored(), [])  # the whole COPY failed
        await self.assert_usable()

    async def test_a_bad_row_inside_async_atomic_rolls_the_block_back(self) -> None:
        with self.assertRaises(DataError):
            async with async_atomic(using=self.alias):
                async with self.cursor() as cursor:
                    await cursor.execute(
                        f"INSERT INTO {TABLE} (id, name) VALUES (9, 'before')"
                    )
                    sql = f"COPY {TABLE} (id, name) FROM STDIN"
                    async with cursor.copy(sql) as copy:
                        await copy.write_row(("1.5", "not an int"))
        self.assertEqual(stored(), [])
        await self.assert_usable()

    async def test_a_wrong_statement_is_djangos_programming_error(self) -> None:
        async with self.cursor() as cursor:
            with self.assertRaises(ProgrammingError) as caught:
                async with cursor.copy("COPY no_such_table FROM STDIN"):
                    pass
        self.assertIsInstance(caught.exception.__cause__, psycopg.errors.UndefinedTable)
        await self.assert_usable()

    async def test_an_exception_in_the_block_stores_nothing(self) -> None:
        async with self.cursor() as cursor:
            with self.assertRaises(KeyError):
                sql = f"COPY {TABLE} (id, name) FROM STDIN"
                async with cursor.copy(sql) as copy:
                    await copy.write_row((1, "sent"))
                    raise KeyError("the caller's")
        self.assertEqual(stored(), [])
        await self.assert_usable()

    async def test_the_copy_belongs_to_its_task(self) -> None:
        async with self.cursor() as cursor:
            async with cursor.copy(f"COPY {TABLE} (id, name) FROM STDIN") as copy:

                async def intruder() -> None:
                    await copy.write_row((1, "from another task"))

                with self.assertRaisesRegex(RuntimeError, "belongs to task"):
                    await asyncio.create_task(intruder())
        self.assertEqual(stored(), [])

    # ---- leaving early -------------------------------------------------------

    async def test_leaving_a_copy_to_block_early_keeps_the_transaction(self) -> None:
        sql = "COPY (SELECT i FROM generate_series(1, 100000) AS i) TO STDOUT"
        async with async_atomic(using=self.alias):
            async with self.cursor() as cursor:
                async with cursor.copy(sql) as copy:
                    async for row in copy.rows():
                        self.assertEqual(row, ("1",))
                        break
                await cursor.execute(f"INSERT INTO {TABLE} (id, name) VALUES (1, 'a')")
        self.assertEqual(stored(), [(1, "a")])
        await self.assert_usable()

    # ---- cancellation --------------------------------------------------------

    async def test_a_timeout_mid_copy_from_leaves_the_connection_clean(self) -> None:
        async with self.cursor() as cursor:
            with self.assertRaises(TimeoutError):
                async with asyncio.timeout(0.2):
                    sql = f"COPY {TABLE} (id, name) FROM STDIN"
                    async with cursor.copy(sql) as copy:
                        for number in range(1000):
                            await copy.write_row((number, "x"))
                        await asyncio.sleep(30)
        self.assertEqual(stored(), [])
        await self.assert_usable()

    async def test_a_timeout_mid_copy_to_leaves_the_connection_clean(self) -> None:
        sql = "COPY (SELECT generate_series(1, 10000000)) TO STDOUT"
        loop = asyncio.get_running_loop()
        async with self.cursor() as cursor:
            with self.assertRaises(TimeoutError):
                async with asyncio.timeout(None) as timeout:
                    async with cursor.copy(sql) as copy:
                        async for row in copy.rows():
                            if row == ("100",):  # expire while rows flow
                                timeout.reschedule(loop.time())
        await self.assert_usable()

    async def test_a_timeout_before_the_first_row_leaves_it_clean(self) -> None:
        # The first row takes far longer than the timeout (the server sends
        # the rows in 8 kB messages): the cancellation lands while the COPY
        # starts, which psycopg leaves half-open by itself.
        sql = (
            "COPY (SELECT i, pg_sleep(0.01) FROM generate_series(1, 10000) i) TO STDOUT"
        )
        async with self.cursor() as cursor:
            with self.assertRaises(TimeoutError):
                async with asyncio.timeout(0.2), cursor.copy(sql) as copy:
                    await copy.read_row()
        await self.assert_usable()

    async def test_a_cancelled_copy_inside_async_atomic_rolls_back(self) -> None:
        started = asyncio.Event()

        async def load() -> None:
            async with async_atomic(using=self.alias):
                async with async_connections[self.alias].cursor() as cursor:
                    sql = f"COPY {TABLE} (id, name) FROM STDIN"
                    async with cursor.copy(sql) as copy:
                        await copy.write_row((1, "x"))
                        started.set()
                        await asyncio.sleep(30)

        task = asyncio.create_task(load())
        await started.wait()
        task.cancel()
        with self.assertRaises(asyncio.CancelledError):
            await task
        await settle_background()
        self.assertEqual(stored(), [])
        self.assertTrue(
            await poll(
                lambda: (
                    not outside(
                        "SELECT 1 FROM pg_stat_activity WHERE application_name = %s "
                        "AND state <> 'idle'",
                        (self.app,),
                    )
                )
            )
        )

    # ---- logging ---------------------------------------------------------------

    async def test_the_copy_is_recorded_in_connection_queries(self) -> None:
        connection = async_connections[self.alias]
        connection.force_debug_cursor = True
        sql = f"COPY {TABLE} (id, name) FROM STDIN"
        async with connection.cursor() as cursor, cursor.copy(sql) as copy:
            await copy.write_row((1, "logged"))
        self.assertEqual([q["sql"] for q in connection.queries], [sql])
        self.assertGreaterEqual(float(connection.queries[0]["time"]), 0)


class PlainCopyTests(CopyScenarios):
    pass


class PooledCopyTests(CopyScenarios):
    alias_options = {"pool": {"min_size": 1, "max_size": 2}}


del CopyScenarios


class SyncConnectionCopyTests(unittest.TestCase):
    """The sync side is Django's: its cursor's copy() is logged as Django's is."""

    def tearDown(self) -> None:
        connections["default"].close()

    def test_copy_is_in_connection_queries(self) -> None:
        sql = "COPY (SELECT 1 AS one) TO STDOUT"
        connection = connections["default"]
        with CaptureQueriesContext(connection) as captured:
            with connection.cursor() as cursor:
                with cursor.copy(sql) as copy:
                    rows = list(copy.rows())
        self.assertEqual(rows, [("1",)])
        self.assertEqual([query["sql"] for query in captured], [sql])


if __name__ == "__main__":
    unittest.main()
