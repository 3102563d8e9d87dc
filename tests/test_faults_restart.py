"""Fault suite, scenario 3: the server restarted under load.

A throwaway cluster (tests/cluster.py, its own port) serves a workload of
concurrent tasks, each running small transactions (a write and a read) in a
loop. The server is stopped with ``pg_ctl`` while they run, then started
again. While it is down the tasks get Django's errors (never a hang); after
it is back every task recovers on its own; afterwards every acknowledged
commit is in the database (nothing lost), nothing was committed that was not
attempted, no task is left behind and no session either. It runs on plain
connections, on persistent ones (CONN_MAX_AGE, with health checks) and on a
pool (stopped with ``immediate``: a crash).
"""

from __future__ import annotations

import asyncio
import unittest
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from django.db import Error, OperationalError

import support
from cluster import Cluster, find_bindir
from django_async_backend.db import async_connections
from django_async_backend.db.transaction import async_atomic
from django_async_backend.utils.loops import loop_state
from faults import TABLE_SQL, execute, fault_alias, insert, unique_name, wait_all
from support import expected_logs, poll, settle_background

WORKERS = 16
ALIAS = "restarted"
# Guards against a hang, never measurements.
PHASE_POLLS = 1500  # x 0.02 s
GUARD = 60.0


@dataclass
class Worker:
    index: int
    attempted: set[str] = field(default_factory=set)
    acknowledged: set[str] = field(default_factory=set)
    errors: Counter[str] = field(default_factory=Counter)
    # Bumped on every success / every error.
    successes: int = 0
    failures: int = 0


class RestartUnderLoadTests(unittest.IsolatedAsyncioTestCase):
    cluster: Cluster

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        bindir = find_bindir()
        if bindir is None:  # only where there are no PostgreSQL binaries at all
            raise unittest.SkipTest("no PostgreSQL binaries (initdb, pg_ctl)")
        cls.cluster = Cluster(bindir)
        cls.addClassCleanup(cls.cluster.destroy)
        cls.cluster.start()
        cls.cluster.execute(TABLE_SQL)

    def setUp(self) -> None:
        self.app = unique_name("dab-restart")
        self.tag = unique_name("tag")
        self.stopping = asyncio.Event()

    async def asyncTearDown(self) -> None:
        if not self.cluster.running:
            await self.cluster.astart()
        await async_connections.close_all()

    def sessions(self) -> int:
        rows = self.cluster.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            (self.app,),
        )
        return int(rows[0][0])

    def idle_in_transaction(self) -> int:
        rows = self.cluster.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
            "AND state LIKE 'idle in transaction%%'",
            (self.app,),
        )
        return int(rows[0][0])

    # ---- the workload ------------------------------------------------------

    async def transaction(self, name: str) -> None:
        async with async_atomic(using=ALIAS):
            await insert(ALIAS, self.tag, name)
            await execute(
                ALIAS, "SELECT count(*) FROM fault_rows WHERE tag = %s", [self.tag]
            )

    async def work(self, worker: Worker) -> None:
        n = 0
        while not self.stopping.is_set():
            n += 1
            name = f"{worker.index}-{n}"
            worker.attempted.add(name)
            try:
                # One task per transaction, as an ASGI server runs a request:
                # the task's connection is released when it ends.
                await asyncio.create_task(self.transaction(name))
            except Error as error:
                worker.errors[type(error).__name__] += 1
                worker.failures += 1
                # A client would back off before retrying.
                await asyncio.sleep(0.05)
            else:
                worker.acknowledged.add(name)
                worker.successes += 1
            await asyncio.sleep(0.005)

    async def everyone(self, check: Any) -> bool:
        return await poll(lambda: all(check(w) for w in self.workers), PHASE_POLLS)

    async def run_restart(self, mode: str) -> None:
        self.workers = [Worker(i) for i in range(WORKERS)]
        tasks = [asyncio.create_task(self.work(w)) for w in self.workers]
        try:
            self.assertTrue(await self.everyone(lambda w: w.successes > 0))
            await self.cluster.astop(mode)
            failures = {w.index: w.failures for w in self.workers}
            # While the server is down every task gets errors, and no hang.
            self.assertTrue(
                await self.everyone(lambda w: w.failures >= failures[w.index] + 2),
                "a task hung while the server was down",
            )
            await self.cluster.astart()
            successes = {w.index: w.successes for w in self.workers}
            self.assertTrue(
                await self.everyone(lambda w: w.successes >= successes[w.index] + 3),
                "a task did not recover after the restart",
            )
        finally:
            self.stopping.set()
            results = await wait_all(tasks, GUARD)
        self.assertEqual([r for r in results if r is not None], [])
        self.check_outcome()
        await self.check_nothing_left()

    # ---- the checks --------------------------------------------------------

    def check_outcome(self) -> None:
        rows = self.cluster.execute(
            "SELECT name FROM fault_rows WHERE tag = %s", (self.tag,)
        )
        committed = [row[0] for row in rows]
        self.assertEqual(len(committed), len(set(committed)))
        acknowledged = set().union(*(w.acknowledged for w in self.workers))
        attempted = set().union(*(w.attempted for w in self.workers))
        self.assertLessEqual(acknowledged, set(committed), "acknowledged, then lost")
        self.assertLessEqual(set(committed), attempted)
        errors = sum((w.errors for w in self.workers), Counter[str]())
        # Django's errors only; the server being gone is an OperationalError.
        self.assertGreater(errors["OperationalError"], 0)
        self.assertLessEqual(
            set(errors), {"OperationalError", "InterfaceError"}, dict(errors)
        )

    async def check_nothing_left(self) -> None:
        self.assertTrue(await poll(lambda: self.idle_in_transaction() == 0))
        await settle_background()
        await support.close_everything()
        self.assertTrue(
            await poll(lambda: self.sessions() == 0),
            f"{self.sessions()} sessions left",
        )
        self.assertEqual([t for t in loop_state().tasks if not t.done()], [])
        current = asyncio.current_task()
        leftovers = [t for t in asyncio.all_tasks() if t is not current]
        self.assertEqual(leftovers, [], "tasks left running")

    # ---- the runs ----------------------------------------------------------

    async def test_fast_restart_plain(self) -> None:
        with fault_alias(ALIAS, self.app, **self.cluster.database()):
            await self.run_restart("fast")

    async def test_fast_restart_persistent_with_health_checks(self) -> None:
        with fault_alias(
            ALIAS,
            self.app,
            CONN_MAX_AGE=None,
            CONN_HEALTH_CHECKS=True,
            **self.cluster.database(),
        ):
            await self.run_restart("fast")

    async def test_crash_restart_pooled(self) -> None:
        pool = {"min_size": 4, "max_size": 8, "timeout": 1.0}
        with (
            fault_alias(ALIAS, self.app, pool=pool, **self.cluster.database()),
            expected_logs(
                "psycopg.pool", "discarding closed connection", "error connecting in"
            ) as warnings,
        ):
            await self.run_restart("immediate")
        # The pool throws the crashed sessions away and, while the server is
        # down, fails to reach it: only this cluster, never the main server.
        refused = [text for text in warnings if text.startswith("error connecting")]
        port = f"port {self.cluster.port} failed"
        self.assertEqual([text for text in refused if port not in text], [])


class ClusterDownTests(unittest.IsolatedAsyncioTestCase):
    """Connecting to a server that is not running fails at once, clearly."""

    async def test_connection_refused_is_an_operational_error(self) -> None:
        bindir = find_bindir()
        if bindir is None:
            self.skipTest("no PostgreSQL binaries (initdb, pg_ctl)")
        cluster = Cluster(bindir)
        self.addCleanup(cluster.destroy)
        app = unique_name("dab-down")
        with fault_alias(ALIAS, app, **cluster.database()):
            with self.assertRaises(OperationalError) as ctx:
                await execute(ALIAS, "SELECT 1")
            self.assertIn(str(cluster.port), str(ctx.exception))
            await cluster.astart()
            self.assertEqual(await execute(ALIAS, "SELECT 1"), [(1,)])
            await async_connections.close_all()


if __name__ == "__main__":
    unittest.main()
