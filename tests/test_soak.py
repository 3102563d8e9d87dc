"""Soak: many concurrent transfers in nested async_atomic blocks.

300 tasks move money between 20 accounts (1000 each). Each transfer is an
outer block that locks both accounts (``FOR UPDATE``, ordered by id, so no
deadlock), one savepoint per leg, and an audit row; some also try a leg that
fails inside its own savepoint and is rolled back. About 20% of the tasks are
cancelled at a random moment (waiting for a connection, mid-transaction, in
the COMMIT...), about 10% raise inside the block. The random choices come
from a fixed seed.

Afterwards the books must balance: the total is unchanged, and each
account's balance is exactly what replaying the committed transfers (those
whose audit row exists) gives, so no transfer was committed in part. No
session may be left idle in transaction, and every connection must be back:
in its pool (pooled run, by the pool's stats) or closed (plain run).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import unittest
from dataclasses import dataclass
from typing import Any

from django.db import OperationalError

import support
from aliases import temporary_alias
from django_async_backend.db.transaction import async_atomic
from django_async_backend.utils.loops import loop_state
from faults import execute, pool_is_whole
from scenarios import DatabaseTestCase, unique_name
from support import idle_in_transaction, outside, poll, settle_background

SEED = 20240611
ACCOUNTS = 20
START_BALANCE = 1000
TASKS = 300
CANCEL_SHARE = 0.20
FAIL_SHARE = 0.10
FAILED_LEG_SHARE = 0.10
# Cancellations land within this window after the start (all tasks are
# running or queued then), so they hit every stage of a transfer.
CANCEL_WINDOW = 1.0
DEADLOCK = "40P01"


class Boom(Exception):
    """Raised by a transfer on purpose, inside its outer block."""


class LegFailed(Exception):
    """Raised inside a savepoint that the transfer rolls back and survives."""


@dataclass
class Transfer:
    index: int
    source: int
    target: int
    amount: int
    fail: bool
    failed_leg: bool
    cancel_at: float | None

    @property
    def audit(self) -> str:
        return f"soak-{self.index}"


def plan(account_ids: list[int]) -> list[Transfer]:
    rng = random.Random(SEED)
    transfers = []
    for index in range(TASKS):
        source, target = rng.sample(account_ids, 2)
        transfers.append(
            Transfer(
                index=index,
                source=source,
                target=target,
                amount=rng.randint(1, 100),
                fail=rng.random() < FAIL_SHARE,
                failed_leg=rng.random() < FAILED_LEG_SHARE,
                cancel_at=(
                    rng.uniform(0, CANCEL_WINDOW)
                    if rng.random() < CANCEL_SHARE
                    else None
                ),
            )
        )
    return transfers


class SoakTests(DatabaseTestCase):
    tables = ("testapp_account", "testapp_item")

    def setUp(self) -> None:
        super().setUp()
        rows = outside(
            "INSERT INTO testapp_account (name, balance) "
            "SELECT 'soak-' || lpad(n::text, 2, '0'), %s "
            "FROM generate_series(1, %s) AS n RETURNING id",
            (START_BALANCE, ACCOUNTS),
        )
        self.account_ids = sorted(row[0] for row in rows)
        self.app = unique_name("dab-soak")

    # ---- the workload ------------------------------------------------------

    async def transfer(
        self, alias: str, gate: contextlib.AbstractAsyncContextManager[Any], t: Transfer
    ) -> str:
        async with gate:
            try:
                async with async_atomic(using=alias):
                    await execute(
                        alias,
                        "SELECT id, balance FROM testapp_account "
                        "WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
                        [[t.source, t.target]],
                    )
                    if t.failed_leg:
                        with contextlib.suppress(LegFailed):
                            async with async_atomic(using=alias):
                                await execute(
                                    alias,
                                    "UPDATE testapp_account SET balance = 0 "
                                    "WHERE id = %s",
                                    [t.source],
                                )
                                raise LegFailed
                    async with async_atomic(using=alias):
                        await execute(
                            alias,
                            "UPDATE testapp_account SET balance = balance - %s "
                            "WHERE id = %s",
                            [t.amount, t.source],
                        )
                    # Let other tasks (and cancellations) in mid-transfer.
                    await asyncio.sleep(0)
                    async with async_atomic(using=alias):
                        await execute(
                            alias,
                            "UPDATE testapp_account SET balance = balance + %s "
                            "WHERE id = %s",
                            [t.amount, t.target],
                        )
                    await execute(
                        alias,
                        "INSERT INTO testapp_item (name, created) VALUES (%s, now())",
                        [t.audit],
                    )
                    if t.fail:
                        raise Boom(t.index)
            except OperationalError as error:
                cause = error.__cause__
                if getattr(cause, "sqlstate", None) == DEADLOCK:
                    return "deadlock"
                raise
        return "done"

    async def run_soak(self, alias: str, concurrency: int | None) -> dict[str, int]:
        transfers = plan(self.account_ids)
        gate: Any = (
            asyncio.Semaphore(concurrency) if concurrency else contextlib.nullcontext()
        )
        loop = asyncio.get_running_loop()
        # A guard against a hang, not a measurement.
        async with asyncio.timeout(50):
            tasks = [
                asyncio.create_task(self.transfer(alias, gate, t)) for t in transfers
            ]
            for t, task in zip(transfers, tasks, strict=True):
                if t.cancel_at is not None:
                    loop.call_later(t.cancel_at, task.cancel)
            results = await asyncio.gather(*tasks, return_exceptions=True)
        await settle_background()
        return self.check_books(transfers, results)

    # ---- the checks --------------------------------------------------------

    def check_books(
        self, transfers: list[Transfer], results: list[Any]
    ) -> dict[str, int]:
        committed = {row[0] for row in outside("SELECT name FROM testapp_item")}
        balances = dict(outside("SELECT id, balance FROM testapp_account"))
        expected = dict.fromkeys(self.account_ids, START_BALANCE)
        outcomes = {"done": 0, "boom": 0, "cancelled": 0, "deadlock": 0}
        for t, result in zip(transfers, results, strict=True):
            if t.audit in committed:
                expected[t.source] -= t.amount
                expected[t.target] += t.amount
            if result == "done":
                outcomes["done"] += 1
                self.assertIn(t.audit, committed, f"transfer {t.index} lost")
            elif result == "deadlock":
                outcomes["deadlock"] += 1
                self.assertNotIn(t.audit, committed)
            elif isinstance(result, Boom):
                outcomes["boom"] += 1
                self.assertTrue(t.fail)
                self.assertNotIn(t.audit, committed, f"failed transfer {t.index}")
            elif isinstance(result, asyncio.CancelledError):
                # A cancellation that lands after the COMMIT leaves the
                # transfer committed: the replay below covers both cases.
                outcomes["cancelled"] += 1
                self.assertIsNotNone(t.cancel_at)
            else:
                self.fail(f"transfer {t.index} raised {result!r}")
        self.assertEqual(sum(balances.values()), ACCOUNTS * START_BALANCE)
        self.assertEqual(balances, expected, "a transfer was committed in part")
        # The run exercised every path.
        self.assertGreater(outcomes["done"], 0)
        self.assertGreater(outcomes["boom"], 0)
        self.assertGreater(outcomes["cancelled"], 0)
        self.assertEqual(
            len(committed),
            outcomes["done"]
            + sum(
                1
                for t, r in zip(transfers, results, strict=True)
                if isinstance(r, asyncio.CancelledError) and t.audit in committed
            ),
        )
        return outcomes

    async def assert_no_idle_in_transaction(self) -> None:
        self.assertTrue(
            await poll(lambda: idle_in_transaction(self.app) == 0),
            "a session was left idle in transaction",
        )

    # ---- the runs ----------------------------------------------------------

    async def test_soak_pooled(self) -> None:
        alias = "soak_pooled"
        options = {
            "application_name": self.app,
            "pool": {"min_size": 2, "max_size": 10, "timeout": 30},
        }
        with (
            temporary_alias(alias, OPTIONS=options),
            # psycopg_pool warns when a connection comes back mid-transaction
            # and it must clean up itself: the backend must settle it first.
            self.assertNoLogs("psycopg.pool", "WARNING"),
        ):
            await self.run_soak(alias, concurrency=None)
            await self.assert_no_idle_in_transaction()
            pool = await loop_state().pools[alias]
            self.assertTrue(
                await pool_is_whole(alias, lambda: support.count_sessions(self.app)),
                f"connections missing: {pool.get_stats()}",
            )
            stats = pool.get_stats()
            self.assertLessEqual(stats["pool_size"], 10)
            self.assertEqual(stats.get("returns_bad", 0), 0)

    async def test_soak_without_pool(self) -> None:
        alias = "soak_plain"
        with temporary_alias(alias, OPTIONS={"application_name": self.app}):
            # Stay well under max_connections: at most 10 transfers at once.
            await self.run_soak(alias, concurrency=10)
            await self.assert_no_idle_in_transaction()
            # Every task closed its connection.
            self.assertTrue(
                await poll(lambda: support.count_sessions(self.app) == 0),
                f"{support.count_sessions(self.app)} sessions left open",
            )


if __name__ == "__main__":
    unittest.main()
