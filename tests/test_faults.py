"""Fault suite, part 1: sessions killed on the server, server-side timeouts.

1. A session killed while idle (``pg_terminate_backend``): the next use
   outside a transaction reconnects and works, with at most one error (none
   when CONN_HEALTH_CHECKS checks a reused connection), with and without a
   pool.
2. A session killed mid-transaction: ``OperationalError`` out of
   ``async_atomic``, nothing committed, the next transaction works.
5. ``statement_timeout`` and ``lock_timeout`` (set through OPTIONS) surface as
   ``OperationalError``; the connection keeps working.

The restart, pool and event-loop scenarios are in test_faults_*.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import unittest
from typing import Any
from unittest import mock

import psycopg
from django.db import OperationalError
from psycopg.pq import TransactionStatus

import support
from aliases import backend_pid
from django_async_backend.db import async_connections
from django_async_backend.db.transaction import async_atomic
from django_async_backend.utils.loops import loop_state
from faults import (
    FaultRows,
    execute,
    fault_alias,
    insert,
    pool_is_whole,
)
from support import (
    expected_logs,
    idle_in_transaction,
    outside,
    poll,
    settle_background,
    terminate,
)

ALIAS = "faulty"
# What psycopg_pool logs when a connection comes back with its session gone.
DISCARDED = "discarding closed connection"


def committed(tag: str) -> list[str]:
    rows = outside("SELECT name FROM fault_rows WHERE tag = %s ORDER BY id", (tag,))
    return [row[0] for row in rows]


async def use_counting_errors(alias: str, attempts: int = 3) -> tuple[int, int]:
    """Query until it works: (errors seen, the backend pid that answered)."""
    errors = 0
    for _ in range(attempts):
        try:
            return errors, await backend_pid(async_connections[alias])
        except OperationalError as error:
            assert isinstance(error.__cause__, psycopg.Error), error
            errors += 1
    raise AssertionError(f"{alias!r} never recovered ({errors} errors)")


async def in_new_task(alias: str) -> tuple[int, int]:
    """use_counting_errors() in a task of its own (its connection then ends)."""
    return await asyncio.create_task(use_counting_errors(alias))


class FaultTestCase(FaultRows, unittest.IsolatedAsyncioTestCase):
    async def asyncTearDown(self) -> None:
        await settle_background()
        await support.close_everything()
        self.assertTrue(
            await poll(lambda: support.count_sessions(self.app) == 0),
            "sessions left behind",
        )

    async def assert_clean(self) -> None:
        self.assertTrue(
            await poll(lambda: idle_in_transaction(self.app) == 0),
            "a session was left idle in transaction",
        )


class KilledWhileIdleTests(FaultTestCase):
    """Scenario 1: the server ends an idle session."""

    async def test_same_task_reconnects_after_at_most_one_error(self) -> None:
        with fault_alias(ALIAS, self.app):
            killed = await backend_pid(async_connections[ALIAS])
            terminate(killed)
            errors, pid = await use_counting_errors(ALIAS)
            self.assertLessEqual(errors, 1)
            self.assertNotEqual(pid, killed)
            await insert(ALIAS, self.tag, "after")
        self.assertEqual(committed(self.tag), ["after"])

    async def test_same_task_with_health_checks(self) -> None:
        # Within one task the connection is not re-checked (as in Django,
        # where the check runs once per request): at most one error.
        with fault_alias(ALIAS, self.app, CONN_HEALTH_CHECKS=True):
            killed = await backend_pid(async_connections[ALIAS])
            terminate(killed)
            errors, pid = await use_counting_errors(ALIAS)
            self.assertLessEqual(errors, 1)
            self.assertNotEqual(pid, killed)

    async def park_and_kill(self) -> int:
        errors, killed = await in_new_task(ALIAS)
        self.assertEqual(errors, 0)
        await settle_background()
        terminate(killed)
        return killed

    async def test_persistent_connection_without_health_checks(self) -> None:
        with fault_alias(ALIAS, self.app, CONN_MAX_AGE=None):
            killed = await self.park_and_kill()
            errors, pid = await in_new_task(ALIAS)
            self.assertLessEqual(errors, 1)
            self.assertNotEqual(pid, killed)
            # Later tasks get the healthy replacement.
            self.assertEqual(await in_new_task(ALIAS), (0, pid))

    async def test_persistent_connection_with_health_checks(self) -> None:
        with fault_alias(ALIAS, self.app, CONN_MAX_AGE=None, CONN_HEALTH_CHECKS=True):
            killed = await self.park_and_kill()
            errors, pid = await in_new_task(ALIAS)
            self.assertEqual(errors, 0, "the health check let a dead session in")
            self.assertNotEqual(pid, killed)

    async def kill_pooled(self) -> int:
        killed = await in_new_task(ALIAS)
        self.assertEqual(killed[0], 0)
        self.assertTrue(await pool_is_whole(ALIAS))
        terminate(killed[1])
        return killed[1]

    async def test_pool_without_health_checks(self) -> None:
        with (
            fault_alias(ALIAS, self.app, pool={"min_size": 1, "max_size": 1}),
            expected_logs("psycopg.pool", DISCARDED) as warnings,
        ):
            killed = await self.kill_pooled()
            errors, pid = await in_new_task(ALIAS)
            self.assertLessEqual(errors, 1)
            # The dead session the pool handed out, back from its one error.
            self.assertLessEqual(len(warnings), errors)
            self.assertNotEqual(pid, killed)
            self.assertTrue(
                await pool_is_whole(ALIAS, lambda: support.count_sessions(self.app))
            )

    async def test_pool_with_health_checks(self) -> None:
        with fault_alias(
            ALIAS,
            self.app,
            pool={"min_size": 1, "max_size": 1},
            CONN_HEALTH_CHECKS=True,
        ):
            killed = await self.kill_pooled()
            errors, pid = await in_new_task(ALIAS)
            self.assertEqual(errors, 0, "the pool's check let a dead session in")
            self.assertNotEqual(pid, killed)
            self.assertTrue(
                await pool_is_whole(ALIAS, lambda: support.count_sessions(self.app))
            )


class KilledInTransactionTests(FaultTestCase):
    """Scenario 2: the server ends a session inside async_atomic."""

    async def killed_mid_transaction(self) -> None:
        with self.assertRaises(OperationalError) as ctx:
            async with async_atomic(using=ALIAS):
                await insert(ALIAS, self.tag, "lost")
                terminate(await backend_pid(async_connections[ALIAS]))
                await insert(ALIAS, self.tag, "after")
        self.assertIsInstance(ctx.exception.__cause__, psycopg.OperationalError)
        self.assertEqual(committed(self.tag), [])
        self.assertFalse(async_connections[ALIAS].in_atomic_block)
        async with async_atomic(using=ALIAS):
            await insert(ALIAS, self.tag, "next")
        self.assertEqual(committed(self.tag), ["next"])
        await self.assert_clean()

    async def test_plain(self) -> None:
        with fault_alias(ALIAS, self.app):
            await self.killed_mid_transaction()

    async def test_pooled(self) -> None:
        with (
            fault_alias(ALIAS, self.app, pool={"min_size": 1, "max_size": 2}),
            expected_logs("psycopg.pool", DISCARDED) as warnings,
        ):
            await self.killed_mid_transaction()
            # The killed session, given back to the pool and thrown away.
            self.assertLessEqual(len(warnings), 1)
            await async_connections[ALIAS].close()
            self.assertTrue(
                await pool_is_whole(ALIAS, lambda: support.count_sessions(self.app))
            )


class ServerTimeoutTests(FaultTestCase):
    """Scenario 5: statement_timeout and lock_timeout from OPTIONS."""

    def timeouts(self, **settings: str) -> Any:
        options = " ".join(f"-c {key}={value}" for key, value in settings.items())
        return fault_alias(ALIAS, self.app, options={"options": options})

    async def test_statement_timeout_outside_a_transaction(self) -> None:
        with self.timeouts(statement_timeout="200ms"):
            pid = await backend_pid(async_connections[ALIAS])
            with self.assertRaises(OperationalError) as ctx:
                await execute(ALIAS, "SELECT pg_sleep(5)")
            self.assertIsInstance(ctx.exception.__cause__, psycopg.errors.QueryCanceled)
            # The same session goes on working.
            await insert(ALIAS, self.tag, "after")
            self.assertEqual(await backend_pid(async_connections[ALIAS]), pid)
        self.assertEqual(committed(self.tag), ["after"])

    async def test_statement_timeout_in_a_transaction(self) -> None:
        with self.timeouts(statement_timeout="200ms"):
            pid = await backend_pid(async_connections[ALIAS])
            with self.assertRaises(OperationalError):
                async with async_atomic(using=ALIAS):
                    await insert(ALIAS, self.tag, "rolled back")
                    await execute(ALIAS, "SELECT pg_sleep(5)")
            async with async_atomic(using=ALIAS):
                await insert(ALIAS, self.tag, "next")
            self.assertEqual(await backend_pid(async_connections[ALIAS]), pid)
        self.assertEqual(committed(self.tag), ["next"])
        await self.assert_clean()

    async def test_lock_timeout(self) -> None:
        outside("INSERT INTO fault_rows (tag, name) VALUES (%s, 'locked')", (self.tag,))
        with (
            self.timeouts(lock_timeout="200ms"),
            psycopg.connect(
                support.server_dsn(), application_name=support.OBSERVER
            ) as holder,
        ):
            # Another session holds the row lock (its transaction stays open).
            holder.execute(
                "SELECT * FROM fault_rows WHERE tag = %s FOR UPDATE", (self.tag,)
            )
            pid = await backend_pid(async_connections[ALIAS])
            with self.assertRaises(OperationalError) as ctx:
                async with async_atomic(using=ALIAS):
                    await insert(ALIAS, self.tag, "rolled back")
                    await execute(
                        ALIAS,
                        "UPDATE fault_rows SET name = 'mine' WHERE tag = %s",
                        [self.tag],
                    )
            self.assertIsInstance(
                ctx.exception.__cause__, psycopg.errors.LockNotAvailable
            )
            holder.rollback()
            async with async_atomic(using=ALIAS):
                await execute(
                    ALIAS,
                    "UPDATE fault_rows SET name = 'mine' WHERE tag = %s",
                    [self.tag],
                )
            self.assertEqual(await backend_pid(async_connections[ALIAS]), pid)
        self.assertEqual(committed(self.tag), ["mine"])
        await self.assert_clean()


class CancelledAtEveryStepTests(FaultTestCase):
    """A cancellation at any await of a block leaves the connection sound.

    psycopg yields to the loop once an operation is done when the loop has
    been busy (its MAX_BUSY_TIME); set to 0 here, so that every operation
    offers that extra cancellation point (set_autocommit too: a cancellation
    there once left a connection parked outside autocommit).
    """

    async def one_block(self, name: str) -> None:
        async with async_atomic(using=ALIAS):
            await insert(ALIAS, self.tag, name)
            async with async_atomic(using=ALIAS):
                await insert(ALIAS, self.tag, name + "-inner")

    async def test_parked_connection_is_always_in_autocommit(self) -> None:
        with (
            mock.patch.object(psycopg.waiting, "MAX_BUSY_TIME", 0.0),
            fault_alias(ALIAS, self.app, CONN_MAX_AGE=None),
        ):
            for steps in range(40):
                # Park a connection for the cancelled task to take over.
                await asyncio.create_task(self.one_block(f"a{steps}"))
                await asyncio.sleep(0)
                task = asyncio.create_task(self.one_block(f"b{steps}"))
                for _ in range(steps):
                    await asyncio.sleep(0)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                # The task's done-callbacks park its connection.
                await asyncio.sleep(0)
                await settle_background()
                for connection, _ in loop_state().idle.get(ALIAS, []):
                    self.assertTrue(connection.autocommit, f"after {steps} steps")
                    self.assertEqual(
                        connection.info.transaction_status, TransactionStatus.IDLE
                    )
            await asyncio.create_task(self.one_block("last"))
        names = committed(self.tag)
        self.assertIn("last", names)
        for name in names:
            if name.endswith("-inner"):
                self.assertIn(name.removesuffix("-inner"), names)

    async def swallow_cancellation_then_commit(self, steps: int) -> bool:
        task = asyncio.current_task()
        assert task is not None

        async def cancel_later() -> None:
            for _ in range(steps):
                await asyncio.sleep(0)
            task.cancel()

        canceller = asyncio.create_task(cancel_later())
        try:
            await self.one_block(f"c{steps}")
            await asyncio.sleep(3600)  # the cancellation lands here at the latest
        except asyncio.CancelledError:
            task.uncancel()
        await canceller
        # The task goes on: its next block commits.
        await self.one_block(f"next{steps}")
        return bool(async_connections[ALIAS].autocommit)

    async def test_task_that_swallows_a_cancellation_commits_next(self) -> None:
        with (
            mock.patch.object(psycopg.waiting, "MAX_BUSY_TIME", 0.0),
            fault_alias(ALIAS, self.app),
        ):
            for steps in range(40):
                self.assertTrue(
                    await asyncio.create_task(
                        self.swallow_cancellation_then_commit(steps)
                    )
                )
                self.assertIn(f"next{steps}", committed(self.tag))


if __name__ == "__main__":
    unittest.main()
