"""Cancellation and lost connections inside async_atomic.

A task cancelled in an atomic block (while it awaits a query, an
``asyncio.sleep``, inside nested savepoints, or by ``asyncio.timeout``) must
commit nothing, leave no session idle in transaction and no statement
running on the server, give its connection back (closed, or returned to its
pool), and leave the next transaction working. The same scenarios run on a
plain alias and on a pooled one; on the pooled one the pool's stats must show
every connection back, and psycopg_pool must never have had to clean up after
the backend (it logs a warning when a connection comes back mid-transaction).

A session killed on the server mid-transaction must surface as
``django.db.OperationalError`` out of the block, commit nothing, and leave the
next ``async_atomic`` on the same task working.

Nothing here measures time: waits are bounded polls on server state.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
import unittest
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any
from unittest import mock

import psycopg
from django.db import Error, InternalError, OperationalError

import support
from aliases import backend_pid, temporary_alias
from django_async_backend.db import async_connections
from django_async_backend.db.transaction import async_atomic
from django_async_backend.utils.loops import loop_state
from faults import pool_is_whole
from scenarios import POOLED, AliasTestCase, committed_names, conn, execute
from support import (
    expected_logs,
    idle_in_transaction,
    outside,
    poll,
    session_state,
    settle_background,
    terminate,
)

SLEEP = "SELECT pg_sleep(5)"
# What psycopg logs, on purpose, in some scenarios: a pool discarding a dead
# connection given back, psycopg closing one whose query cancellation was
# itself interrupted.
DISCARDED = "discarding closed connection"
INTERRUPTED = "query cancellation interrupted"


def expects_logs(
    *kinds: str,
) -> Callable[[Callable[[Any], Awaitable[None]]], Callable[[Any], Awaitable[None]]]:
    """Capture psycopg's warnings of ``kinds`` during the test (others fail it)."""

    def decorate(
        test: Callable[[Any], Awaitable[None]],
    ) -> Callable[[Any], Awaitable[None]]:
        @functools.wraps(test)
        async def run(self: Any) -> None:
            with expected_logs("psycopg", *kinds):
                await test(self)

        return run

    return decorate


def running_query(pid: int) -> str | None:
    """The statement ``pid`` is executing right now (None: it isn't)."""
    rows = outside(
        "SELECT query FROM pg_stat_activity WHERE pid = %s AND state = 'active'",
        (pid,),
    )
    return rows[0][0] if rows else None


def last_query(pid: int) -> tuple[str, str] | None:
    """(state, last statement) of a backend, as pg_stat_activity shows them."""
    rows = outside("SELECT state, query FROM pg_stat_activity WHERE pid = %s", (pid,))
    return (rows[0][0], rows[0][1]) if rows else None


class Boom(Exception):
    pass


class HoldingProxy:
    """A TCP proxy to the test server that can hold back the server's replies.

    With the replies held, a client's connection attempt is parked half-way:
    the server has started the session (it shows in pg_stat_activity) but
    the client hasn't seen the answer yet.
    """

    def __init__(self) -> None:
        from django.db import connections

        settings_dict = connections.settings["default"]
        self.host = settings_dict["HOST"] or "127.0.0.1"
        self.port_upstream = int(settings_dict["PORT"] or 5432)
        self.replies = asyncio.Event()
        self.replies.set()
        self.pipes: set[asyncio.Task[None]] = set()
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def handle(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        if self.host.startswith("/"):
            path = f"{self.host}/.s.PGSQL.{self.port_upstream}"
            upstream = await asyncio.open_unix_connection(path)
        else:
            upstream = await asyncio.open_connection(self.host, self.port_upstream)
        server_reader, server_writer = upstream
        self.writers += [client_writer, server_writer]
        for pipe in (
            self.pipe(client_reader, server_writer, None),
            self.pipe(server_reader, client_writer, self.replies),
        ):
            task = asyncio.create_task(pipe)
            self.pipes.add(task)
            task.add_done_callback(self.pipes.discard)

    async def pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        gate: asyncio.Event | None,
    ) -> None:
        try:
            while data := await reader.read(65536):
                if gate is not None:
                    await gate.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        self.server.close()
        for task in list(self.pipes):
            task.cancel()
        for writer in self.writers:
            writer.close()
        await asyncio.gather(*self.pipes, return_exceptions=True)


class CancellationScenarios(AliasTestCase):
    """The scenarios, run plain and pooled by the two classes at the end."""

    tables = ("testapp_account",)
    app_prefix = "dab-cancel"

    def no_idle_in_transaction(self) -> bool:
        return idle_in_transaction(self.app) == 0

    # ---- helpers ---------------------------------------------------------

    def conn(self) -> Any:
        return conn(self.alias)

    async def execute(self, sql: str, params: Any = None) -> None:
        await execute(sql, params, using=self.alias)

    async def add(self, name: str) -> None:
        await self.execute(
            "INSERT INTO testapp_account (name, balance) VALUES (%s, 0)", [name]
        )

    async def commit_one(self, name: str) -> int:
        """A whole transaction; returns the backend pid that ran it."""
        async with async_atomic(using=self.alias):
            await self.add(name)
            return await backend_pid(self.conn())

    async def run_and_cancel(
        self,
        body: Callable[[asyncio.Event, list[int]], Coroutine[Any, Any, None]],
        wait_for_sleep: bool,
    ) -> int:
        """Run ``body`` in a task, cancel it once it is parked; return its pid."""
        parked = asyncio.Event()
        pids: list[int] = []
        task = asyncio.create_task(body(parked, pids))
        await parked.wait()
        pid = pids[0]
        if wait_for_sleep:
            # The statement is really running on the server.
            self.assertTrue(await poll(lambda: SLEEP in (running_query(pid) or "")))
        task.cancel()
        with self.assertRaises(asyncio.CancelledError):
            await task
        self.assertTrue(task.cancelled())
        return pid

    async def assert_clean_after(self, pid: int) -> None:
        """Nothing committed, nothing left running or idle in transaction."""
        await settle_background()
        self.assertEqual(committed_names(), [])
        self.assertTrue(
            await poll(self.no_idle_in_transaction),
            "a session was left idle in transaction",
        )
        # The cancelled statement doesn't go on running on the server.
        self.assertTrue(await poll(lambda: running_query(pid) is None))
        await self.assert_connection_released(pid)
        # The next transaction, on a fresh task, works.
        await asyncio.create_task(self.commit_one("next"))
        self.assertEqual(committed_names(), ["next"])

    async def assert_connection_released(self, pid: int) -> None:
        # A plain alias closes the connection of a finished task.
        self.assertTrue(await poll(lambda: session_state(pid) is None))

    @contextlib.contextmanager
    def no_pool_cleanup(self) -> Iterator[None]:
        yield

    # ---- scenarios -------------------------------------------------------

    async def test_cancel_while_awaiting_a_query(self) -> None:
        async def body(parked: asyncio.Event, pids: list[int]) -> None:
            async with async_atomic(using=self.alias):
                await self.add("cancelled")
                pids.append(await backend_pid(self.conn()))
                parked.set()
                await self.execute(SLEEP)
                await self.add("never")

        with self.no_pool_cleanup():
            pid = await self.run_and_cancel(body, wait_for_sleep=True)
            await self.assert_clean_after(pid)

    async def test_cancel_while_awaiting_asyncio_sleep(self) -> None:
        async def body(parked: asyncio.Event, pids: list[int]) -> None:
            async with async_atomic(using=self.alias):
                await self.add("cancelled")
                pids.append(await backend_pid(self.conn()))
                parked.set()
                await asyncio.sleep(5)
                await self.add("never")

        with self.no_pool_cleanup():
            pid = await self.run_and_cancel(body, wait_for_sleep=False)
            self.assertEqual(session_state(pid) or "idle", "idle")
            await self.assert_clean_after(pid)

    async def test_cancel_inside_nested_savepoints(self) -> None:
        async def body(parked: asyncio.Event, pids: list[int]) -> None:
            async with async_atomic(using=self.alias):
                await self.add("level1")
                async with async_atomic(using=self.alias):
                    await self.add("level2")
                    async with async_atomic(using=self.alias):
                        await self.add("level3")
                        pids.append(await backend_pid(self.conn()))
                        parked.set()
                        await self.execute(SLEEP)

        with self.no_pool_cleanup():
            pid = await self.run_and_cancel(body, wait_for_sleep=True)
            await self.assert_clean_after(pid)

    async def test_cancel_inside_nested_savepoints_during_asyncio_sleep(self) -> None:
        async def body(parked: asyncio.Event, pids: list[int]) -> None:
            async with async_atomic(using=self.alias):
                await self.add("level1")
                async with async_atomic(using=self.alias):
                    await self.add("level2")
                    pids.append(await backend_pid(self.conn()))
                    parked.set()
                    await asyncio.sleep(5)

        with self.no_pool_cleanup():
            pid = await self.run_and_cancel(body, wait_for_sleep=False)
            await self.assert_clean_after(pid)

    async def test_timeout_around_the_block(self) -> None:
        pids: list[int] = []
        with self.no_pool_cleanup():
            with self.assertRaises(TimeoutError):
                async with asyncio.timeout(0.2), async_atomic(using=self.alias):
                    await self.add("timed out")
                    pids.append(await backend_pid(self.conn()))
                    await self.execute(SLEEP)
            # The same task goes on with a working connection.
            self.assertFalse(self.conn().in_atomic_block)
            self.assertEqual(committed_names(), [])
            self.assertTrue(await poll(self.no_idle_in_transaction))
            self.assertTrue(await poll(lambda: running_query(pids[0]) is None))
            await self.commit_one("same task")
            self.assertEqual(committed_names(), ["same task"])
            outside("DELETE FROM testapp_account")
            await async_connections[self.alias].close()
            await self.assert_connection_released_or_pooled(pids[0])
            await asyncio.create_task(self.commit_one("next"))
            self.assertEqual(committed_names(), ["next"])

    async def assert_connection_released_or_pooled(self, pid: int) -> None:
        await self.assert_connection_released(pid)

    async def test_timeout_inside_the_block(self) -> None:
        with self.no_pool_cleanup():
            with self.assertRaises(TimeoutError):
                async with async_atomic(using=self.alias):
                    await self.add("timed out")
                    async with asyncio.timeout(0.2):
                        await self.execute(SLEEP)
            self.assertEqual(committed_names(), [])
            await self.commit_one("same task")
            self.assertEqual(committed_names(), ["same task"])

    async def test_timeout_caught_around_a_savepoint_lets_the_outer_block_commit(
        self,
    ) -> None:
        with self.no_pool_cleanup():
            async with async_atomic(using=self.alias):
                await self.add("outer")
                with self.assertRaises(TimeoutError):
                    async with (
                        asyncio.timeout(0.2),
                        async_atomic(using=self.alias),
                    ):
                        await self.add("inner")
                        await self.execute(SLEEP)
                # Rolled back to the savepoint: the transaction goes on.
                await self.add("outer-after")
            self.assertEqual(committed_names(), ["outer", "outer-after"])

    async def test_timeout_caught_inside_the_block_leaves_it_aborted(self) -> None:
        with self.no_pool_cleanup():
            async with async_atomic(using=self.alias):
                await self.add("outer")
                with self.assertRaises(TimeoutError):
                    async with asyncio.timeout(0.2):
                        await self.execute(SLEEP)
                # The server cancelled the statement: the transaction is
                # aborted, as after any database error without a savepoint.
                with self.assertRaisesRegex(
                    InternalError, "current transaction is aborted"
                ):
                    await self.add("refused")
            self.assertEqual(committed_names(), [])
            await self.commit_one("next")
            self.assertEqual(committed_names(), ["next"])

    async def test_cancel_while_waiting_for_a_row_lock(self) -> None:
        outside("INSERT INTO testapp_account (name, balance) VALUES ('locked', 1)")
        holding = asyncio.Event()
        release = asyncio.Event()

        async def holder() -> None:
            async with async_atomic(using=self.alias):
                await self.execute(
                    "SELECT id FROM testapp_account WHERE name = 'locked' FOR UPDATE"
                )
                holding.set()
                await release.wait()
                await self.execute(
                    "UPDATE testapp_account SET balance = 2 WHERE name = 'locked'"
                )

        async def waiter(parked: asyncio.Event, pids: list[int]) -> None:
            async with async_atomic(using=self.alias):
                await self.add("waiter")
                pids.append(await backend_pid(self.conn()))
                parked.set()
                await self.execute(
                    "UPDATE testapp_account SET balance = 3 WHERE name = 'locked'"
                )

        with self.no_pool_cleanup():
            holder_task = asyncio.create_task(holder())
            await holding.wait()
            parked = asyncio.Event()
            pids: list[int] = []
            task = asyncio.create_task(waiter(parked, pids))
            await parked.wait()
            self.assertTrue(
                await poll(lambda: "balance = 3" in (running_query(pids[0]) or ""))
            )
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task
            release.set()
            await holder_task
            self.assertEqual(
                outside("SELECT name, balance FROM testapp_account ORDER BY name"),
                [("locked", 2)],
            )
            self.assertTrue(await poll(self.no_idle_in_transaction))

    @expects_logs(DISCARDED, INTERRUPTED)
    async def test_repeated_cancellation_during_cleanup(self) -> None:
        """Cancel again and again, also while the block rolls back.

        A second cancellation while psycopg cancels the statement makes it
        give up on the connection (it closes it, psycopg #1435) without the
        server having been told: the statement then runs to its end on the
        server, which is why it is a short one here.
        """
        short_sleep = "SELECT pg_sleep(1)"

        async def body(parked: asyncio.Event, pids: list[int]) -> None:
            async with async_atomic(using=self.alias):
                await self.add("storm-level1")
                async with async_atomic(using=self.alias):
                    await self.add("storm-level2")
                    pids.append(await backend_pid(self.conn()))
                    parked.set()
                    await self.execute(short_sleep)

        parked = asyncio.Event()
        pids: list[int] = []
        task = asyncio.create_task(body(parked, pids))
        await parked.wait()
        self.assertTrue(
            await poll(lambda: short_sleep in (running_query(pids[0]) or ""))
        )
        for _ in range(10_000):
            if task.done():
                break
            task.cancel()
            await asyncio.sleep(0)
        self.assertTrue(task.done())
        with self.assertRaises(asyncio.CancelledError):
            await task
        await settle_background()
        self.assertEqual(committed_names(), [])
        self.assertTrue(await poll(self.no_idle_in_transaction))
        self.assertTrue(await poll(lambda: running_query(pids[0]) is None))
        await self.assert_pool_is_whole()
        await asyncio.create_task(self.commit_one("next"))
        self.assertEqual(committed_names(), ["next"])

    async def assert_pool_is_whole(self) -> None:
        """On a pooled alias: every connection is back in the pool, and the
        server shows exactly the pool's sessions."""
        if not self.pooled:
            return
        # The test's own task gives its connection back first.
        await self.conn().close()
        await settle_background()
        pool = await loop_state().pools[self.alias]
        self.assertTrue(
            await pool_is_whole(self.alias, lambda: support.count_sessions(self.app)),
            f"connections missing from the pool: {pool.get_stats()}, "
            f"sessions {support.count_sessions(self.app)}",
        )

    async def test_many_tasks_cancelled_at_once(self) -> None:
        started = 0
        all_parked = asyncio.Event()

        async def body(index: int) -> None:
            nonlocal started
            async with async_atomic(using=self.alias):
                await self.add(f"cancelled-{index}")
                started += 1
                if started == 4:
                    all_parked.set()
                await self.execute(SLEEP)

        with self.no_pool_cleanup():
            tasks = [asyncio.create_task(body(i)) for i in range(4)]
            await all_parked.wait()
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for result in results:
                self.assertIsInstance(result, asyncio.CancelledError)
            await settle_background()
            self.assertEqual(committed_names(), [])
            self.assertTrue(await poll(self.no_idle_in_transaction))
            await self.assert_pool_is_whole()

    # ---- cancelled while the block's own COMMIT/ROLLBACK is in flight ------

    @contextlib.asynccontextmanager
    async def through_proxy(self) -> AsyncIterator[HoldingProxy]:
        """Switch the test to an alias that reaches the server via a proxy."""
        proxy = HoldingProxy()
        port = await proxy.start()
        self.alias = f"{type(self).alias}_proxied"
        self.app = f"{self.app}-px"
        try:
            with temporary_alias(
                self.alias,
                HOST="127.0.0.1",
                PORT=str(port),
                OPTIONS={
                    "application_name": self.app,
                    "sslmode": "disable",
                    **self.alias_options,
                },
            ):
                try:
                    yield proxy
                finally:
                    proxy.replies.set()
                    await settle_background()
                    await async_connections.close_all()
        finally:
            await proxy.close()

    async def cancel_at_block_exit(
        self, proxy: HoldingProxy, fail: bool, twice: bool, hold: bool = False
    ) -> tuple[int, list[str], asyncio.CancelledError]:
        """Cancel the task while it waits for its COMMIT (or ROLLBACK) answer.

        The server has run the statement; the proxy holds its answer back
        until the task has been cancelled (twice: also while the block waits
        for the statement to end), then lets it through, unless ``hold``.
        Returns the backend pid, what ran (the on_commit callback, code after
        the block) and the task's CancelledError.
        """
        ran: list[str] = []
        pids: list[int] = []
        raised: list[asyncio.CancelledError] = []

        async def body() -> None:
            try:
                async with async_atomic(using=self.alias):
                    await self.add("maybe")
                    pids.append(await backend_pid(self.conn()))
                    await self.conn().on_commit(lambda: ran.append("hook"))
                    proxy.replies.clear()
                    if fail:
                        raise Boom
            except asyncio.CancelledError as exc:
                raised.append(exc)  # as the block raised it (with its notes)
                raise
            ran.append("after the block")

        task = asyncio.create_task(body())
        statement = "ROLLBACK" if fail else "COMMIT"
        self.assertTrue(
            await poll(
                lambda: bool(pids) and last_query(pids[0]) == ("idle", statement)
            )
        )
        task.cancel()
        if twice:
            for _ in range(20):
                await asyncio.sleep(0)
            task.cancel()
        if not hold:
            proxy.replies.set()
        with self.assertRaises(asyncio.CancelledError):
            await task
        proxy.replies.set()
        return pids[0], ran, raised[0]

    async def assert_settled_after_exit(self, committed: list[str]) -> None:
        await settle_background()
        self.assertEqual(committed_names(), committed)
        self.assertTrue(await poll(self.no_idle_in_transaction))
        await self.assert_pool_is_whole()
        await asyncio.create_task(self.commit_one("next"))
        self.assertEqual(committed_names(), sorted([*committed, "next"]))

    async def test_cancel_while_committing_runs_the_callbacks(self) -> None:
        # The COMMIT already on the wire is let finish: the block knows it
        # committed, runs its callbacks, and only then propagates the
        # cancellation (the code after the block does not run).
        async with self.through_proxy() as proxy:
            with self.no_pool_cleanup():
                pid, ran, _ = await self.cancel_at_block_exit(
                    proxy, fail=False, twice=False
                )
                self.assertEqual(ran, ["hook"])
                await self.assert_settled_after_exit(["maybe"])
                await self.assert_connection_released(pid)

    async def test_cancel_while_rolling_back(self) -> None:
        async with self.through_proxy() as proxy:
            with self.no_pool_cleanup():
                pid, ran, _ = await self.cancel_at_block_exit(
                    proxy, fail=True, twice=False
                )
                self.assertEqual(ran, [])
                await self.assert_settled_after_exit([])
                await self.assert_connection_released(pid)

    async def test_cancel_twice_while_committing_runs_the_callbacks(self) -> None:
        async with self.through_proxy() as proxy:
            with self.no_pool_cleanup():
                _, ran, _ = await self.cancel_at_block_exit(
                    proxy, fail=False, twice=True
                )
                self.assertEqual(ran, ["hook"])
                await self.assert_settled_after_exit(["maybe"])

    async def test_cancel_twice_while_rolling_back(self) -> None:
        async with self.through_proxy() as proxy:
            with self.no_pool_cleanup():
                _, ran, _ = await self.cancel_at_block_exit(
                    proxy, fail=True, twice=True
                )
                self.assertEqual(ran, [])
                await self.assert_settled_after_exit([])

    async def test_cancel_while_restoring_autocommit_keeps_callbacks_in_place(
        self,
    ) -> None:
        # A slow log handler after the COMMIT makes psycopg yield to the loop
        # while the block turns autocommit back on; the task is cancelled at
        # that very point, and survives (as under asyncio.timeout).
        ran: list[str] = []
        current = asyncio.current_task()
        assert current is not None
        task = current

        class CancelAfterCommit(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if "COMMIT" in record.getMessage():
                    time.sleep(0.006)  # psycopg yields once busy for 5 ms
                    task.cancel()

        logger = logging.getLogger("django.db.backends")
        handler = CancelAfterCommit(logging.DEBUG)
        level = logger.level
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
        connection = self.conn()
        connection.force_debug_cursor = True
        try:
            async with async_atomic(using=self.alias):
                await self.add("t1")
                await connection.on_commit(lambda: ran.append("t1"))
        except asyncio.CancelledError:
            task.uncancel()
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
            connection.force_debug_cursor = False
        # T1 committed: its callback ran, before the cancellation went on.
        self.assertEqual(ran, ["t1"])
        async with async_atomic(using=self.alias):
            await self.add("t2")
            await connection.on_commit(lambda: ran.append("t2"))
        # T2 ran its own callback only.
        self.assertEqual(ran, ["t1", "t2"])
        self.assertEqual(committed_names(), ["t1", "t2"])

    async def test_commit_that_never_answers_is_given_up_as_unknown(self) -> None:
        # After the cancellation the COMMIT gets a bounded time to answer;
        # past it the connection is closed, and the outcome is unknown: the
        # callbacks are dropped, and the error and the log say so.
        async with self.through_proxy() as proxy:
            wrapper_class = type(self.conn())
            self.enterContext(mock.patch.object(wrapper_class, "cancel_grace", 0.3))
            # (A pool also warns as it discards the closed connection.)
            with self.assertLogs(level="WARNING") as logs:
                pid, ran, cancelled = await self.cancel_at_block_exit(
                    proxy, fail=False, twice=False, hold=True
                )
            self.assertEqual(ran, [])
            notes = " ".join(getattr(cancelled, "__notes__", []))
            self.assertIn("outcome", notes)
            self.assertIn("unknown", notes)
            self.assertIn("COMMIT", " ".join(logs.output))
            self.assertIn("unknown", " ".join(logs.output))
            # The server did commit; only the task could not know it.
            await self.assert_settled_after_exit(["maybe"])
            # The session was closed (a pool replaced it).
            self.assertTrue(await poll(lambda: session_state(pid) is None))

    async def test_cancel_while_creating_a_savepoint(self) -> None:
        async with self.through_proxy() as proxy:
            with self.no_pool_cleanup():
                pids: list[int] = []

                async def body() -> None:
                    async with async_atomic(using=self.alias):
                        await self.add("outer")
                        pids.append(await backend_pid(self.conn()))
                        proxy.replies.clear()
                        async with async_atomic(using=self.alias):
                            await self.add("inner")

                task = asyncio.create_task(body())
                # The server ran SAVEPOINT; its answer is held back.
                self.assertTrue(
                    await poll(
                        lambda: (
                            bool(pids)
                            and (last_query(pids[0]) or ("", ""))[1].startswith(
                                "SAVEPOINT"
                            )
                        )
                    )
                )
                task.cancel()
                proxy.replies.set()
                with self.assertRaises(asyncio.CancelledError):
                    await task
                await self.assert_settled_after_exit([])

    # ---- lost connection --------------------------------------------------

    async def test_connection_closed_by_the_client_inside_the_block(self) -> None:
        async with async_atomic(using=self.alias):
            await self.add("closed")
            pid = await backend_pid(self.conn())
            await self.conn().close()
            self.assertTrue(self.conn().closed_in_transaction)
            # No new connection inside the block: the transaction is gone.
            with self.assertRaises(Error):
                await self.add("refused")
        # The block left quietly, as Django's does; nothing was committed.
        self.assertEqual(committed_names(), [])
        self.assertTrue(await poll(self.no_idle_in_transaction))
        await self.assert_connection_released(pid)
        await self.commit_one("next")
        self.assertEqual(committed_names(), ["next"])
        await self.assert_pool_is_whole()

    @expects_logs(DISCARDED)
    async def test_lost_connection_mid_transaction(self) -> None:
        with self.assertRaises(OperationalError) as ctx:
            async with async_atomic(using=self.alias):
                await self.add("lost")
                pid = await backend_pid(self.conn())
                terminate(pid)
                await self.add("after")
        self.assertIsInstance(ctx.exception.__cause__, psycopg.OperationalError)
        self.assertIsNone(session_state(pid))
        self.assertEqual(committed_names(), [])
        self.assertFalse(self.conn().in_atomic_block)
        # The next block on the same task works, on a new session.
        async with async_atomic(using=self.alias):
            await self.add("next")
            self.assertNotEqual(await backend_pid(self.conn()), pid)
        self.assertEqual(committed_names(), ["next"])
        await self.assert_pool_is_whole()

    @expects_logs(DISCARDED)
    async def test_lost_connection_in_nested_savepoint(self) -> None:
        with self.assertRaises(OperationalError):
            async with async_atomic(using=self.alias):
                await self.add("outer")
                async with async_atomic(using=self.alias):
                    await self.add("inner")
                    terminate(await backend_pid(self.conn()))
                    await self.add("after")
        self.assertEqual(committed_names(), [])
        async with async_atomic(using=self.alias):
            await self.add("next")
        self.assertEqual(committed_names(), ["next"])
        await self.assert_pool_is_whole()

    @expects_logs(DISCARDED)
    async def test_lost_connection_caught_inside_the_block(self) -> None:
        # Swallowing the errors doesn't let the block pretend to commit: its
        # COMMIT fails on the dead session, as with stock Django.
        with self.assertRaises(OperationalError):
            async with async_atomic(using=self.alias):
                await self.add("lost")
                terminate(await backend_pid(self.conn()))
                with self.assertRaises(OperationalError):
                    await self.add("after")
                # The session is gone: nothing more can happen in this block.
                with self.assertRaises(Exception):  # noqa: B017 - any refusal
                    await self.add("refused")
        self.assertEqual(committed_names(), [])
        await self.commit_one("next")
        self.assertEqual(committed_names(), ["next"])
        await self.assert_pool_is_whole()

    @expects_logs(DISCARDED)
    async def test_lost_connection_before_commit(self) -> None:
        """The session dies between the last query and the COMMIT."""
        with self.assertRaises(OperationalError):
            async with async_atomic(using=self.alias):
                await self.add("lost")
                terminate(await backend_pid(self.conn()))
        self.assertEqual(committed_names(), [])
        await self.commit_one("next")
        self.assertEqual(committed_names(), ["next"])
        await self.assert_pool_is_whole()


class CancellationTests(CancellationScenarios):
    """The scenarios on an alias without a pool."""

    alias = "cancel_plain"

    async def test_cancel_while_connecting_leaves_no_session(self) -> None:
        """A task cancelled while its connection is being opened strands nothing.

        The CancelledError is kept, as ``gather(return_exceptions=True)``, a
        TaskGroup or an error reporter keep it: the half-open connection
        must not live on with it.
        """
        app = f"dab-connect-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        proxy = HoldingProxy()
        port = await proxy.start()
        self.addAsyncCleanup(proxy.close)
        options = {"application_name": app, "sslmode": "disable", "connect_timeout": 2}
        with temporary_alias(
            "via_proxy", HOST="127.0.0.1", PORT=str(port), OPTIONS=options
        ):

            async def use() -> int:
                return await backend_pid(async_connections["via_proxy"])

            proxy.replies.clear()
            task = asyncio.create_task(use())
            # The server has started the session; the client waits for it.
            self.assertTrue(await poll(lambda: support.count_sessions(app) == 1))
            task.cancel()
            results = await asyncio.gather(task, return_exceptions=True)
            self.assertIsInstance(results[0], asyncio.CancelledError)
            # The server's answer arrives, late.
            proxy.replies.set()
            await settle_background()
            self.assertTrue(
                await poll(lambda: support.count_sessions(app) == 0),
                f"{support.count_sessions(app)} session(s) left open by a "
                "connection attempt that was cancelled",
            )


class PooledCancellationTests(CancellationScenarios):
    """The same scenarios on a pooled alias; the pool must end up whole."""

    alias = "cancel_pooled"
    alias_options = POOLED

    async def pool(self) -> Any:
        return await loop_state().pools[self.alias]

    async def test_cancel_while_waiting_for_a_pool_connection(self) -> None:
        holders = [asyncio.Event() for _ in range(4)]
        release = asyncio.Event()

        async def hold(held: asyncio.Event) -> None:
            async with async_connections.independent_connection():
                async with self.conn().hold():
                    await backend_pid(self.conn())
                    held.set()
                    await release.wait()

        holding = [asyncio.create_task(hold(event)) for event in holders]
        for event in holders:
            await event.wait()
        pool = await self.pool()

        async def body() -> None:
            async with async_atomic(using=self.alias):
                await self.add("never")

        task = asyncio.create_task(body())
        # The task waits in the pool's queue (max_size 4, all checked out).
        self.assertTrue(
            await poll(lambda: pool.get_stats().get("requests_waiting", 0) == 1)
        )
        task.cancel()
        with self.assertRaises(asyncio.CancelledError):
            await task
        release.set()
        await asyncio.gather(*holding)
        self.assertEqual(committed_names(), [])
        await self.assert_pool_is_whole()
        await asyncio.create_task(self.commit_one("next"))
        self.assertEqual(committed_names(), ["next"])

    async def assert_connection_released(self, pid: int) -> None:
        await self.assert_pool_is_whole()
        # Returned to the pool, not closed: the session waits there, idle.
        state = session_state(pid)
        self.assertIn(state, ("idle", None))
        self.assertEqual((await self.pool()).get_stats().get("returns_bad", 0), 0)

    @contextlib.contextmanager
    def no_pool_cleanup(self) -> Iterator[None]:
        # psycopg_pool warns when it must roll back or close a connection
        # that came back mid-transaction or mid-statement: the backend must
        # have settled it first.
        with self.assertNoLogs("psycopg.pool", "WARNING"):
            yield


del CancellationScenarios

if __name__ == "__main__":
    unittest.main()
