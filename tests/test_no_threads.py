"""The async path never runs database work in a thread.

Everything that could hide a thread is made to raise while the backend
connects, queries and closes: the sync psycopg connection, asgiref's
``SyncToAsync`` (``sync_to_async``), ``threading.Thread.start`` and the event
loop's executor. The backend must still work end to end, plain and pooled.

The server is addressed by IP address (tests/settings.py defaults to
127.0.0.1): a host *name* makes psycopg resolve it with ``loop.getaddrinfo``,
which asyncio runs in its default thread executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import unittest
import uuid
from collections.abc import Iterator
from typing import Any
from unittest import mock

import psycopg
import psycopg_pool  # noqa: F401 - imported before threads are forbidden
from asgiref.sync import SyncToAsync

import support
from aliases import backend_pid, temporary_alias
from django_async_backend.db import async_connections
from django_async_backend.db.backends.postgresql import (  # noqa: F401
    base as _base,
)
from django_async_backend.db.backends.postgresql import (  # noqa: F401
    pool as _pool,
)
from django_async_backend.utils.loops import loop_state


class ThreadUsed(AssertionError):
    pass


def _forbidden(what: str) -> Any:
    def raiser(*args: Any, **kwargs: Any) -> Any:
        raise ThreadUsed(f"the async backend used {what}")

    return raiser


@contextlib.contextmanager
def no_threads() -> Iterator[None]:
    with (
        mock.patch.object(
            psycopg.Connection, "connect", new=_forbidden("psycopg.Connection.connect")
        ),
        # psycopg.connect is an alias bound at import time.
        mock.patch.object(psycopg, "connect", new=_forbidden("psycopg.connect")),
        mock.patch.object(
            SyncToAsync, "__call__", new=_forbidden("asgiref sync_to_async")
        ),
        mock.patch.object(
            threading.Thread, "start", new=_forbidden("threading.Thread.start")
        ),
        mock.patch.object(
            asyncio.BaseEventLoop,
            "run_in_executor",
            new=_forbidden("loop.run_in_executor"),
        ),
    ):
        yield


async def exercise(test: unittest.TestCase, alias: str) -> None:
    """Connect, query, executemany, stream and run in parallel on ``alias``."""
    connection = async_connections[alias]
    async with connection.cursor() as cursor:
        await cursor.execute("SELECT %s::int + 1", [1])
        test.assertEqual(await cursor.fetchone(), (2,))
        await cursor.execute("CREATE TEMPORARY TABLE dab_threads (n int)")
        await cursor.executemany("INSERT INTO dab_threads VALUES (%s)", [[1], [2], [3]])
        await cursor.execute("SELECT n FROM dab_threads ORDER BY n")
        test.assertEqual([row async for row in cursor], [(1,), (2,), (3,)])

    async with connection.chunked_cursor() as cursor:
        await cursor.execute("SELECT generate_series(1, 10)")
        test.assertEqual(await cursor.fetchmany(4), [(1,), (2,), (3,), (4,)])
        test.assertEqual(len(await cursor.fetchall()), 6)

    await connection.set_autocommit(False)
    async with connection.cursor() as cursor:
        await cursor.execute("INSERT INTO dab_threads VALUES (4)")
    await connection.rollback()
    await connection.set_autocommit(True)

    all_connected = asyncio.Barrier(3)

    async def independent() -> int:
        async with async_connections.independent_connection():
            # Hold the connection until all three have one.
            async with async_connections[alias].hold():
                pid = await backend_pid(async_connections[alias])
                await all_connected.wait()
            return pid

    async with connection.hold():  # (a pooled one would go back meanwhile)
        outer = await backend_pid(connection)
        pids = await asyncio.gather(*(independent() for _ in range(3)))
    test.assertEqual(len({outer, *pids}), 4)

    # A child task gets its own connection, released when it ends.
    child = await asyncio.create_task(pid_in_task(alias))
    test.assertNotEqual(child, outer)


async def pid_in_task(alias: str) -> int:
    return await backend_pid(async_connections[alias])


class NoThreadTests(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self) -> None:
        self.app = f"dab-threads-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    async def asyncTearDown(self) -> None:
        await async_connections.close_all()

    async def test_patches_are_effective(self) -> None:
        with no_threads():
            with self.assertRaises(ThreadUsed):
                threading.Thread(target=lambda: None).start()
            with self.assertRaises(ThreadUsed):
                await asyncio.to_thread(lambda: None)
            with self.assertRaises(ThreadUsed):
                psycopg.Connection.connect(support.server_dsn())
            with self.assertRaises(ThreadUsed):
                psycopg.connect(support.server_dsn())
            with self.assertRaises(ThreadUsed):
                await SyncToAsync(lambda: None)()

    async def test_plain_connections_use_no_thread(self) -> None:
        with (
            temporary_alias("plain", OPTIONS={"application_name": self.app}),
            no_threads(),
        ):
            await exercise(self, "plain")
            await async_connections.close_all()

    async def test_pooled_connections_use_no_thread(self) -> None:
        with (
            temporary_alias(
                "pooled",
                OPTIONS={
                    "application_name": self.app,
                    "pool": {"min_size": 1, "max_size": 6},
                },
            ),
            no_threads(),
        ):
            await exercise(self, "pooled")
            await async_connections.close_all()

    async def test_persistent_connections_use_no_thread(self) -> None:
        with (
            temporary_alias(
                "persistent",
                CONN_MAX_AGE=None,
                CONN_HEALTH_CHECKS=True,
                OPTIONS={"application_name": self.app},
            ),
            no_threads(),
        ):
            first = await asyncio.create_task(pid_in_task("persistent"))
            # Let the first task's connection be parked (bounded wait).
            for _ in range(150):
                if loop_state().idle.get("persistent"):
                    break
                await asyncio.sleep(0.02)
            second = await asyncio.create_task(pid_in_task("persistent"))
            self.assertEqual(first, second)
            await async_connections.close_all()


if __name__ == "__main__":
    unittest.main()
