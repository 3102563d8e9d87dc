"""A cancellation at every await point of a transactional scenario, in turn.

The discipline of trio's authors: code is cancellation-safe only if it is
safe at each of its checkpoints. The scenario (two transactions: nested
blocks, a savepoint rolled back, on_commit callbacks sync and async, native
ORM writes that run Django's own ``atomic``, a callback registered from
inside the bridge) runs once to count the times its task suspends (its
await points, n), then once per k in 1..n with the task cancelled at its
k-th suspension (``task.cancel()``, and again with ``asyncio.timeout``
firing there). After each run:

* nothing of a rolled-back block is in the database, and a transaction is
  in the database whole or not at all;
* each callback was called at most once, only if its transaction is in the
  database, and for every such transaction (no COMMIT's outcome is unknown
  here: the server answers); a cancellation landing inside a callback
  interrupts that callback only;
* no session is left idle in transaction, every pool slot is free, and the
  next transaction works.

It runs on a plain alias and on a pooled one.
"""

from __future__ import annotations

import asyncio
import unittest
from collections.abc import Callable, Coroutine, Generator
from typing import Any

from django.db import transaction

from django_async_backend.db import async_connections
from django_async_backend.db.transaction import async_atomic
from django_async_backend.utils.bridge import run_native
from django_async_backend.utils.loops import loop_state
from scenarios import POOLED, AliasTestCase, clean_tables
from support import idle_in_transaction, outside, poll, settle_background
from testapp.models import Author

# Rows (testapp_account names, testapp_author names) of each transaction.
T1_ROWS = {"t1-outer", "t1-inner"}
T1_AUTHORS = {"t1-orm", "t1-orm-get"}
T1_CALLBACKS = ["t1-outer", "t1-inner", "t1-bridge"]
T2_ROWS = {"t2"}
T2_CALLBACKS = ["t2"]


class Boom(Exception):
    pass


class Interrupt:
    """Await a coroutine in the current task; at its k-th suspension, fire.

    ``fire`` runs just before the task suspends for the k-th time, so that
    the cancellation it requests lands at exactly that await point.
    """

    def __init__(
        self, coro: Coroutine[Any, Any, Any], at: int, fire: Callable[[], Any]
    ):
        self.coro, self.at, self.fire = coro, at, fire
        self.count = 0

    def __await__(self) -> Generator[Any, Any, Any]:
        it = self.coro.__await__()
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                yielded = it.send(value) if error is None else it.throw(error)
            except StopIteration as stop:
                return stop.value
            self.count += 1
            if self.count == self.at:
                self.fire()
            try:
                value, error = (yield yielded), None
            except BaseException as exc:
                value, error = None, exc


class CancelPointScenarios(AliasTestCase):
    """The scenarios, run plain and pooled by the two classes at the end."""

    tables = ("testapp_account", "testapp_author")
    app_prefix = "dab-points"

    # ---- the scenario -------------------------------------------------------

    async def add(self, name: str) -> None:
        async with async_connections[self.alias].cursor() as cursor:
            await cursor.execute(
                "INSERT INTO testapp_account (name, balance) VALUES (%s, 0)", [name]
            )

    async def scenario(self, ran: list[str]) -> None:
        alias = self.alias
        connection = async_connections[alias]

        async def inner_callback() -> None:
            ran.append("t1-inner")
            await asyncio.sleep(0)  # an await point inside a callback

        def register_from_the_bridge() -> None:
            transaction.on_commit(lambda: ran.append("t1-bridge"), using=alias)

        async with async_atomic(using=alias):
            await self.add("t1-outer")
            await connection.on_commit(lambda: ran.append("t1-outer"))
            async with async_atomic(using=alias):
                await self.add("t1-inner")
                await connection.on_commit(inner_callback)
            try:
                async with async_atomic(using=alias):
                    await self.add("t1-rolled")
                    await connection.on_commit(lambda: ran.append("t1-rolled"))
                    raise Boom
            except Boom:
                pass
            await Author.objects.using(alias).acreate(name="t1-orm")
            # get_or_create runs Django's own atomic block (a savepoint).
            await Author.objects.using(alias).aget_or_create(name="t1-orm-get")
            await run_native(register_from_the_bridge)
        async with async_atomic(using=alias):
            await self.add("t2")
            await connection.on_commit(lambda: ran.append("t2"))

    # ---- the invariants ---------------------------------------------------------

    def assert_invariants(self, ran: list[str], k: int) -> None:
        rows = {r[0] for r in outside("SELECT name FROM testapp_account")}
        authors = {r[0] for r in outside("SELECT name FROM testapp_author")}
        where = f"(cancelled at await point {k})"
        self.assertNotIn("t1-rolled", rows, where)
        self.assertNotIn("t1-rolled", ran, where)
        t1 = rows >= T1_ROWS
        self.assertEqual(t1, bool(rows & T1_ROWS), f"T1 half committed {where}")
        self.assertEqual(authors == T1_AUTHORS, t1, f"T1's ORM rows {where}")
        if not t1:
            self.assertEqual(authors, set(), where)
        t2 = rows >= T2_ROWS
        expected = (T1_CALLBACKS if t1 else []) + (T2_CALLBACKS if t2 else [])
        self.assertEqual(sorted(ran), sorted(expected), f"callbacks {where}")
        if t1 and t2:
            self.assertLess(ran.index("t1-outer"), ran.index("t2"), where)

    async def assert_clean(self, k: int) -> None:
        await settle_background()
        where = f"(cancelled at await point {k})"
        self.assertTrue(
            await poll(lambda: idle_in_transaction(self.app) == 0),
            f"a session is idle in transaction {where}",
        )
        await self.assert_pool_is_whole(where)

    async def assert_pool_is_whole(self, where: str) -> None:
        """On a pooled alias: every connection is back in the pool."""
        if not self.pooled:
            return
        pool = await loop_state().pools[self.alias]

        def whole() -> bool:
            stats = pool.get_stats()
            return bool(
                stats["pool_available"] == stats["pool_size"]
                and stats.get("requests_waiting", 0) == 0
            )

        self.assertTrue(await poll(whole), f"pool {pool.get_stats()} {where}")

    async def assert_next_transaction_works(self) -> None:
        async def commit_one() -> None:
            async with async_atomic(using=self.alias):
                await self.add("next")

        await asyncio.create_task(commit_one())
        self.assertIn(("next",), outside("SELECT name FROM testapp_account"))

    # ---- running it ---------------------------------------------------------------

    async def run_interrupted(self, at: int, by_timeout: bool) -> tuple[list[str], int]:
        """Run the scenario in a task interrupted at suspension ``at``."""
        ran: list[str] = []
        outcome: list[BaseException | None] = []

        async def body() -> None:
            task = asyncio.current_task()
            assert task is not None
            try:
                if by_timeout:
                    async with asyncio.timeout(None) as scope:
                        fire = lambda: scope.reschedule(  # noqa: E731
                            asyncio.get_running_loop().time()
                        )
                        driver = Interrupt(self.scenario(ran), at, fire)
                        await driver
                else:
                    driver = Interrupt(self.scenario(ran), at, task.cancel)
                    await driver
            except (asyncio.CancelledError, TimeoutError) as exc:
                outcome.append(exc)
                counts.append(driver.count)
                raise
            outcome.append(None)
            counts.append(driver.count)

        counts: list[int] = []
        task = asyncio.create_task(body())
        await asyncio.gather(task, return_exceptions=True)
        return ran, counts[0]

    async def check_every_point(self, by_timeout: bool) -> None:
        ran, n = await self.run_interrupted(0, by_timeout)  # counting run
        self.assertGreater(n, 10)
        self.assert_invariants(ran, 0)
        self.assertEqual(ran, [*T1_CALLBACKS, *T2_CALLBACKS])
        for k in range(1, n + 1):
            clean_tables(*self.tables)
            ran, _ = await self.run_interrupted(k, by_timeout)
            await self.assert_clean(k)
            self.assert_invariants(ran, k)
        clean_tables(*self.tables)
        await self.assert_next_transaction_works()

    async def test_cancelled_at_every_await_point(self) -> None:
        await self.check_every_point(by_timeout=False)

    async def test_timeout_at_every_await_point(self) -> None:
        await self.check_every_point(by_timeout=True)


class PlainCancelPointTests(CancelPointScenarios):
    alias = "points_plain"


class PooledCancelPointTests(CancelPointScenarios):
    alias = "points_pooled"
    alias_options = POOLED


del CancelPointScenarios

if __name__ == "__main__":
    unittest.main()
