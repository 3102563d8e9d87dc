"""The native bridge keeps Django's rules, whatever the timing.

* Code runs "inside the bridge" as a property of the call, never of timing:
  a sync on_commit callback always sees the task's async connection through
  ``django.db.connections``, whether an earlier callback waited or not and
  whether the commit came from ``async_atomic`` or from Django's ``atomic``.
* Looking a connection up (``connections[alias]``) never does I/O, so that
  Django's invariant holds: a connection closed inside an atomic block stays
  closed until the outermost block exits, then is discarded.
* A server-side cursor left open by a ``break`` out of ``aiterator()`` is
  closed by the connection's owner task, never by the async generator's
  finalizer task.

Each runs on a plain alias and on a pooled one.
"""

from __future__ import annotations

import asyncio
import gc
import unittest
from typing import Any

from django.db import connections, transaction

from django_async_backend.db import async_connections
from django_async_backend.db.transaction import async_atomic
from django_async_backend.utils.bridge import run_native
from scenarios import POOLED, AliasTestCase
from support import outside
from testapp.models import Author


def author_names() -> list[str]:
    return [row[0] for row in outside("SELECT name FROM testapp_author ORDER BY name")]


async def driver_cursors(connection: Any) -> list[str]:
    """The session's open cursors, read on the driver connection itself."""
    cursor = connection.connection.cursor()
    await cursor.execute("SELECT name FROM pg_cursors")
    return [row[0] for row in await cursor.fetchall()]


class BridgeRuleScenarios(AliasTestCase):
    """The rules, run plain and pooled by the two classes at the end."""

    tables = ("testapp_author",)
    app_prefix = "dab-bridge"

    # ---- in the bridge: a property of the call ------------------------------

    async def test_sync_callbacks_see_the_async_connection_whatever_ran_before(
        self,
    ) -> None:
        alias = self.alias
        seen: list[str] = []

        def sync_callback() -> None:
            seen.append(type(connections[alias]).__name__)

        async def callback_that_waits() -> None:
            await asyncio.sleep(0)

        async def callback_that_does_not_wait() -> None:
            pass

        def django_atomic(first: Any) -> None:
            with transaction.atomic(using=alias):
                transaction.on_commit(first, using=alias)
                transaction.on_commit(sync_callback, using=alias)

        connection = async_connections[alias]
        for first in (callback_that_does_not_wait, callback_that_waits):
            async with async_atomic(using=alias):
                await connection.on_commit(first)
                await connection.on_commit(sync_callback)
            await run_native(django_atomic, first)
        self.assertEqual(seen, ["SyncConnection"] * 4)

    async def test_sync_callback_writes_with_the_orm_after_the_commit(self) -> None:
        alias = self.alias

        def announce() -> None:
            Author.objects.using(alias).create(name="announced")

        async with async_atomic(using=alias):
            await Author.objects.using(alias).acreate(name="ann")
            await async_connections[alias].on_commit(announce)
        self.assertEqual(author_names(), ["ann", "announced"])

    # ---- a lookup never does I/O -------------------------------------------

    async def test_close_inside_nested_django_atomic_is_discarded_at_exit(
        self,
    ) -> None:
        alias = self.alias

        def work() -> None:
            with transaction.atomic(using=alias):
                Author.objects.using(alias).create(name="lost")
                with transaction.atomic(using=alias):
                    connections[alias].close()
                    # Still closed for the rest of the block, as in Django.
                    self.assertTrue(connections[alias].closed_in_transaction)

        await run_native(work)
        connection = async_connections[alias]
        self.assertFalse(connection.in_atomic_block)
        self.assertIsNone(connection.connection)
        await Author.objects.using(alias).acreate(name="next")
        self.assertEqual(author_names(), ["next"])

    # ---- cursors are closed by their owner ----------------------------------

    async def test_break_out_of_aiterator_leaves_the_cursor_to_its_owner(
        self,
    ) -> None:
        alias = self.alias
        for name in ("a", "b", "c"):
            await Author.objects.using(alias).acreate(name=name)
        problems: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: problems.append(context))
        self.addCleanup(loop.set_exception_handler, None)

        iterator = Author.objects.using(alias).order_by("name").aiterator(1)
        async for author in iterator:
            self.assertEqual(author.name, "a")
            break
        connection = async_connections[alias]
        self.assertEqual(len(await driver_cursors(connection)), 1)
        # The async generator's finalizer closes it in a task of its own.
        del iterator
        gc.collect()
        for _ in range(20):
            await asyncio.sleep(0)
        self.assertEqual(problems, [])
        self.assertEqual(len(await driver_cursors(connection)), 1)
        # The owner's next use closes it.
        self.assertEqual(await Author.objects.using(alias).acount(), 3)
        self.assertEqual(await driver_cursors(connection), [])


class PlainBridgeRuleTests(BridgeRuleScenarios):
    alias = "bridge_plain"


class PooledBridgeRuleTests(BridgeRuleScenarios):
    alias = "bridge_pooled"
    alias_options = POOLED


del BridgeRuleScenarios

if __name__ == "__main__":
    unittest.main()
