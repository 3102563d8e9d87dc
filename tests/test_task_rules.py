"""Who may drive a connection: decided by where a task was created, never by timing.

* A child task created inside an ``async_atomic()`` block is refused the
  block's alias for its whole life, whether the block is still open or already
  over, and whichever alias it uses first: a rolled-back block never leaves a
  straggler's writes behind. ``independent_connection()`` is its way out.
* A wrapper is driven by its owner task only: every entry point (connecting,
  cursors, transactions, on_commit, closing) refuses another task, so that
  two tasks never open, drive or leak connections of one wrapper.

Each scenario runs on a plain alias and on a pooled one; outcomes are
checked in the database from outside.
"""

from __future__ import annotations

import asyncio
import inspect
import unittest
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction

import support
from aliases import temporary_alias
from django_async_backend.db import async_connections
from django_async_backend.db.backends.postgresql.base import AsyncDatabaseWrapper
from django_async_backend.db.transaction import async_atomic
from scenarios import POOLED, AliasTestCase, committed_names
from support import poll, settle_background

REFUSED = "created inside async_atomic"


class Boom(Exception):
    pass


class TaskRuleScenarios(AliasTestCase):
    """The scenarios, run plain and pooled by the two classes at the end."""

    tables = ("testapp_account",)
    app_prefix = "dab-rules"

    def setUp(self) -> None:
        super().setUp()
        options = {"application_name": self.app, **self.alias_options}
        self.enterContext(temporary_alias(f"{self.alias}_other", OPTIONS=options))

    async def add(self, name: str, alias: str | None = None) -> None:
        async with async_connections[alias or self.alias].cursor() as cursor:
            await cursor.execute(
                "INSERT INTO testapp_account (name, balance) VALUES (%s, 0)", [name]
            )

    # ---- children created inside a block ------------------------------------

    async def test_child_is_refused_while_the_block_is_open(self) -> None:
        async with async_atomic(using=self.alias):
            await self.add("parent")
            with self.assertRaisesRegex(RuntimeError, REFUSED):
                await asyncio.create_task(self.add("child"))
        self.assertEqual(committed_names(), ["parent"])

    async def test_straggler_is_refused_after_the_block_rolled_back(self) -> None:
        block_over = asyncio.Event()
        outcomes: list[BaseException | None] = []

        async def boom() -> None:
            raise Boom

        async def slow() -> None:
            await block_over.wait()
            try:
                await self.add("straggler")
            except RuntimeError as exc:
                outcomes.append(exc)
            else:
                outcomes.append(None)

        with self.assertRaises(Boom):
            async with async_atomic(using=self.alias):
                await self.add("parent")
                await asyncio.gather(boom(), slow())
        block_over.set()
        self.assertTrue(await poll(lambda: bool(outcomes)))
        self.assertIsInstance(outcomes[0], RuntimeError)
        self.assertIn(REFUSED, str(outcomes[0]))
        await settle_background()
        self.assertEqual(committed_names(), [])

    async def test_straggler_is_refused_after_the_block_committed(self) -> None:
        block_over = asyncio.Event()

        async def later() -> None:
            await block_over.wait()
            await self.add("straggler")

        async with async_atomic(using=self.alias):
            await self.add("parent")
            task = asyncio.create_task(later())
        block_over.set()
        with self.assertRaisesRegex(RuntimeError, REFUSED):
            await task
        self.assertEqual(committed_names(), ["parent"])

    async def test_rule_holds_for_the_block_alias_used_after_another(self) -> None:
        other = f"{self.alias}_other"

        async def child() -> None:
            await self.add("child-other", alias=other)  # not the block's alias
            await self.add("child-block")  # the block's alias: refused

        async with async_atomic(using=self.alias):
            await self.add("parent")
            with self.assertRaisesRegex(RuntimeError, REFUSED):
                await asyncio.create_task(child())
        self.assertEqual(committed_names(), ["child-other", "parent"])

    async def test_rule_holds_for_an_alias_first_used_inside_the_block(self) -> None:
        # The parent's block on `other`, opened after the child's first query.
        other = f"{self.alias}_other"
        started, go_on = asyncio.Event(), asyncio.Event()

        async def child() -> None:
            await self.add("child-first")
            started.set()
            await go_on.wait()
            await self.add("child-second", alias=other)

        async with async_atomic(using=self.alias):
            task = asyncio.create_task(child())
            async with async_atomic(using=other):
                await self.add("parent", alias=other)
            go_on.set()
            with self.assertRaisesRegex(RuntimeError, REFUSED):
                await task
        self.assertEqual(committed_names(), ["parent"])

    async def test_child_in_independent_connection_commits_on_its_own(self) -> None:
        async def audit() -> None:
            async with async_connections.independent_connection():
                async with async_atomic(using=self.alias):
                    await self.add("audit")

        with self.assertRaises(Boom):
            async with async_atomic(using=self.alias):
                await self.add("parent")
                await asyncio.create_task(audit())
                raise Boom
        self.assertEqual(committed_names(), ["audit"])

    async def test_grandchild_of_an_independent_connection_gets_its_own(self) -> None:
        async def grandchild() -> None:
            await self.add("grandchild")

        async def child() -> None:
            async with async_connections.independent_connection():
                await asyncio.create_task(grandchild())

        async with async_atomic(using=self.alias):
            await self.add("parent")
            await asyncio.create_task(child())
        self.assertEqual(committed_names(), ["grandchild", "parent"])

    async def test_children_created_outside_blocks_get_their_own(self) -> None:
        go_on = asyncio.Event()

        async def before() -> None:
            await go_on.wait()
            await self.add("before")

        task = asyncio.create_task(before())
        async with async_atomic(using=self.alias):
            await self.add("parent")
            go_on.set()
            await task  # created before the block: its own connection
        await asyncio.create_task(self.add("after"))
        self.assertEqual(committed_names(), ["after", "before", "parent"])

    # ---- one wrapper, one task ------------------------------------------------

    async def test_ensure_connection_from_other_tasks_is_refused(self) -> None:
        connection = async_connections[self.alias]
        await connection.ensure_connection()
        await settle_background()
        before = support.count_sessions(self.app)

        async def other_task() -> None:
            await connection.ensure_connection()

        results = await asyncio.gather(
            *(asyncio.create_task(other_task()) for _ in range(4)),
            return_exceptions=True,
        )
        self.assertTrue(all(isinstance(r, RuntimeError) for r in results), results)
        await settle_background()
        self.assertEqual(support.count_sessions(self.app), before)

    async def test_concurrent_first_use_from_other_tasks_opens_one_session(
        self,
    ) -> None:
        # The wrapper was fetched but never used: its owner is this task.
        connection = async_connections[self.alias]

        async def other_task() -> None:
            await connection.connect()

        results = await asyncio.gather(
            *(asyncio.create_task(other_task()) for _ in range(4)),
            return_exceptions=True,
        )
        self.assertTrue(all(isinstance(r, RuntimeError) for r in results), results)
        await settle_background()
        self.assertTrue(await poll(lambda: support.count_sessions(self.app) == 0))

    async def test_every_entry_point_refuses_another_task(self) -> None:
        connection = async_connections[self.alias]
        await connection.ensure_connection()
        calls = entry_point_calls(connection)
        refused: list[str] = []
        for name, call in calls.items():
            try:
                await asyncio.create_task(_await(call))
            except RuntimeError as exc:
                if "belongs to task" in str(exc):
                    refused.append(name)
        self.assertEqual(sorted(refused), sorted(calls))
        # And the owner still works.
        await self.add("owner")
        self.assertEqual(committed_names(), ["owner"])

    async def test_cursor_operations_refuse_another_task(self) -> None:
        connection = async_connections[self.alias]
        async with connection.cursor() as cursor:
            await cursor.execute("SELECT 1")
            for call in (
                lambda: cursor.execute("SELECT 2"),
                lambda: cursor.executemany("SELECT %s", [[1]]),
                cursor.fetchone,
                cursor.fetchall,
                lambda: cursor.fetchmany(1),
            ):
                with self.assertRaisesRegex(RuntimeError, "belongs to task"):
                    await asyncio.create_task(_await(call))
            self.assertEqual(await cursor.fetchone(), (1,))

    async def test_a_named_cursor_closed_by_another_task_is_closed_by_its_owner(
        self,
    ) -> None:
        connection = async_connections[self.alias]
        cursor = connection.chunked_cursor()
        await cursor.__aenter__()
        await cursor.execute("SELECT generate_series(1, 10)")
        await cursor.fetchmany(2)
        name = cursor.name

        async def open_cursors() -> list[str]:
            async with connection.cursor() as observer:
                await observer.execute("SELECT name FROM pg_cursors")
                return [row[0] for row in await observer.fetchall()]

        # Another task (an async generator's finalizer, say) closes it: no
        # error, and no I/O on a connection it does not own.
        await asyncio.create_task(cursor.close())
        self.assertIn(name, [row[0] for row in await _pg_cursors_raw(connection)])
        # The owner's next use closes it.
        self.assertNotIn(name, await open_cursors())


async def _pg_cursors_raw(connection: Any) -> list[Any]:
    # The driver connection itself, so that no wrapper entry point runs first.
    cursor = connection.connection.cursor()
    await cursor.execute("SELECT name FROM pg_cursors")
    return list(await cursor.fetchall())


async def _await(call: Callable[[], Awaitable[Any]]) -> Any:
    return await call()


def entry_point_calls(
    connection: AsyncDatabaseWrapper,
) -> dict[str, Callable[[], Awaitable[Any]]]:
    """A call of every public coroutine method of the wrapper and its cursor."""
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "cursor": lambda: connection.cursor().__aenter__(),
        "chunked_cursor": lambda: connection.chunked_cursor().__aenter__(),
        "set_autocommit": lambda: connection.set_autocommit(False),
        "savepoint_rollback": lambda: connection.savepoint_rollback("s1"),
        "savepoint_commit": lambda: connection.savepoint_commit("s1"),
        "on_commit": lambda: connection.on_commit(lambda: None),
        "check_constraints": lambda: connection.check_constraints(),
    }
    for name, member in inspect.getmembers(type(connection)):
        if name.startswith("_") or name in calls or name in HOOKS:
            continue
        if iscoroutinefunction(member) and _takes_no_arguments(member):
            calls[name] = getattr(connection, name)
    return calls


# Django's backend hooks, called by an entry point (connect()) that checks.
HOOKS = {"init_connection_state"}


def _takes_no_arguments(function: Callable[..., Any]) -> bool:
    parameters = list(inspect.signature(function).parameters.values())[1:]
    return all(p.default is not p.empty for p in parameters)


class PlainTaskRuleTests(TaskRuleScenarios):
    alias = "rules_plain"


class PooledTaskRuleTests(TaskRuleScenarios):
    alias = "rules_pooled"
    alias_options = POOLED

    async def test_concurrent_first_use_from_other_tasks_opens_one_session(
        self,
    ) -> None:
        # A pool keeps min_size sessions open: count checkouts instead.
        connection = async_connections[self.alias]

        async def other_task() -> None:
            await connection.connect()

        results = await asyncio.gather(
            *(asyncio.create_task(other_task()) for _ in range(4)),
            return_exceptions=True,
        )
        self.assertTrue(all(isinstance(r, RuntimeError) for r in results), results)
        self.assertIsNone(connection.connection)


del TaskRuleScenarios

if __name__ == "__main__":
    unittest.main()
