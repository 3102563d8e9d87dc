"""Pipelines: ``async with connection.pipeline():`` on the task's connection.

Statements executed in the block are sent without waiting for their
results (checked on the server: a statement blocked on a lock does not
block ``execute()``); their errors surface as Django's at the point psycopg
reports them (a later fetch, ``sync()``, the end of the block) and the
connection is usable after. Inside ``async_atomic()`` the batch commits or
rolls back with the block; the native ORM stays correct inside a pipeline
(its statements are synced one by one). Plain and pooled aliases.
"""

from __future__ import annotations

import asyncio
import os
import unittest
import uuid
from typing import Any

import psycopg
from django.conf import settings
from django.db import IntegrityError, NotSupportedError

import support
from aliases import backend_pid, temporary_alias
from django_async_backend.db import async_connections
from django_async_backend.db.backends.postgresql.base import AsyncDatabaseWrapper
from django_async_backend.db.transaction import async_atomic
from django_async_backend.utils.loops import loop_state
from support import outside, poll, session_state, settle_background
from testapp.models import Author

TABLE = "test_pipeline_rows"
LOCK = 727_001  # an advisory lock key of this module's own


def stored() -> list[int]:
    return [row[0] for row in outside(f"SELECT id FROM {TABLE} ORDER BY id")]


class PipelineScenarios(unittest.IsolatedAsyncioTestCase):
    alias = "piped"
    alias_options: dict[str, Any] = {}

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        support.ensure_test_tables()
        outside(f"CREATE TABLE IF NOT EXISTS {TABLE} (id int PRIMARY KEY)")

    def setUp(self) -> None:
        outside(f"TRUNCATE {TABLE}")
        outside("DELETE FROM testapp_author WHERE name LIKE 'piped-%%'")
        self.app = f"dab-pipe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        options = {"application_name": self.app, **self.alias_options}
        self.enterContext(temporary_alias(self.alias, OPTIONS=options))

    async def asyncTearDown(self) -> None:
        await settle_background()
        await async_connections.close_all()
        await loop_state().close_pools()

    def connection(self) -> AsyncDatabaseWrapper:
        return async_connections[self.alias]

    async def insert(self, *ids: int) -> None:
        async with self.connection().cursor() as cursor:
            for number in ids:
                await cursor.execute(f"INSERT INTO {TABLE} VALUES (%s)", [number])

    async def assert_usable(self) -> None:
        connection = self.connection()
        async with connection.cursor() as cursor:
            await cursor.execute("SELECT 1")
            self.assertEqual(await cursor.fetchone(), (1,))
        if not settings.DAB_SERVER_URL:  # (behind PgBouncer: not its session)
            pid = await backend_pid(connection)
            self.assertTrue(await poll(lambda: session_state(pid) == "idle"))

    # ---- batching ------------------------------------------------------------

    async def test_every_statement_of_the_block_runs(self) -> None:
        async with self.connection().pipeline():
            await self.insert(1, 2, 3)
        self.assertEqual(stored(), [1, 2, 3])

    async def test_execute_does_not_wait_for_the_server(self) -> None:
        # A statement stuck on a lock held outside: execute() returns anyway,
        # while the server still waits on the lock; the result comes at sync.
        with psycopg.connect(support.server_dsn(), autocommit=True) as holder:
            holder.execute("SELECT pg_advisory_lock(%s)", [LOCK])
            connection = self.connection()
            pid = await backend_pid(connection)
            async with connection.pipeline() as pipeline:
                async with connection.cursor() as cursor:
                    await cursor.execute("SELECT pg_advisory_lock(%s)", [LOCK])
                    await cursor.execute(f"INSERT INTO {TABLE} VALUES (1)")
                    waiting = await poll(
                        lambda: (
                            outside(
                                "SELECT wait_event_type FROM pg_stat_activity "
                                "WHERE pid = %s",
                                (pid,),
                            )
                            == [("Lock",)]
                        )
                    )
                    self.assertTrue(waiting)
                    holder.execute("SELECT pg_advisory_unlock(%s)", [LOCK])
                    await pipeline.sync()
                    await cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK])
        self.assertEqual(stored(), [1])

    async def test_a_fetch_inside_the_block_gets_its_result(self) -> None:
        connection = self.connection()
        async with connection.pipeline(), connection.cursor() as cursor:
            await cursor.execute(f"INSERT INTO {TABLE} VALUES (1) RETURNING id")
            self.assertEqual(await cursor.fetchone(), (1,))
            await cursor.execute("SELECT %s::int + 1", [41])
            self.assertEqual(await cursor.fetchone(), (42,))

    async def test_each_statement_is_recorded_in_connection_queries(self) -> None:
        connection = self.connection()
        connection.force_debug_cursor = True
        async with connection.pipeline():
            await self.insert(1, 2)
        self.assertEqual(len(connection.queries), 2)

    # ---- transactions ----------------------------------------------------------

    async def test_a_pipeline_commits_with_its_async_atomic_block(self) -> None:
        async with async_atomic(using=self.alias):
            async with self.connection().pipeline():
                await self.insert(1, 2)
            self.assertEqual(stored(), [])
        self.assertEqual(stored(), [1, 2])

    async def test_a_pipeline_rolls_back_with_its_async_atomic_block(self) -> None:
        with self.assertRaises(ValueError):
            async with async_atomic(using=self.alias):
                async with self.connection().pipeline():
                    await self.insert(1, 2)
                raise ValueError
        self.assertEqual(stored(), [])
        await self.assert_usable()

    async def test_async_atomic_inside_a_pipeline_commits(self) -> None:
        connection = self.connection()
        async with connection.pipeline():
            async with async_atomic(using=self.alias):
                await self.insert(1)
                async with async_atomic(using=self.alias):  # a savepoint
                    await self.insert(2)
        self.assertEqual(stored(), [1, 2])

    async def test_a_failed_nested_block_rolls_back_to_its_savepoint(self) -> None:
        connection = self.connection()
        async with connection.pipeline() as pipeline, async_atomic(using=self.alias):
            await self.insert(1)
            with self.assertRaises(IntegrityError):
                async with async_atomic(using=self.alias):
                    await self.insert(3, 1)
                    await pipeline.sync()  # the block's errors, in the block
            await self.insert(2)
        self.assertEqual(stored(), [1, 2])
        await self.assert_usable()

    # ---- errors -------------------------------------------------------------

    async def test_an_error_surfaces_as_djangos_at_the_end_of_the_block(
        self,
    ) -> None:
        with self.assertRaises(IntegrityError) as caught:
            async with self.connection().pipeline():
                await self.insert(1, 2, 1, 3)
        self.assertIsInstance(
            caught.exception.__cause__, psycopg.errors.UniqueViolation
        )
        # Outside a transaction, the statements up to the sync were one
        # implicit transaction: the whole batch is undone.
        self.assertEqual(stored(), [])
        await self.assert_usable()

    async def test_sync_reports_the_errors_of_the_batch_before_it(self) -> None:
        async with self.connection().pipeline() as pipeline:
            await self.insert(1)
            await pipeline.sync()
            await self.insert(1)
            with self.assertRaises(IntegrityError):
                await pipeline.sync()
            await self.insert(2)
        self.assertEqual(stored(), [1, 2])

    async def test_an_error_inside_async_atomic_rolls_the_block_back(self) -> None:
        with self.assertRaises(IntegrityError):
            async with async_atomic(using=self.alias):
                async with self.connection().pipeline():
                    await self.insert(1, 1, 2)
        self.assertEqual(stored(), [])
        await self.assert_usable()

    async def test_the_blocks_own_exception_wins_quietly(self) -> None:
        with support.expected_logs("psycopg") as logged:
            with self.assertRaises(KeyError):
                async with self.connection().pipeline():
                    await self.insert(1, 1)  # fails too, unreported
                    raise KeyError("the caller's")
        self.assertEqual(logged, [])
        await self.assert_usable()

    async def test_copy_is_refused_inside_a_pipeline(self) -> None:
        connection = self.connection()
        async with connection.pipeline(), connection.cursor() as cursor:
            with self.assertRaises(NotSupportedError):
                async with cursor.copy(f"COPY {TABLE} FROM STDIN"):
                    pass
        await self.assert_usable()

    async def test_a_timeout_inside_the_block_leaves_the_connection_clean(
        self,
    ) -> None:
        connection = self.connection()

        async def expire_once_sleeping(deadline: asyncio.Timeout) -> None:
            # The deadline falls once the server runs the sleep: a cancel
            # request that reached it earlier would hit nothing, and psycopg
            # would close the connection after waiting 5 s.
            await poll(self.sleeping)
            deadline.reschedule(asyncio.get_running_loop().time())

        with support.expected_logs("psycopg"):
            with self.assertRaises(TimeoutError):
                async with asyncio.timeout(None) as deadline, connection.pipeline():
                    watcher = asyncio.create_task(expire_once_sleeping(deadline))
                    async with connection.cursor() as cursor:
                        await cursor.execute("SELECT pg_sleep(30)")
                        await cursor.fetchone()
        await watcher
        await self.assert_usable()

    def sleeping(self) -> bool:
        return support.running(self.app, "pg_sleep")

    async def test_a_cancelled_pipeline_inside_async_atomic_rolls_back(self) -> None:
        started = asyncio.Event()

        async def batch() -> None:
            connection = self.connection()
            async with async_atomic(using=self.alias), connection.pipeline():
                async with connection.cursor() as cursor:
                    await cursor.execute(f"INSERT INTO {TABLE} VALUES (1)")
                    await cursor.execute("SELECT pg_sleep(30)")
                    started.set()
                    await cursor.fetchone()

        task = asyncio.create_task(batch())
        await started.wait()
        # Cancelled once the server runs the sleep (deterministic: a cancel
        # request that reached the server earlier would hit nothing).
        self.assertTrue(await poll(self.sleeping))
        task.cancel()
        with (
            support.expected_logs("psycopg"),
            self.assertRaises(asyncio.CancelledError),
        ):
            await task
        await settle_background()
        self.assertEqual(stored(), [])
        self.assertTrue(await poll(lambda: support.idle_in_transaction(self.app) == 0))

    async def test_the_pipeline_belongs_to_its_task(self) -> None:
        connection = self.connection()
        await self.insert(1)

        async def intruder() -> None:
            async with connection.pipeline():
                pass

        with self.assertRaisesRegex(RuntimeError, "belongs to task"):
            await asyncio.create_task(intruder())

    # ---- the native ORM ---------------------------------------------------------

    async def test_the_native_orm_stays_correct_inside_a_pipeline(self) -> None:
        authors = Author.objects.using(self.alias)
        author = await authors.acreate(name="piped-ann")
        async with self.connection().pipeline():
            author.name = "piped-anne"
            # save() UPDATEs, and INSERTs only if the UPDATE's rowcount is 0.
            await author.asave(using=self.alias)
            updated = await authors.filter(pk=author.pk).aupdate(born=None)
            count = await authors.filter(name__startswith="piped-").acount()
        self.assertEqual((updated, count), (1, 1))
        self.assertEqual((await authors.aget(pk=author.pk)).name, "piped-anne")


class PlainPipelineTests(PipelineScenarios):
    pass


class PooledPipelineTests(PipelineScenarios):
    alias_options = {"pool": {"min_size": 1, "max_size": 1}}

    async def test_the_block_keeps_its_pooled_connection(self) -> None:
        connection = self.connection()
        async with connection.pipeline():
            await self.insert(1)
            held = connection.connection
            other = asyncio.create_task(self.insert(2))  # waits for the one slot
            pool = connection.pool
            self.assertTrue(await poll(lambda: pool.waiting == 1))
            self.assertFalse(other.done())
            self.assertIs(connection.connection, held)
        await other
        self.assertEqual(stored(), [1, 2])


del PipelineScenarios

if __name__ == "__main__":
    unittest.main()
