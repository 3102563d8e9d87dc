"""OPTIONS["pool"]: async connections from a psycopg_pool.AsyncConnectionPool.

Each alias made here has an ``application_name`` of its own, so that session
counts only see the pool under test.
"""

from __future__ import annotations

import asyncio
import os
import sys
import unittest
import uuid
from typing import Any
from unittest import mock

import psycopg
from django.core.exceptions import ImproperlyConfigured
from django.db import OperationalError
from psycopg_pool import AsyncConnectionPool, PoolTimeout

import support
from aliases import backend_pid, temporary_alias
from django_async_backend.db import async_connections


def unique_name(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def pool_alias(name: str, application_name: str, **pool: Any) -> Any:
    return temporary_alias(
        name, OPTIONS={"application_name": application_name, "pool": pool or True}
    )


def server_pids() -> set[int]:
    with psycopg.connect(support.server_dsn(), autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity").fetchall()
    return {int(row[0]) for row in rows}


async def sessions_become(application_name: str, expected: int) -> bool:
    """Wait (a bounded number of polls, never timed) for the session count."""
    for _ in range(150):
        if support.count_sessions(application_name) == expected:
            return True
        await asyncio.sleep(0.02)
    return support.count_sessions(application_name) == expected


class PoolTests(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self) -> None:
        self.app = unique_name("dab-pool")

    async def asyncTearDown(self) -> None:
        await async_connections.close_all()

    async def test_connection_comes_from_the_pool(self) -> None:
        with pool_alias("pooled", self.app, min_size=1, max_size=2):
            connection = async_connections["pooled"]
            await backend_pid(connection)
            self.assertIsInstance(connection._pool, AsyncConnectionPool)
            self.assertIs(connection.connection._pool, connection._pool)

    async def test_close_returns_the_connection_to_the_pool(self) -> None:
        with pool_alias("pooled", self.app, min_size=1, max_size=1):
            connection = async_connections["pooled"]
            pid = await backend_pid(connection)
            pool = connection._pool
            self.assertEqual(pool.get_stats()["pool_available"], 0)
            self.assertEqual(support.count_sessions(self.app), 1)

            await connection.close()

            self.assertIsNone(connection.connection)
            self.assertEqual(pool.get_stats()["pool_available"], 1)
            # The session stays open, in the pool, and is handed out again.
            self.assertEqual(support.count_sessions(self.app), 1)
            self.assertEqual(await backend_pid(connection), pid)
            self.assertIs(connection._pool, pool)

    async def test_close_all_keeps_the_pool_close_pool_closes_it(self) -> None:
        with pool_alias("pooled", self.app, min_size=2, max_size=2):
            connection = async_connections["pooled"]
            async with connection.hold():
                await backend_pid(connection)
                pool = connection.pool
            self.assertTrue(await sessions_become(self.app, 2))

            await async_connections.close_all()  # other tasks may use the pool
            self.assertFalse(pool.closed)
            self.assertTrue(await sessions_become(self.app, 2))

            await connection.close_pool()
            self.assertTrue(pool.closed)
            self.assertIsNone(connection.pool)
            self.assertTrue(await sessions_become(self.app, 0))

    async def test_exhausted_pool_raises_then_serves_again(self) -> None:
        holding = asyncio.Event()
        give_back = asyncio.Event()

        async def hold() -> int:
            async with async_connections.independent_connection():
                async with async_connections["tiny"].hold():
                    pid = await backend_pid(async_connections["tiny"])
                    holding.set()
                    await give_back.wait()
                    return pid

        async def use() -> int:
            return await backend_pid(async_connections["tiny"])

        with pool_alias("tiny", self.app, min_size=1, max_size=1, timeout=0.5):
            # A guard against a hang, not a measurement.
            async with asyncio.timeout(60):
                holder = asyncio.create_task(hold())
                await holding.wait()
                with self.assertRaises(OperationalError) as ctx:
                    await asyncio.create_task(use())
                self.assertIsInstance(ctx.exception.__cause__, PoolTimeout)

                give_back.set()
                held_pid = await holder
                self.assertEqual(await asyncio.create_task(use()), held_pid)
        self.assertEqual(support.count_sessions(self.app), 1)

    async def test_persistent_connections_are_refused(self) -> None:
        with (
            temporary_alias(
                "pooled_persistent",
                CONN_MAX_AGE=60,
                OPTIONS={"application_name": self.app, "pool": True},
            ),
            self.assertRaisesRegex(ImproperlyConfigured, "persistent"),
        ):
            await backend_pid(async_connections["pooled_persistent"])
        self.assertEqual(support.count_sessions(self.app), 0)

    async def test_missing_psycopg_pool_says_what_to_install(self) -> None:
        with (
            pool_alias("nopoolpkg", self.app),
            mock.patch.dict(sys.modules, {"psycopg_pool": None}),
            self.assertRaises(ImproperlyConfigured) as ctx,
        ):
            await backend_pid(async_connections["nopoolpkg"])
        self.assertIn("django-async-backend[pool]", str(ctx.exception))
        self.assertEqual(support.count_sessions(self.app), 0)


class PoolPerEventLoopTests(unittest.TestCase):
    """Each event loop gets its own pool, closed when the loop shuts down.

    No close_all() here: the loop's shutdown is what must close the pool.
    """

    def setUp(self) -> None:
        self.app = unique_name("dab-pool-loops")

    def finish(self, driver_connection: Any) -> None:
        # Never let a leaked session outlive the test (nor be reported by
        # the garbage collector during another test). pgconn.finish() needs
        # no event loop: the connection's loop is gone.
        if not driver_connection.closed:
            driver_connection.pgconn.finish()

    def run_in_new_loop(self, runner: asyncio.Runner | None = None) -> Any:
        async def use_pool() -> tuple[Any, Any, int]:
            connection = async_connections["perloop"]
            pid = await backend_pid(connection)
            self.assertFalse(connection._pool.closed)
            return connection._pool, connection.connection, pid

        if runner is None:
            result = asyncio.run(use_pool())
        else:
            result = runner.run(use_pool())
        self.addCleanup(self.finish, result[1])
        return result

    def test_each_event_loop_gets_its_own_pool(self) -> None:
        with pool_alias("perloop", self.app, min_size=1, max_size=1):
            first_pool, _, first_pid = self.run_in_new_loop()
            with asyncio.Runner() as runner:
                second_pool, _, second_pid = self.run_in_new_loop(runner)
                self.assertFalse(second_pool.closed)
                self.assertTrue(first_pool.closed)
        self.assertIsNot(first_pool, second_pool)
        self.assertNotEqual(first_pid, second_pid)
        self.assertTrue(second_pool.closed)

    def test_loop_shutdown_closes_the_pools_sessions(self) -> None:
        with pool_alias("perloop", self.app, min_size=1, max_size=1):
            _, first, first_pid = self.run_in_new_loop()
            with asyncio.Runner() as runner:
                _, second, second_pid = self.run_in_new_loop(runner)
        # The test holds the driver connections, so the garbage collector
        # cannot close them: only the backend's shutdown hook can.
        self.assertTrue(first.closed, "asyncio.run() left a pooled session open")
        self.assertTrue(second.closed, "Runner.close() left a pooled session open")
        self.assertEqual(support.count_sessions(self.app), 0)
        self.assertFalse({first_pid, second_pid} & server_pids())


if __name__ == "__main__":
    unittest.main()
