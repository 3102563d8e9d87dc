"""Fault suite, scenario 7: a bounded soak with random cancellations.

Rounds of 300 concurrent tasks run a mix of reads (the books' total, in one
statement, must always be right), autocommitted writes, transfers (an outer
block locking two accounts, a savepoint per leg, sometimes a leg that fails
and rolls back alone, an audit row) and reads on independent connections,
over a pool (10 connections) and over persistent connections
(CONN_MAX_AGE=None, at most 8 tasks at once). A fifth of the tasks are
cancelled at a random moment. Rounds run until ``DAB_SOAK_SECONDS`` (30 by
default) have passed; the random choices come from a fixed seed.

After every round: no session idle in transaction, the pool whole, every
server session accounted for (the pool's, and the persistent connections
parked for reuse, within a bound: flat), and after warm-up the
process's memory (RSS) grows by less than a generous bound. At the end the
books balance, every account's balance is what replaying the committed
transfers gives (none committed in part), and every acknowledged write and
transfer is in the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import time
import unittest
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import support
from django_async_backend.db import async_connections
from django_async_backend.db.transaction import async_atomic
from django_async_backend.utils.loops import loop_state
from faults import (
    FaultRows,
    execute,
    fault_alias,
    insert,
    pool_is_whole,
    rss_bytes,
    wait_all,
)
from support import idle_in_transaction, outside, settle_background

logger = logging.getLogger(__name__)
SOAK_SECONDS = float(os.environ.get("DAB_SOAK_SECONDS", "30"))
SEED = 7_2026
TASKS_PER_ROUND = 300
ACCOUNTS = 16
START = 1000
POOLED, PERSISTENT = "soak_pooled", "soak_persistent"
POOL_MAX = 10
PERSISTENT_AT_ONCE = 8
CANCEL_SHARE = 0.2
CANCEL_WINDOW = 0.3  # seconds after a round starts
WARM_UP_ROUNDS = 2
# Growth of RSS allowed after warm-up: generous; a leak of a connection, a
# task or a result set per task would exceed it within a few rounds.
RSS_GROWTH = 64 * 1024 * 1024
GUARD = 120.0  # a round that takes longer hangs (not a measurement)
ACCOUNTS_SQL = (
    "CREATE TABLE IF NOT EXISTS fault_accounts (tag text NOT NULL, "
    "id int NOT NULL, balance int NOT NULL, PRIMARY KEY (tag, id))"
)


async def run(job: Callable[[], Awaitable[None]]) -> None:
    await job()


class LegFailed(Exception):
    pass


@dataclass
class Transfer:
    name: str
    source: int
    target: int
    amount: int
    failed_leg: bool


class SoakTests(FaultRows, unittest.IsolatedAsyncioTestCase):
    app_prefix = "dab-soak"

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        outside(ACCOUNTS_SQL)

    def setUp(self) -> None:
        super().setUp()
        outside(
            "INSERT INTO fault_accounts (tag, id, balance) "
            "SELECT %s, n, %s FROM generate_series(1, %s) AS n",
            (self.tag, START, ACCOUNTS),
        )
        self.rng = random.Random(SEED)
        self.transfers: list[Transfer] = []
        self.acknowledged: set[str] = set()
        self.wrong_totals: list[int] = []
        self.gate = asyncio.Semaphore(PERSISTENT_AT_ONCE)
        self.serial = 0
        self.cancelled = 0

    async def asyncTearDown(self) -> None:
        await settle_background()
        await async_connections.close_all()

    def tearDown(self) -> None:
        outside("DELETE FROM fault_accounts WHERE tag = %s", (self.tag,))
        super().tearDown()

    # ---- the jobs ----------------------------------------------------------

    async def read_total(self, alias: str) -> None:
        rows = await execute(
            alias, "SELECT sum(balance) FROM fault_accounts WHERE tag = %s", [self.tag]
        )
        if rows[0][0] != ACCOUNTS * START:
            self.wrong_totals.append(rows[0][0])

    async def write(self, alias: str, name: str) -> None:
        await insert(alias, self.tag, name)
        self.acknowledged.add(name)

    async def update(self, alias: str, delta: int, account: int) -> None:
        await execute(
            alias,
            "UPDATE fault_accounts SET balance = balance + %s "
            "WHERE tag = %s AND id = %s",
            [delta, self.tag, account],
        )

    async def transfer(self, alias: str, t: Transfer) -> None:
        async with async_atomic(using=alias):
            await execute(
                alias,
                "SELECT id FROM fault_accounts WHERE tag = %s AND id = ANY(%s) "
                "ORDER BY id FOR UPDATE",
                [self.tag, [t.source, t.target]],
            )
            if t.failed_leg:
                with contextlib.suppress(LegFailed):
                    async with async_atomic(using=alias):
                        await self.update(alias, -10_000, t.source)
                        raise LegFailed
            async with async_atomic(using=alias):
                await self.update(alias, -t.amount, t.source)
            await asyncio.sleep(0)
            async with async_atomic(using=alias):
                await self.update(alias, t.amount, t.target)
            await insert(alias, self.tag, t.name)
        self.acknowledged.add(t.name)

    async def independent_read(self, alias: str) -> None:
        async with async_connections.independent_connection():
            await self.read_total(alias)

    def job(self) -> Callable[[], Awaitable[None]]:
        """Draw the next job (no coroutine is made before its task runs)."""
        self.serial += 1
        name = f"job-{self.serial}"
        alias = PERSISTENT if self.rng.random() < 0.25 else POOLED
        kind = self.rng.choice(("read", "write", "transfer", "transfer", "independent"))
        body: Callable[[], Awaitable[None]]
        if kind == "read":
            body = functools.partial(self.read_total, alias)
        elif kind == "write":
            body = functools.partial(self.write, alias, name)
        elif kind == "independent":
            body = functools.partial(self.independent_read, alias)
        else:
            source, target = self.rng.sample(range(1, ACCOUNTS + 1), 2)
            t = Transfer(name, source, target, self.rng.randint(1, 50),
                         self.rng.random() < 0.1)  # fmt: skip
            self.transfers.append(t)
            body = functools.partial(self.transfer, alias, t)
        if alias == PERSISTENT:
            return functools.partial(self.gated, body)
        return body

    async def gated(self, body: Callable[[], Awaitable[None]]) -> None:
        async with self.gate:
            await body()

    # ---- the rounds --------------------------------------------------------

    async def round(self) -> None:
        loop = asyncio.get_running_loop()
        tasks = []
        for _ in range(TASKS_PER_ROUND):
            task = asyncio.create_task(run(self.job()))
            tasks.append(task)
            if self.rng.random() < CANCEL_SHARE:
                loop.call_later(self.rng.uniform(0, CANCEL_WINDOW), task.cancel)
        results = await wait_all(tasks, GUARD)
        failures = [r for r in results if isinstance(r, BaseException)
                    and not isinstance(r, asyncio.CancelledError)]  # fmt: skip
        self.assertEqual(failures, [])
        self.cancelled += sum(isinstance(r, asyncio.CancelledError) for r in results)
        await settle_background()

    async def check_round(self) -> int:
        self.assertEqual(idle_in_transaction(self.app), 0)
        self.assertTrue(await pool_is_whole(POOLED), "a pool slot is missing")
        pool = await loop_state().pools[POOLED]
        parked = len(loop_state().idle.get(PERSISTENT, []))
        sessions = support.count_sessions(self.app)
        # Every server session is accounted for: the pool's, and the
        # persistent connections parked for the next task; no other.
        self.assertEqual(sessions, pool.get_stats()["pool_size"] + parked)
        # A task parks its connection just after it leaves the gate, so a
        # few more than PERSISTENT_AT_ONCE may have been open at once.
        self.assertLessEqual(parked, 2 * PERSISTENT_AT_ONCE)
        return sessions

    def check_books(self) -> None:
        committed = {
            row[0]
            for row in outside(
                "SELECT name FROM fault_rows WHERE tag = %s", (self.tag,)
            )
        }
        self.assertLessEqual(self.acknowledged, committed, "acknowledged, then lost")
        expected = dict.fromkeys(range(1, ACCOUNTS + 1), START)
        for t in self.transfers:
            if t.name in committed:
                expected[t.source] -= t.amount
                expected[t.target] += t.amount
        balances = dict(
            outside(
                "SELECT id, balance FROM fault_accounts WHERE tag = %s", (self.tag,)
            )
        )
        self.assertEqual(balances, expected, "a transfer was committed in part")
        self.assertEqual(self.wrong_totals, [])

    async def test_soak(self) -> None:
        with (
            fault_alias(POOLED, self.app, pool={"min_size": 2, "max_size": POOL_MAX}),
            fault_alias(PERSISTENT, self.app, CONN_MAX_AGE=None),
            self.assertNoLogs("psycopg.pool", "WARNING"),
        ):
            deadline = time.monotonic() + SOAK_SECONDS
            rounds, baseline, sessions = 0, None, []
            while rounds < WARM_UP_ROUNDS + 1 or time.monotonic() < deadline:
                await self.round()
                sessions.append(await self.check_round())
                rounds += 1
                rss = rss_bytes()
                if rounds == WARM_UP_ROUNDS:
                    baseline = rss
                elif baseline is not None and rss is not None:
                    self.assertLess(rss - baseline, RSS_GROWTH, f"round {rounds}")
            self.check_books()
            self.assertGreater(len(self.acknowledged), 0)
            self.assertGreater(self.cancelled, 0)
            # For the curious, at INFO (pytest --log-cli-level=INFO shows it):
            # a passing run prints nothing of its own.
            growth = None if baseline is None else (rss_bytes() or 0) - baseline
            logger.info(
                "soak: %s rounds, %s tasks, %s cancelled, %s acknowledged writes "
                "and transfers, sessions per round %s..%s, RSS growth after "
                "warm-up %s bytes",
                rounds,
                self.serial,
                self.cancelled,
                len(self.acknowledged),
                min(sessions),
                max(sessions),
                growth,
            )


if __name__ == "__main__":
    unittest.main()
