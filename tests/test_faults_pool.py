"""Fault suite, scenario 4: an exhausted pool, and a storm of cancellations.

* When every pooled connection is taken, a request waits up to the pool's
  ``timeout`` and then gets ``django.db.OperationalError`` (the
  ``PoolTimeout`` chained), never a hang; a request waiting when a
  connection comes back is served by it.
* 1,000 tasks over a 10-connection pool, cancelled at random points (waiting
  for a connection, mid-query, mid-transaction, in a savepoint, in COMMIT):
  afterwards every pool slot is free, no session is idle in transaction,
  psycopg_pool never had to clean up after the backend, and every task that
  returned normally had its transaction committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import unittest
from typing import Any

from django.db import OperationalError
from psycopg_pool import PoolTimeout

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
    wait_all,
)
from support import idle_in_transaction, outside, poll, settle_background

ALIAS = "exhausted"
SEED = 20261121
STORM = 1000
CANCEL_SHARE = 0.3
CANCEL_WINDOW = 1.0  # seconds after the start in which cancellations land
GUARD = 90.0  # against a hang, not a measurement


async def pid_of(alias: str) -> int:
    """The backend pid of the current task's connection (fetched in the task)."""
    return await backend_pid(async_connections[alias])


class PoolFaultTestCase(FaultRows, unittest.IsolatedAsyncioTestCase):
    app_prefix = "dab-pool-faults"

    async def asyncTearDown(self) -> None:
        await settle_background()
        await async_connections.close_all()

    def committed(self) -> set[str]:
        rows = outside("SELECT name FROM fault_rows WHERE tag = %s", (self.tag,))
        return {row[0] for row in rows}


class ExhaustedPoolTests(PoolFaultTestCase):
    def one_slot_pool(self, timeout: float) -> contextlib.AbstractContextManager[Any]:
        """The alias on a pool of one connection, checkouts waiting ``timeout``."""
        return fault_alias(
            ALIAS, self.app, pool={"min_size": 1, "max_size": 1, "timeout": timeout}
        )

    async def hold(self, holding: asyncio.Event, give_back: asyncio.Event) -> int:
        async with async_connections[ALIAS].hold():
            pid = await backend_pid(async_connections[ALIAS])
            holding.set()
            await give_back.wait()
        return pid  # the connection goes back to the pool

    async def waiting_request(self) -> asyncio.Task[int]:
        """A request waiting for the pool's one connection (held elsewhere)."""
        waiter = asyncio.create_task(pid_of(ALIAS))
        pool = await loop_state().pools[ALIAS]
        self.assertTrue(
            await poll(lambda: pool.get_stats().get("requests_waiting", 0) == 1)
        )
        return waiter

    async def test_timeout_is_a_clear_operational_error(self) -> None:
        holding, give_back = asyncio.Event(), asyncio.Event()
        with self.one_slot_pool(timeout=0.3):
            holder = asyncio.create_task(self.hold(holding, give_back))
            await holding.wait()
            async with asyncio.timeout(30):  # a guard against a hang
                with self.assertRaises(OperationalError) as ctx:
                    await asyncio.create_task(execute(ALIAS, "SELECT 1"))
            self.assertIsInstance(ctx.exception.__cause__, PoolTimeout)
            message = str(ctx.exception)
            self.assertIn(repr(ALIAS), message)
            self.assertIn("max_size=1", message)
            give_back.set()
            pid = await holder
            # Served again at once by the connection that came back.
            self.assertEqual(await asyncio.create_task(pid_of(ALIAS)), pid)
            self.assertTrue(await pool_is_whole(ALIAS))

    async def test_waiting_request_gets_the_returned_connection(self) -> None:
        holding, give_back = asyncio.Event(), asyncio.Event()
        with self.one_slot_pool(timeout=60):
            holder = asyncio.create_task(self.hold(holding, give_back))
            await holding.wait()
            waiter = await self.waiting_request()
            self.assertFalse(waiter.done())
            give_back.set()
            async with asyncio.timeout(30):  # far below the pool's 60 s
                self.assertEqual(await waiter, await holder)
            self.assertTrue(await pool_is_whole(ALIAS))

    async def test_a_cancelled_waiting_request_leaves_the_pool_whole(self) -> None:
        holding, give_back = asyncio.Event(), asyncio.Event()
        with self.one_slot_pool(timeout=60):
            holder = asyncio.create_task(self.hold(holding, give_back))
            await holding.wait()
            waiter = await self.waiting_request()
            waiter.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await waiter
            give_back.set()
            pid = await holder
            self.assertTrue(await pool_is_whole(ALIAS))
            self.assertEqual(await asyncio.create_task(pid_of(ALIAS)), pid)

    async def test_a_request_cancelled_as_it_is_handed_the_connection(self) -> None:
        # The holder gives the connection back, which hands it to the waiting
        # request, and cancels that request in the same step, before it ran
        # again: the connection must go back to the pool, not be lost.
        holding, give_back = asyncio.Event(), asyncio.Event()
        waiter: asyncio.Task[int] | None = None

        async def hand_over_and_cancel() -> int:
            pid = await self.hold(holding, give_back)
            assert waiter is not None
            self.assertFalse(waiter.done())
            waiter.cancel()
            return pid

        with self.one_slot_pool(timeout=60):
            holder = asyncio.create_task(hand_over_and_cancel())
            await holding.wait()
            waiter = await self.waiting_request()
            give_back.set()
            pid = await holder
            with self.assertRaises(asyncio.CancelledError):
                await waiter
            self.assertTrue(await pool_is_whole(ALIAS))
            async with asyncio.timeout(30):  # far below the pool's 60 s
                self.assertEqual(await asyncio.create_task(pid_of(ALIAS)), pid)


class CancellationStormTests(PoolFaultTestCase):
    async def job(self, kind: int, name: str) -> str:
        if kind == 0:  # a read outside a transaction
            await execute(ALIAS, "SELECT count(*) FROM fault_rows WHERE tag = %s",
                          [self.tag])  # fmt: skip
            return ""
        async with async_atomic(using=ALIAS):
            await insert(ALIAS, self.tag, name)
            if kind == 2:  # a savepoint, and a server-side pause
                async with async_atomic(using=ALIAS):
                    await execute(ALIAS, "SELECT pg_sleep(0.002)")
                    await insert(ALIAS, self.tag, name + "-inner")
            await asyncio.sleep(0)
        return name

    async def test_storm_of_cancelled_tasks_leaves_the_pool_whole(self) -> None:
        rng = random.Random(SEED)
        pool_args = {"min_size": 2, "max_size": 10, "timeout": 60}
        with (
            fault_alias(ALIAS, self.app, pool=pool_args),
            # psycopg_pool warns when a connection comes back mid-transaction.
            self.assertNoLogs("psycopg.pool", "WARNING"),
        ):
            loop = asyncio.get_running_loop()
            tasks: list[asyncio.Task[Any]] = []
            for index in range(STORM):
                task = asyncio.create_task(self.job(index % 3, f"storm-{index}"))
                tasks.append(task)
                if rng.random() < CANCEL_SHARE:
                    loop.call_later(rng.uniform(0, CANCEL_WINDOW), task.cancel)
            results = await wait_all(tasks, GUARD)
            await settle_background()

            cancelled = sum(isinstance(r, asyncio.CancelledError) for r in results)
            failures = [r for r in results if isinstance(r, BaseException)
                        and not isinstance(r, asyncio.CancelledError)]  # fmt: skip
            self.assertEqual(failures, [])
            self.assertGreater(cancelled, 0)
            self.assertTrue(
                await pool_is_whole(ALIAS, lambda: support.count_sessions(self.app)),
                "a pool slot was not given back",
            )
            self.assertEqual(idle_in_transaction(self.app), 0)
            pool = await loop_state().pools[ALIAS]
            self.assertEqual(pool.get_stats().get("returns_bad", 0), 0)
        committed = self.committed()
        done = {r for r in results if isinstance(r, str) and r}
        self.assertLessEqual(done, committed, "a transaction that returned was lost")
        # A savepoint's row is committed exactly with its outer row.
        for name in committed:
            if name.endswith("-inner"):
                self.assertIn(name.removesuffix("-inner"), committed)


if __name__ == "__main__":
    unittest.main()
