"""A connection's life is invisible to other tasks and never blocks an exit.

* ``async_connections.close_all()`` in one task (a request handler tidying
  up) releases that task's connections and the parked ones; it never closes a
  pool under another task. ``close_pool()`` retires a pool: the next use
  opens a new one, and a task waiting on the old one gets a connection.
* A script that runs ``asyncio.run()`` with a pooled alias, and relies on the
  clean-up at loop shutdown, always exits, promptly and quietly, whatever the
  pool was doing.
* A task holds a pooled connection only while it uses it: idle long-lived
  tasks (websocket consumers, SSE streams, worker loops) do not starve the
  pool. ``hold()`` keeps one session for a block.

Each runs on a plain alias, on ``OPTIONS["pool"] = True`` and on a pool with
``min_size`` 1, where the difference matters.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import unittest
from pathlib import Path
from typing import Any

import support
from aliases import backend_pid, temporary_alias
from django_async_backend.db import async_connections
from django_async_backend.db.transaction import async_atomic
from django_async_backend.utils.loops import loop_state
from scenarios import AliasTestCase
from support import poll, settle_background

ROOT = Path(__file__).resolve().parent.parent


class LifecycleScenarios(AliasTestCase):
    alias = "life"
    tables = ("testapp_account",)
    app_prefix = "dab-life"

    async def query(self, alias: str | None = None) -> int:
        return await backend_pid(async_connections[alias or self.alias])

    # ---- close_all() is the calling task's own tidy-up ----------------------

    async def test_close_all_in_one_task_never_breaks_another(self) -> None:
        async def handler(index: int) -> None:
            for _ in range(3):
                await self.query()
                await asyncio.sleep(0)
            await async_connections.close_all()

        results = await asyncio.gather(
            *(handler(i) for i in range(8)), return_exceptions=True
        )
        self.assertEqual([r for r in results if r is not None], [])
        # And the alias goes on working for everyone.
        await asyncio.gather(*(self.query() for _ in range(4)))

    async def test_close_all_releases_the_callers_connections(self) -> None:
        await self.query()
        await async_connections.close_all()
        self.assertIsNone(async_connections[self.alias].connection)
        await settle_background()
        self.assertTrue(
            await poll(lambda: support.count_sessions(self.app) <= self.kept())
        )

    def kept(self) -> int:
        """Sessions a pool keeps open with nobody using them."""
        return 0

    # ---- a script's event loop always ends ----------------------------------

    def test_asyncio_run_exits_without_an_explicit_close(self) -> None:
        for attempt in range(4):
            with self.subTest(attempt=attempt):
                result = run_script(self.alias_options)
                self.assertEqual(result.returncode, 0, result.stderr)
                self.assertEqual(result.stdout.strip(), "done")
                self.assertEqual(result.stderr.strip(), "")


class PooledScenarios(LifecycleScenarios):
    """What only a pool has: close_pool(), and giving connections back early."""

    def kept(self) -> int:
        pool = self.alias_options["pool"]
        return 4 if pool is True else int(pool.get("min_size", 4))

    async def pool(self) -> Any:
        return await loop_state().pools[self.alias]

    async def test_close_pool_retires_the_pool_for_the_next_use(self) -> None:
        await self.query()
        old = await self.pool()
        await async_connections[self.alias].close_pool()
        self.assertTrue(old.closed)
        await self.query()  # a new pool
        self.assertIsNot(await self.pool(), old)
        self.assertFalse((await self.pool()).closed)

    async def test_close_pool_does_not_fail_a_task_waiting_on_it(self) -> None:
        holding, release = asyncio.Event(), asyncio.Event()

        alias = f"{self.alias}_one"

        async def holder() -> None:
            async with async_atomic(using=alias):
                await self.query(alias)
                holding.set()
                await release.wait()

        async def waiter() -> int:
            await holding.wait()
            return await self.query(alias)  # waits: the pool's one slot is taken

        with self.one_slot():
            held = asyncio.create_task(holder())
            waiting = asyncio.create_task(waiter())
            await holding.wait()
            self.assertTrue(await poll(lambda: self.waiting_clients(alias) == 1))
            await async_connections[alias].close_pool()
            release.set()
            await held
            self.assertIsInstance(await waiting, int)

    def one_slot(self, **timeout: float) -> Any:
        """The alias ``<alias>_one`` on a pool of one connection
        (``timeout=``: how long a checkout waits; psycopg_pool's default)."""
        options = {"min_size": 1, "max_size": 1, **timeout}
        return temporary_alias(
            f"{self.alias}_one", OPTIONS={"application_name": self.app, "pool": options}
        )

    def waiting_clients(self, alias: str) -> int:
        openings = loop_state().pools
        opening = openings.get(alias)
        if opening is None or not opening.done():
            return 0
        return int(opening.result().get_stats().get("requests_waiting", 0))

    async def test_idle_long_lived_tasks_do_not_starve_the_pool(self) -> None:
        # 50 tasks that each ran one query and now wait for something else
        # (a websocket message), on a pool of 4 that makes a request wait
        # at most 1 s: an unrelated request still gets a connection.
        options = {"min_size": 1, "max_size": 4, "timeout": 1}
        alias = f"{self.alias}_four"
        with temporary_alias(
            alias, OPTIONS={"application_name": self.app, "pool": options}
        ):
            message = asyncio.Event()
            ready = 0

            async def consumer() -> None:
                nonlocal ready
                await self.query(alias)
                ready += 1
                await message.wait()  # idle, holding nothing
                await self.query(alias)

            consumers = [asyncio.create_task(consumer()) for _ in range(50)]
            self.assertTrue(await poll(lambda: ready == 50))
            self.assertIsInstance(await asyncio.create_task(self.query(alias)), int)
            message.set()
            await asyncio.gather(*consumers)

    async def test_a_connection_is_kept_while_a_transaction_is_open(self) -> None:
        async with async_atomic(using=self.alias):
            first = await self.query()
            await asyncio.sleep(0.01)
            self.assertEqual(await self.query(), first)

    async def test_hold_keeps_one_session_for_the_block(self) -> None:
        connection = async_connections[self.alias]
        async with connection.hold():
            async with connection.cursor() as cursor:
                await cursor.execute("SET application_name = 'dab-held'")
            first = await self.query()
            await asyncio.sleep(0.01)  # idle, but held
            async with connection.cursor() as cursor:
                await cursor.execute("SHOW application_name")
                self.assertEqual(await cursor.fetchone(), ("dab-held",))
            self.assertEqual(await self.query(), first)
            async with connection.cursor() as cursor:
                await cursor.execute("RESET application_name")

    async def test_an_unused_connection_goes_to_a_task_that_needs_one(self) -> None:
        alias = f"{self.alias}_one"
        with self.one_slot(timeout=1):
            idle, done = asyncio.Event(), asyncio.Event()

            async def owner() -> int:
                await self.query(alias)  # then not using it any more
                idle.set()
                await done.wait()
                return await self.query(alias)  # checks one out again

            task = asyncio.create_task(owner())
            await idle.wait()
            # Another task needs the pool's only connection: it gets it.
            self.assertIsInstance(await asyncio.create_task(self.query(alias)), int)
            done.set()
            self.assertIsInstance(await task, int)

    async def busy_owner_and_waiter(self, between: Any) -> list[str]:
        """The owner runs a query, and ``between()`` after it, while another
        task waits for the pool's only connection; then two more queries.

        Return the order in which the queries ran.
        """
        alias = f"{self.alias}_one"
        order: list[str] = []
        started = asyncio.Event()

        async def owner() -> None:
            connection = async_connections[alias]
            async with connection.cursor() as cursor:
                await cursor.execute("SELECT 1")
                started.set()
                # In use (a cursor open) until the other task waits.
                await poll(lambda: self.waiting_clients(alias) == 1)
            order.append("owner")
            await between()
            for _ in range(2):
                await self.query(alias)
                order.append("owner")

        async def other() -> None:
            await started.wait()
            await self.query(alias)
            order.append("other")

        await asyncio.gather(owner(), other())
        return order

    async def test_back_to_back_queries_keep_the_connection_while_another_waits(
        self,
    ) -> None:
        # A task running queries one after another (a view running ORM
        # queries) does not give its connection back between them, even
        # while another task waits: it is using it. It goes back when the
        # task ends.
        async def nothing() -> None:
            pass

        with self.one_slot(timeout=5):
            order = await self.busy_owner_and_waiter(nothing)
        self.assertEqual(order, ["owner", "owner", "owner", "other"])

    async def test_a_task_waiting_for_something_else_gives_the_connection_back(
        self,
    ) -> None:
        # The same task, awaiting something other than the database between
        # two queries while another task waits: the connection goes to the
        # other task for that time.
        async def wait_elsewhere() -> None:
            await asyncio.sleep(0)

        with self.one_slot(timeout=5):
            order = await self.busy_owner_and_waiter(wait_elsewhere)
        self.assertEqual(order, ["owner", "other", "owner", "owner"])

    async def test_a_connection_stays_with_its_task_while_nobody_waits(
        self,
    ) -> None:
        # No new checkout per query when the pool is not short.
        first = await self.query()
        await asyncio.sleep(0.01)
        self.assertEqual(await self.query(), first)


class PlainLifecycleTests(LifecycleScenarios):
    alias = "life_plain"

    async def test_a_plain_connection_stays_with_its_task(self) -> None:
        first = await self.query()
        await asyncio.sleep(0.01)
        self.assertEqual(await self.query(), first)


class PoolTrueLifecycleTests(PooledScenarios):
    alias = "life_pool"
    alias_options: dict[str, Any] = {"pool": True}


class MinSizeOneLifecycleTests(PooledScenarios):
    alias = "life_min1"
    alias_options: dict[str, Any] = {"pool": {"min_size": 1}}


SCRIPT = """
import asyncio, sys
sys.path[:0] = {paths!r}
import settings
settings.DATABASES["pooled"] = {{
    **settings.DATABASES["default"],
    "OPTIONS": {{**settings.DATABASES["default"]["OPTIONS"], **{options!r}}},
}}
import django
django.setup()
from django_async_backend.db import async_connections
from django_async_backend.db.transaction import async_atomic


async def job():
    async with async_atomic(using="pooled"):
        async with async_connections["pooled"].cursor() as cursor:
            await cursor.execute("SELECT 1")


for _ in range(3):
    asyncio.run(job())  # no close_all(): the loop's shutdown closes everything
print("done")
"""


def run_script(options: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """Run a management-command-like script in a child process (bounded)."""
    script = textwrap.dedent(
        SCRIPT.format(paths=[str(ROOT / "tests"), str(ROOT)], options=options)
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "settings"}
    env.pop("PYTHONDEVMODE", None)
    try:
        return subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(
            f"the script did not exit within 60 s (hung at loop shutdown): "
            f"{exc.stderr!r}"
        ) from None


del LifecycleScenarios, PooledScenarios

if __name__ == "__main__":
    unittest.main()
