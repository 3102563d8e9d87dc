"""async_atomic and the async twins of django.db.transaction.

The first classes port Django's own ``tests/transactions/tests.py`` (same
class and test names) to async code, with raw SQL on ``testapp_account``
instead of the ``Reporter`` model. The others cover the forms of
``async_atomic``, its semantics point by point, the module-level functions,
and how transactions and tasks relate.

What a test claims is checked in the database: rows seen by the task's own
connection (inside a transaction) or by a fresh session from outside
(``committed_names``: what is really committed), and session states in
``pg_stat_activity``.
"""

from __future__ import annotations

import asyncio
import unittest
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any

import psycopg
from django.db import (
    DatabaseError,
    Error,
    IntegrityError,
    InternalError,
)

import scenarios
from aliases import backend_pid
from django_async_backend.db import async_connections
from django_async_backend.db.transaction import (
    AsyncAtomic,
    TransactionManagementError,
    async_atomic,
    clean_savepoints,
    commit,
    get_autocommit,
    get_connection,
    get_rollback,
    mark_for_rollback_on_error,
    on_commit,
    rollback,
    savepoint,
    savepoint_commit,
    savepoint_rollback,
    set_autocommit,
    set_rollback,
)
from scenarios import committed_names, conn, execute, fetchall
from support import outside, session_state, terminate

FORBIDDEN_IN_ATOMIC = "This is forbidden when an 'atomic' block is active."
BROKEN_TRANSACTION = (
    "An error occurred in the current transaction. You can't "
    "execute queries until the end of the 'atomic' block."
)
DURABLE_NESTED = "A durable atomic block cannot be nested within another atomic block."


# ----------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------


async def add(name: str, balance: int = 0, using: str = "default") -> None:
    """Insert an account (the ``Reporter.objects.create`` of the ports)."""
    await execute(
        "INSERT INTO testapp_account (name, balance) VALUES (%s, %s)",
        [name, balance],
        using,
    )


async def names(using: str = "default") -> list[str]:
    """Account names as this task's connection sees them (its transaction too)."""
    rows = await fetchall("SELECT name FROM testapp_account ORDER BY name", using=using)
    return [row[0] for row in rows]


class Oops(Exception):
    pass


class DatabaseTestCase(scenarios.DatabaseTestCase):
    tables = ("testapp_account", "testapp_item")


@asynccontextmanager
async def manual_mode(using: str = "default") -> AsyncIterator[None]:
    """Autocommit off for the block; whatever is left uncommitted is dropped."""
    await set_autocommit(False, using=using)
    try:
        yield
    finally:
        # A query after the last commit/rollback starts a transaction: roll
        # it back before restoring autocommit (psycopg refuses otherwise).
        await rollback(using=using)
        await set_autocommit(True, using=using)


# ----------------------------------------------------------------------------
# Ports of Django's tests/transactions/tests.py
# ----------------------------------------------------------------------------


class AtomicTests(DatabaseTestCase):
    """Tests for the async_atomic decorator and context manager.

    The tests make assertions on internal attributes where Django's do,
    because there isn't a robust way to ask the database for its current
    transaction state.

    Each test runs inside ``self.enclosing()``: nothing here, an atomic block
    or autocommit turned off in the two classes below. (Django's enter theirs
    in setUp; here setUp runs in another task, on another connection.)
    """

    def enclosing(self) -> AbstractAsyncContextManager[Any]:
        return nullcontext()

    async def test_decorator_syntax_commit(self) -> None:
        async with self.enclosing():

            @async_atomic
            async def make_reporter() -> str:
                await add("Tintin")
                return "Tintin"

            self.assertEqual(await make_reporter(), "Tintin")
            self.assertEqual(await names(), ["Tintin"])

    async def test_decorator_syntax_rollback(self) -> None:
        async with self.enclosing():

            @async_atomic
            async def make_reporter() -> None:
                await add("Haddock")
                raise Exception("Oops, that's his last name")

            with self.assertRaisesRegex(Exception, "Oops"):
                await make_reporter()
            self.assertEqual(await names(), [])

    async def test_alternate_decorator_syntax_commit(self) -> None:
        async with self.enclosing():

            @async_atomic()
            async def make_reporter() -> str:
                await add("Tintin")
                return "Tintin"

            self.assertEqual(await make_reporter(), "Tintin")
            self.assertEqual(await names(), ["Tintin"])

    async def test_alternate_decorator_syntax_rollback(self) -> None:
        async with self.enclosing():

            @async_atomic()
            async def make_reporter() -> None:
                await add("Haddock")
                raise Exception("Oops, that's his last name")

            with self.assertRaisesRegex(Exception, "Oops"):
                await make_reporter()
            self.assertEqual(await names(), [])

    async def test_commit(self) -> None:
        async with self.enclosing():
            async with async_atomic():
                await add("Tintin")
            self.assertEqual(await names(), ["Tintin"])

    async def test_rollback(self) -> None:
        async with self.enclosing():
            with self.assertRaisesRegex(Exception, "Oops"):
                async with async_atomic():
                    await add("Haddock")
                    raise Exception("Oops, that's his last name")
            self.assertEqual(await names(), [])

    async def test_nested_commit_commit(self) -> None:
        async with self.enclosing():
            async with async_atomic():
                await add("Tintin")
                async with async_atomic():
                    await add("Archibald Haddock")
            self.assertEqual(await names(), ["Archibald Haddock", "Tintin"])

    async def test_nested_commit_rollback(self) -> None:
        async with self.enclosing():
            async with async_atomic():
                await add("Tintin")
                with self.assertRaisesRegex(Exception, "Oops"):
                    async with async_atomic():
                        await add("Haddock")
                        raise Exception("Oops, that's his last name")
            self.assertEqual(await names(), ["Tintin"])

    async def test_nested_rollback_commit(self) -> None:
        async with self.enclosing():
            with self.assertRaisesRegex(Exception, "Oops"):
                async with async_atomic():
                    await add("Tintin")
                    async with async_atomic():
                        await add("Haddock")
                    raise Exception("Oops, that's his first name")
            self.assertEqual(await names(), [])

    async def test_nested_rollback_rollback(self) -> None:
        async with self.enclosing():
            with self.assertRaisesRegex(Exception, "Oops"):
                async with async_atomic():
                    await add("Tintin")
                    with self.assertRaisesRegex(Exception, "Oops"):
                        async with async_atomic():
                            await add("Haddock")
                        raise Exception("Oops, that's his last name")
                    raise Exception("Oops, that's his first name")
            self.assertEqual(await names(), [])

    async def test_merged_commit_commit(self) -> None:
        async with self.enclosing():
            async with async_atomic():
                await add("Tintin")
                async with async_atomic(savepoint=False):
                    await add("Archibald Haddock")
            self.assertEqual(await names(), ["Archibald Haddock", "Tintin"])

    async def test_merged_commit_rollback(self) -> None:
        async with self.enclosing():
            async with async_atomic():
                await add("Tintin")
                with self.assertRaisesRegex(Exception, "Oops"):
                    async with async_atomic(savepoint=False):
                        await add("Haddock")
                        raise Exception("Oops, that's his last name")
            # Writes in the outer block are rolled back too.
            self.assertEqual(await names(), [])

    async def test_merged_rollback_commit(self) -> None:
        async with self.enclosing():
            with self.assertRaisesRegex(Exception, "Oops"):
                async with async_atomic():
                    await add("Tintin")
                    async with async_atomic(savepoint=False):
                        await add("Haddock")
                    raise Exception("Oops, that's his first name")
            self.assertEqual(await names(), [])

    async def test_merged_rollback_rollback(self) -> None:
        async with self.enclosing():
            with self.assertRaisesRegex(Exception, "Oops"):
                async with async_atomic():
                    await add("Tintin")
                    with self.assertRaisesRegex(Exception, "Oops"):
                        async with async_atomic(savepoint=False):
                            await add("Haddock")
                        raise Exception("Oops, that's his last name")
                    raise Exception("Oops, that's his first name")
            self.assertEqual(await names(), [])

    async def test_reuse_commit_commit(self) -> None:
        async with self.enclosing():
            atomic = async_atomic()
            async with atomic:
                await add("Tintin")
                async with atomic:
                    await add("Archibald Haddock")
            self.assertEqual(await names(), ["Archibald Haddock", "Tintin"])

    async def test_reuse_commit_rollback(self) -> None:
        async with self.enclosing():
            atomic = async_atomic()
            async with atomic:
                await add("Tintin")
                with self.assertRaisesRegex(Exception, "Oops"):
                    async with atomic:
                        await add("Haddock")
                        raise Exception("Oops, that's his last name")
            self.assertEqual(await names(), ["Tintin"])

    async def test_reuse_rollback_commit(self) -> None:
        async with self.enclosing():
            atomic = async_atomic()
            with self.assertRaisesRegex(Exception, "Oops"):
                async with atomic:
                    await add("Tintin")
                    async with atomic:
                        await add("Haddock")
                    raise Exception("Oops, that's his first name")
            self.assertEqual(await names(), [])

    async def test_reuse_rollback_rollback(self) -> None:
        async with self.enclosing():
            atomic = async_atomic()
            with self.assertRaisesRegex(Exception, "Oops"):
                async with atomic:
                    await add("Tintin")
                    with self.assertRaisesRegex(Exception, "Oops"):
                        async with atomic:
                            await add("Haddock")
                        raise Exception("Oops, that's his last name")
                    raise Exception("Oops, that's his first name")
            self.assertEqual(await names(), [])

    async def test_force_rollback(self) -> None:
        async with self.enclosing():
            async with async_atomic():
                await add("Tintin")
                # atomic block shouldn't rollback, but force it.
                self.assertFalse(get_rollback())
                set_rollback(True)
            self.assertEqual(await names(), [])

    async def test_prevent_rollback(self) -> None:
        async with self.enclosing():
            async with async_atomic():
                await add("Tintin")
                sid = await savepoint()
                assert sid is not None
                # trigger a database error inside an inner atomic without savepoint
                with self.assertRaises(DatabaseError):
                    async with async_atomic(savepoint=False):
                        await execute("SELECT no_such_col FROM testapp_account")
                # prevent atomic from rolling back since we're recovering manually
                self.assertTrue(get_rollback())
                set_rollback(False)
                await savepoint_rollback(sid)
            self.assertEqual(await names(), ["Tintin"])

    async def test_failure_on_exit_transaction(self) -> None:
        async with self.enclosing():
            async with async_atomic():
                with self.assertRaises(DatabaseError):
                    async with async_atomic():
                        await add("Tintin")
                        self.assertEqual(len(await names()), 1)
                        # Incorrect savepoint id to provoke a database error.
                        conn().savepoint_ids.append("12")
                with self.assertRaises(TransactionManagementError):
                    await names()
                self.assertIs(conn().needs_rollback, True)
                if conn().savepoint_ids:
                    conn().savepoint_ids.pop()
            self.assertEqual(await names(), [])


class AtomicInsideTransactionTests(AtomicTests):
    """All basic tests for atomic should also pass within an existing transaction."""

    def enclosing(self) -> AbstractAsyncContextManager[Any]:
        return async_atomic()


class AtomicWithoutAutocommitTests(AtomicTests):
    """All basic tests for atomic should also pass when autocommit is turned off."""

    def enclosing(self) -> AbstractAsyncContextManager[Any]:
        return manual_mode()


class AtomicMergeTests(DatabaseTestCase):
    """Test merging transactions with savepoint=False."""

    async def count(self) -> int:
        rows = await fetchall("SELECT count(*) FROM testapp_account")
        return int(rows[0][0])

    async def test_merged_outer_rollback(self) -> None:
        async with async_atomic():
            await add("Tintin")
            async with async_atomic(savepoint=False):
                await add("Archibald Haddock")
                with self.assertRaisesRegex(Exception, "Oops"):
                    async with async_atomic(savepoint=False):
                        await add("Calculus")
                        raise Exception("Oops, that's his last name")
                # The third insert couldn't be roll back. Temporarily mark the
                # connection as not needing rollback to check it.
                self.assertTrue(get_rollback())
                set_rollback(False)
                self.assertEqual(await self.count(), 3)
                set_rollback(True)
            # The second insert couldn't be roll back. Temporarily mark the
            # connection as not needing rollback to check it.
            self.assertTrue(get_rollback())
            set_rollback(False)
            self.assertEqual(await self.count(), 3)
            set_rollback(True)
        # The first block has a savepoint and must roll back.
        self.assertEqual(await names(), [])

    async def test_merged_inner_savepoint_rollback(self) -> None:
        async with async_atomic():
            await add("Tintin")
            async with async_atomic():
                await add("Archibald Haddock")
                with self.assertRaisesRegex(Exception, "Oops"):
                    async with async_atomic(savepoint=False):
                        await add("Calculus")
                        raise Exception("Oops, that's his last name")
                # The third insert couldn't be roll back. Temporarily mark the
                # connection as not needing rollback to check it.
                self.assertTrue(get_rollback())
                set_rollback(False)
                self.assertEqual(await self.count(), 3)
                set_rollback(True)
            # The second block has a savepoint and must roll back.
            self.assertEqual(await self.count(), 1)
        self.assertEqual(await names(), ["Tintin"])


class AtomicErrorsTests(DatabaseTestCase):
    async def test_atomic_prevents_setting_autocommit(self) -> None:
        autocommit = await get_autocommit()
        async with async_atomic():
            with self.assertRaisesRegex(
                TransactionManagementError, FORBIDDEN_IN_ATOMIC
            ):
                await set_autocommit(not autocommit)
        # Make sure autocommit wasn't changed.
        self.assertEqual(conn().autocommit, autocommit)
        self.assertEqual(await get_autocommit(), autocommit)

    async def test_atomic_prevents_calling_transaction_methods(self) -> None:
        async with async_atomic():
            with self.assertRaisesRegex(
                TransactionManagementError, FORBIDDEN_IN_ATOMIC
            ):
                await commit()
            with self.assertRaisesRegex(
                TransactionManagementError, FORBIDDEN_IN_ATOMIC
            ):
                await rollback()

    async def test_atomic_prevents_queries_in_broken_transaction(self) -> None:
        await add("Archibald Haddock", balance=1)
        async with async_atomic():
            # What Model.save() does around its INSERT.
            with self.assertRaises(IntegrityError):
                async with mark_for_rollback_on_error():
                    await add("Archibald Haddock", balance=2)
            # The transaction is marked as needing rollback.
            with self.assertRaisesRegex(
                TransactionManagementError, BROKEN_TRANSACTION
            ) as cm:
                await execute(
                    "UPDATE testapp_account SET balance = 3 WHERE name = %s",
                    ["Archibald Haddock"],
                )
        self.assertIsInstance(cm.exception.__cause__, IntegrityError)
        self.assertEqual(
            outside("SELECT name, balance FROM testapp_account"),
            [("Archibald Haddock", 1)],
        )

    async def test_atomic_prevents_queries_in_broken_transaction_after_client_close(
        self,
    ) -> None:
        async with async_atomic():
            await add("Archibald Haddock")
            await conn().close()
            # The connection is closed and the transaction is marked as
            # needing rollback. PostgreSQL refuses cursors on closed
            # connections.
            with self.assertRaises(Error):
                await add("Cuthbert Calculus")
        # The connection is usable again.
        self.assertEqual(await names(), [])
        self.assertEqual(committed_names(), [])


class AtomicMiscTests(DatabaseTestCase):
    async def test_wrap_callable_instance(self) -> None:
        """#20028 -- async_atomic must support wrapping async callable instances."""

        class Callable:
            async def __call__(self) -> None:
                await add("called")

        # Must not raise an exception...
        wrapped = async_atomic(Callable())
        # ...and the call runs in a transaction that commits.
        await wrapped()
        self.assertEqual(committed_names(), ["called"])

    async def test_atomic_does_not_leak_savepoints_on_failure(self) -> None:
        """#23074 -- Savepoints must be released after rollback."""
        # Expect an error when rolling back a savepoint that doesn't exist.
        # Done outside of the transaction block to ensure proper recovery.
        with self.assertRaises(Error):
            # Start a plain transaction.
            async with async_atomic():
                # Swallow the intentional error raised in the sub-transaction.
                with self.assertRaisesRegex(Exception, "Oops"):
                    # Start a sub-transaction with a savepoint.
                    async with async_atomic():
                        sid = conn().savepoint_ids[-1]
                        raise Exception("Oops")
                # This is expected to fail because the savepoint no longer exists.
                await conn().savepoint_rollback(sid)
        # The connection recovered.
        self.assertFalse(conn().in_atomic_block)
        self.assertEqual(await names(), [])

    async def test_mark_for_rollback_on_error_in_transaction(self) -> None:
        async with async_atomic(savepoint=False):
            # Swallow the intentional error raised.
            with self.assertRaisesRegex(Exception, "Oops"):
                # Wrap in `mark_for_rollback_on_error` to check if the
                # transaction is marked broken.
                async with mark_for_rollback_on_error():
                    # Ensure that we are still in a good state.
                    self.assertFalse(get_rollback())
                    raise Exception("Oops")
            # mark_for_rollback_on_error marked the transaction as broken …
            self.assertTrue(get_rollback())
            # … and further queries fail.
            msg = "You can't execute queries until the end of the 'atomic' block."
            with self.assertRaisesRegex(TransactionManagementError, msg):
                await add("Tintin")
        # Transaction errors are reset at the end of an transaction, so this
        # should just work.
        await add("Tintin")
        self.assertEqual(committed_names(), ["Tintin"])

    async def test_mark_for_rollback_on_error_in_autocommit(self) -> None:
        self.assertTrue(await get_autocommit())
        # Swallow the intentional error raised.
        with self.assertRaisesRegex(Exception, "Oops"):
            # Wrap in `mark_for_rollback_on_error` to check if the transaction
            # is marked broken.
            async with mark_for_rollback_on_error():
                # Ensure that we are still in a good state.
                self.assertFalse(get_connection().needs_rollback)
                raise Exception("Oops")
        # Ensure that `mark_for_rollback_on_error` did not mark the transaction
        # as broken, since we are in autocommit mode …
        self.assertFalse(get_connection().needs_rollback)
        # … and further queries work nicely.
        await add("Tintin")
        self.assertEqual(committed_names(), ["Tintin"])


class NonAutocommitTests(DatabaseTestCase):
    # Django sets autocommit off in setUp; here asyncSetUp runs in another
    # task (on another connection), so each test does it with manual_mode().

    async def test_orm_query_after_error_and_rollback(self) -> None:
        """Queries are allowed after an error and a rollback in manual mode (#27504)."""
        async with manual_mode():
            await add("Archibald Haddock")
            with self.assertRaises(IntegrityError):
                await add("Archibald Haddock")
            await rollback()
            self.assertEqual(await names(), [])

    async def test_orm_query_without_autocommit(self) -> None:
        """#24921 -- Queries must be possible after set_autocommit(False)."""
        async with manual_mode():
            await add("Tintin")
            self.assertEqual(await names(), ["Tintin"])
        self.assertEqual(committed_names(), [])


class DurableTransactionTests(DatabaseTestCase):
    async def test_commit(self) -> None:
        async with async_atomic(durable=True):
            await add("Tintin")
        self.assertEqual(committed_names(), ["Tintin"])

    async def test_nested_outer_durable(self) -> None:
        async with async_atomic(durable=True):
            await add("Tintin")
            async with async_atomic():
                await add("Archibald Haddock")
        self.assertEqual(committed_names(), ["Archibald Haddock", "Tintin"])

    async def test_nested_both_durable(self) -> None:
        async with async_atomic(durable=True):
            with self.assertRaisesRegex(RuntimeError, DURABLE_NESTED):
                async with async_atomic(durable=True):
                    pass

    async def test_nested_inner_durable(self) -> None:
        async with async_atomic():
            with self.assertRaisesRegex(RuntimeError, DURABLE_NESTED):
                async with async_atomic(durable=True):
                    pass

    async def test_sequence_of_durables(self) -> None:
        async with async_atomic(durable=True):
            await add("Tintin 1")
        self.assertEqual(committed_names(), ["Tintin 1"])
        async with async_atomic(durable=True):
            await add("Tintin 2")
        self.assertEqual(committed_names(), ["Tintin 1", "Tintin 2"])


# ----------------------------------------------------------------------------
# The forms of async_atomic
# ----------------------------------------------------------------------------


class AtomicFormsTests(DatabaseTestCase):
    async def test_context_manager_commits_on_the_default_alias(self) -> None:
        async with async_atomic() as block:
            self.assertIsInstance(block, AsyncAtomic)
            self.assertTrue(conn().in_atomic_block)
            await add("a")
        self.assertEqual(committed_names(), ["a"])

    async def test_all_keyword_arguments_on_another_alias(self) -> None:
        default_pid = await backend_pid(conn("default"))
        async with async_atomic(using="other", savepoint=False, durable=True):
            other_pid = await backend_pid(conn("other"))
            await add("on-other", using="other")
            # The transaction is open on "other", and only there.
            self.assertTrue(conn("other").in_atomic_block)
            self.assertFalse(conn("default").in_atomic_block)
            self.assertEqual(session_state(other_pid), "idle in transaction")
            self.assertEqual(session_state(default_pid), "idle")
            self.assertEqual(committed_names(), [])
        self.assertNotEqual(default_pid, other_pid)
        self.assertEqual(committed_names(), ["on-other"])
        self.assertEqual(session_state(other_pid), "idle")

    async def test_savepoint_false_inner_block_creates_no_savepoint(self) -> None:
        async with async_atomic():
            async with async_atomic(savepoint=False):
                self.assertEqual(conn().savepoint_ids, [None])
            async with async_atomic():
                self.assertEqual(len(conn().savepoint_ids), 1)
                self.assertIsNotNone(conn().savepoint_ids[0])

    async def test_bare_decorator(self) -> None:
        @async_atomic
        async def create(name: str) -> str:
            self.assertTrue(conn().in_atomic_block)
            await add(name)
            return name.upper()

        self.assertEqual(create.__name__, "create")
        self.assertEqual(await create("x"), "X")
        self.assertEqual(committed_names(), ["x"])

    async def test_decorator_with_using(self) -> None:
        @async_atomic(using="other")
        async def create(name: str, fail: bool) -> None:
            self.assertTrue(conn("other").in_atomic_block)
            self.assertFalse(conn("default").in_atomic_block)
            await add(name, using="other")
            if fail:
                raise Oops

        await create("kept", fail=False)
        with self.assertRaises(Oops):
            await create("dropped", fail=True)
        self.assertEqual(committed_names(), ["kept"])

    async def test_decorator_with_all_arguments(self) -> None:
        @async_atomic(using="other", savepoint=False, durable=True)
        async def create() -> None:
            await add("durable", using="other")

        await create()
        self.assertEqual(committed_names(), ["durable"])
        # Durable: calling it inside another block on that alias is refused.
        async with async_atomic(using="other"):
            with self.assertRaisesRegex(RuntimeError, DURABLE_NESTED):
                await create()
        self.assertEqual(committed_names(), ["durable"])

    async def test_decorating_a_sync_function_raises_type_error(self) -> None:
        def sync() -> None:
            pass

        with self.assertRaisesRegex(TypeError, "async functions"):
            async_atomic(sync)  # type: ignore[type-var]
        with self.assertRaisesRegex(TypeError, "async functions"):
            async_atomic(using="other")(sync)  # type: ignore[type-var]

    async def test_decorated_function_runs_in_one_transaction_per_call(self) -> None:
        @async_atomic
        async def create(name: str) -> int:
            await add(name)
            return await backend_pid(conn())

        # Concurrent calls from several tasks: each its own connection and
        # transaction, all committed.
        pids = await asyncio.gather(create("a"), create("b"), create("c"))
        self.assertEqual(len(set(pids)), 3)
        self.assertEqual(committed_names(), ["a", "b", "c"])

    async def test_decorated_functions_nest(self) -> None:
        @async_atomic
        async def inner(fail: bool) -> None:
            await add("inner-fail" if fail else "inner")
            if fail:
                raise Oops

        @async_atomic
        async def outer() -> None:
            await add("outer")
            await inner(False)
            with self.assertRaises(Oops):
                await inner(True)

        await outer()
        self.assertEqual(committed_names(), ["inner", "outer"])


# ----------------------------------------------------------------------------
# The semantics of django.db.transaction.atomic, point by point
# ----------------------------------------------------------------------------


class AtomicSemanticsTests(DatabaseTestCase):
    async def test_outermost_block_begins_and_commits(self) -> None:
        pid = await backend_pid(conn())
        self.assertEqual(session_state(pid), "idle")
        async with async_atomic():
            await add("a")
            self.assertEqual(session_state(pid), "idle in transaction")
            self.assertEqual(await names(), ["a"])
            self.assertEqual(committed_names(), [])
        self.assertEqual(session_state(pid), "idle")
        self.assertEqual(committed_names(), ["a"])
        self.assertTrue(await get_autocommit())
        self.assertFalse(conn().in_atomic_block)

    async def test_outermost_block_rolls_back_on_exception(self) -> None:
        pid = await backend_pid(conn())
        with self.assertRaises(Oops):
            async with async_atomic():
                await add("a")
                raise Oops
        self.assertEqual(session_state(pid), "idle")
        self.assertEqual(committed_names(), [])
        self.assertTrue(await get_autocommit())

    async def test_nested_block_is_a_savepoint(self) -> None:
        async with async_atomic():
            await add("outer-before")
            with self.assertRaises(Oops):
                async with async_atomic():
                    sid = conn().savepoint_ids[-1]
                    self.assertIsNotNone(sid)
                    await add("inner")
                    raise Oops
            # Only the inner block was rolled back, and the outer goes on.
            self.assertEqual(await names(), ["outer-before"])
            await add("outer-after")
            self.assertEqual(committed_names(), [])
        self.assertEqual(committed_names(), ["outer-after", "outer-before"])

    async def test_released_savepoint_keeps_its_rows(self) -> None:
        async with async_atomic():
            async with async_atomic():
                await add("inner")
            self.assertEqual(conn().savepoint_ids, [])
        self.assertEqual(committed_names(), ["inner"])

    async def test_deeply_nested_rollback_stays_at_its_level(self) -> None:
        async with async_atomic():
            await add("level1")
            async with async_atomic():
                await add("level2")
                with self.assertRaises(Oops):
                    async with async_atomic():
                        await add("level3")
                        async with async_atomic():
                            await add("level4")
                        raise Oops
                await add("level2-after")
        self.assertEqual(committed_names(), ["level1", "level2", "level2-after"])

    async def test_exception_is_reraised_unchanged(self) -> None:
        error = Oops("the user's own")
        with self.assertRaises(Oops) as ctx:
            async with async_atomic():
                await add("a")
                raise error
        self.assertIs(ctx.exception, error)
        self.assertIsNone(ctx.exception.__context__)
        self.assertIsNone(ctx.exception.__cause__)
        self.assertEqual(committed_names(), [])

    async def test_exception_from_inner_block_is_reraised_unchanged(self) -> None:
        error = Oops("inner")
        async with async_atomic():
            with self.assertRaises(Oops) as ctx:
                async with async_atomic():
                    raise error
            self.assertIs(ctx.exception, error)
            self.assertIsNone(ctx.exception.__context__)

    async def test_database_error_propagates_unchanged_and_rolls_back(self) -> None:
        await add("dup")
        with self.assertRaises(IntegrityError) as ctx:
            async with async_atomic():
                await add("new")
                await add("dup")
        self.assertIsInstance(ctx.exception.__cause__, psycopg.errors.UniqueViolation)
        self.assertEqual(committed_names(), ["dup"])

    async def test_failed_savepoint_false_block_dooms_the_outer_block(self) -> None:
        async with async_atomic():
            await add("outer")
            with self.assertRaises(Oops):
                async with async_atomic(savepoint=False):
                    await add("inner")
                    raise Oops
            self.assertTrue(get_rollback())
        # The outer block left without an exception of its own...
        self.assertFalse(conn().in_atomic_block)
        # ...but everything was rolled back.
        self.assertEqual(committed_names(), [])
        self.assertTrue(await get_autocommit())

    async def test_query_after_failed_savepoint_false_block_raises_tme(self) -> None:
        async with async_atomic():
            with self.assertRaises(Oops):
                async with async_atomic(savepoint=False):
                    raise Oops
            with self.assertRaisesRegex(TransactionManagementError, BROKEN_TRANSACTION):
                await add("refused")
            with self.assertRaisesRegex(TransactionManagementError, BROKEN_TRANSACTION):
                await names()
        self.assertEqual(committed_names(), [])
        # After the block, the connection works again.
        await add("after")
        self.assertEqual(committed_names(), ["after"])

    async def test_savepoint_false_failure_inside_savepoint_rolls_back_that_savepoint(
        self,
    ) -> None:
        async with async_atomic():
            await add("outer")
            async with async_atomic():
                await add("middle")
                with self.assertRaises(Oops):
                    async with async_atomic(savepoint=False):
                        await add("inner")
                        raise Oops
            # The middle block rolled back to its savepoint; the outer is fine.
            self.assertFalse(get_rollback())
            await add("outer-after")
        self.assertEqual(committed_names(), ["outer", "outer-after"])

    async def test_query_after_database_error_without_savepoint_fails_like_django(
        self,
    ) -> None:
        await add("dup")
        async with async_atomic():
            await add("first")
            with self.assertRaises(IntegrityError):
                await add("dup")
            # No atomic block marked anything: the server refuses, as with
            # stock Django on psycopg.
            with self.assertRaisesRegex(
                InternalError, "current transaction is aborted"
            ):
                await names()
        self.assertEqual(committed_names(), ["dup"])
        # The connection is usable after the block.
        await add("after")
        self.assertEqual(committed_names(), ["after", "dup"])

    async def test_durable_block_inside_another_raises_runtime_error(self) -> None:
        ran = False
        async with async_atomic():
            await add("outer")
            with self.assertRaisesRegex(RuntimeError, DURABLE_NESTED):
                async with async_atomic(durable=True):
                    ran = True
            # The refusal changed nothing: the outer block goes on.
            self.assertFalse(get_rollback())
            self.assertEqual(len(conn().atomic_blocks), 1)
            await add("outer-after")
        self.assertFalse(ran)
        self.assertEqual(committed_names(), ["outer", "outer-after"])

    async def test_failed_commit_raises_and_rolls_back(self) -> None:
        await execute(
            "CREATE TEMPORARY TABLE deferred_codes (code int "
            "UNIQUE DEFERRABLE INITIALLY DEFERRED)"
        )
        ran: list[str] = []
        pid = await backend_pid(conn())
        with self.assertRaises(IntegrityError) as ctx:
            async with async_atomic():
                await add("not committed")
                await execute("INSERT INTO deferred_codes VALUES (1), (1)")
                await conn().on_commit(lambda: ran.append("hook"))
        self.assertIsInstance(ctx.exception.__cause__, psycopg.errors.UniqueViolation)
        self.assertEqual(committed_names(), [])
        self.assertEqual(ran, [])
        # The connection is the same session, out of the transaction, usable.
        self.assertEqual(session_state(pid), "idle")
        self.assertFalse(conn().in_atomic_block)
        self.assertTrue(await get_autocommit())
        self.assertEqual(await backend_pid(conn()), pid)
        self.assertEqual(await fetchall("SELECT count(*) FROM deferred_codes"), [(0,)])
        async with async_atomic():
            await add("next")
        self.assertEqual(committed_names(), ["next"])

    async def test_deferred_constraint_is_checked_at_the_outermost_commit_only(
        self,
    ) -> None:
        await execute(
            "CREATE TEMPORARY TABLE deferred_codes (code int "
            "UNIQUE DEFERRABLE INITIALLY DEFERRED)"
        )
        with self.assertRaises(IntegrityError):
            async with async_atomic():
                async with async_atomic():
                    # Releasing the savepoint doesn't check it...
                    await execute("INSERT INTO deferred_codes VALUES (1), (1)")
                await add("after-inner")
        # ...the COMMIT does, and nothing is committed.
        self.assertEqual(committed_names(), [])

    async def test_user_exception_is_not_shadowed_by_a_failed_rollback(self) -> None:
        error = Oops("mine")
        with self.assertRaises(Oops) as ctx:
            async with async_atomic():
                await add("lost")
                terminate(await backend_pid(conn()))
                # The ROLLBACK on the dead session fails; that must not hide
                # the user's exception.
                raise error
        self.assertIs(ctx.exception, error)
        self.assertEqual(committed_names(), [])
        # The next block on this task gets a new connection and works.
        async with async_atomic():
            await add("next")
        self.assertEqual(committed_names(), ["next"])

    async def test_user_exception_in_savepoint_not_shadowed_by_failed_rollback(
        self,
    ) -> None:
        error = Oops("mine")
        with self.assertRaises(Oops) as ctx:
            async with async_atomic():
                await add("lost")
                async with async_atomic():
                    terminate(await backend_pid(conn()))
                    # ROLLBACK TO SAVEPOINT fails, then the outer ROLLBACK.
                    raise error
        self.assertIs(ctx.exception, error)
        self.assertEqual(committed_names(), [])
        async with async_atomic():
            await add("next")
        self.assertEqual(committed_names(), ["next"])

    async def test_set_rollback_rolls_back_without_exception(self) -> None:
        async with async_atomic():
            await add("a")
            set_rollback(True)
        self.assertEqual(committed_names(), [])
        self.assertFalse(conn().needs_rollback)

    async def test_block_state_is_reset_after_each_outermost_block(self) -> None:
        with self.assertRaises(Oops):
            async with async_atomic():
                async with async_atomic():
                    raise Oops
                raise Oops
        connection = conn()
        self.assertFalse(connection.in_atomic_block)
        self.assertEqual(connection.savepoint_ids, [])
        self.assertEqual(connection.atomic_blocks, [])
        self.assertFalse(connection.needs_rollback)
        self.assertTrue(connection.commit_on_exit)
        self.assertEqual(connection.run_on_commit, [])
        self.assertFalse(connection.closed_in_transaction)
        self.assertTrue(connection.autocommit)


# ----------------------------------------------------------------------------
# The module-level functions
# ----------------------------------------------------------------------------


class TransactionFunctionsTests(DatabaseTestCase):
    async def test_get_connection_is_the_tasks_wrapper(self) -> None:
        self.assertIs(get_connection(), async_connections["default"])
        self.assertIs(get_connection("other"), async_connections["other"])

    async def test_autocommit_is_on_by_default(self) -> None:
        self.assertTrue(await get_autocommit())
        self.assertTrue(await get_autocommit(using="other"))

    async def test_set_autocommit_false_then_commit(self) -> None:
        pid = await backend_pid(conn())
        async with manual_mode():
            self.assertFalse(await get_autocommit())
            await add("a")
            self.assertEqual(session_state(pid), "idle in transaction")
            self.assertEqual(committed_names(), [])
            await commit()
            self.assertEqual(committed_names(), ["a"])
            self.assertEqual(session_state(pid), "idle")
            # Still manual: the next statement opens a new transaction.
            await add("b")
            self.assertEqual(session_state(pid), "idle in transaction")
        # manual_mode() rolled "b" back before switching autocommit on.
        self.assertTrue(await get_autocommit())
        self.assertEqual(committed_names(), ["a"])
        self.assertEqual(session_state(pid), "idle")

    async def test_rollback_discards_a_manual_transaction(self) -> None:
        async with manual_mode():
            await add("a")
            await rollback()
            self.assertEqual(await names(), [])
        self.assertEqual(committed_names(), [])

    async def test_set_autocommit_on_another_alias(self) -> None:
        async with manual_mode(using="other"):
            self.assertFalse(await get_autocommit(using="other"))
            self.assertTrue(await get_autocommit())
            await add("a", using="other")
            await commit(using="other")
            await add("b", using="other")
            await rollback(using="other")
        self.assertEqual(committed_names(), ["a"])

    async def test_savepoint_rollback_in_manual_transaction(self) -> None:
        async with manual_mode():
            await add("before")
            sid = await savepoint()
            self.assertIsNotNone(sid)
            assert sid is not None
            await add("inside")
            await savepoint_rollback(sid)
            await add("after")
            await commit()
        self.assertEqual(committed_names(), ["after", "before"])

    async def test_savepoint_commit_in_manual_transaction(self) -> None:
        async with manual_mode():
            sid = await savepoint()
            assert sid is not None
            await add("inside")
            await savepoint_commit(sid)
            # Released: it can't be rolled back to any more.
            with self.assertRaisesRegex(DatabaseError, "does not exist"):
                await savepoint_rollback(sid)
            await rollback()
            # The release kept the rows: commit them this time.
            sid = await savepoint()
            assert sid is not None
            await add("inside")
            await savepoint_commit(sid)
            await commit()
        self.assertEqual(committed_names(), ["inside"])

    async def test_savepoint_functions_in_atomic_block(self) -> None:
        async with async_atomic():
            await add("a")
            sid = await savepoint()
            assert sid is not None
            await add("b")
            await savepoint_rollback(sid)
            sid = await savepoint()
            assert sid is not None
            await add("c")
            await savepoint_commit(sid)
        self.assertEqual(committed_names(), ["a", "c"])

    async def test_savepoint_in_autocommit_mode_is_none_and_noop(self) -> None:
        self.assertIsNone(await savepoint())
        # Nothing to roll back or release in autocommit mode.
        await add("a")
        await savepoint_rollback("s_missing")
        await savepoint_commit("s_missing")
        self.assertEqual(committed_names(), ["a"])

    async def test_clean_savepoints_resets_the_counter(self) -> None:
        async with async_atomic():
            first = await savepoint()
            await savepoint()
            self.assertEqual(conn().savepoint_state, 2)
            clean_savepoints()
            self.assertEqual(conn().savepoint_state, 0)
            self.assertEqual(await savepoint(), first)

    async def test_get_and_set_rollback_in_block(self) -> None:
        async with async_atomic():
            await add("a")
            self.assertFalse(get_rollback())
            set_rollback(True)
            self.assertTrue(get_rollback())
            self.assertTrue(conn().needs_rollback)
        # Rolled back, without an exception.
        self.assertEqual(committed_names(), [])

    async def test_set_rollback_false_cancels_the_doom(self) -> None:
        async with async_atomic():
            await add("a")
            set_rollback(True)
            set_rollback(False)
        self.assertEqual(committed_names(), ["a"])

    async def test_set_rollback_in_nested_block_rolls_back_that_block_only(
        self,
    ) -> None:
        async with async_atomic():
            await add("outer")
            async with async_atomic():
                await add("inner")
                set_rollback(True)
            self.assertFalse(get_rollback())
        self.assertEqual(committed_names(), ["outer"])

    async def test_get_and_set_rollback_on_another_alias(self) -> None:
        async with async_atomic(using="other"):
            await add("other", using="other")
            self.assertFalse(get_rollback(using="other"))
            set_rollback(True, using="other")
            self.assertTrue(get_rollback(using="other"))
        self.assertEqual(committed_names(), [])

    async def test_rollback_flag_outside_a_block_is_refused(self) -> None:
        msg = "The rollback flag doesn't work outside of an 'atomic' block."
        with self.assertRaisesRegex(TransactionManagementError, msg):
            get_rollback()
        with self.assertRaisesRegex(TransactionManagementError, msg):
            set_rollback(True)

    async def test_mark_for_rollback_on_error_marks_the_block(self) -> None:
        error = Oops()
        async with async_atomic():
            await add("a")
            with self.assertRaises(Oops) as ctx:
                async with mark_for_rollback_on_error():
                    raise error
            self.assertIs(ctx.exception, error)
            self.assertTrue(get_rollback())
            self.assertIs(conn().rollback_exc, error)
        self.assertEqual(committed_names(), [])

    async def test_mark_for_rollback_on_error_without_error_changes_nothing(
        self,
    ) -> None:
        async with async_atomic():
            async with mark_for_rollback_on_error():
                await add("a")
            self.assertFalse(get_rollback())
        self.assertEqual(committed_names(), ["a"])

    async def test_mark_for_rollback_on_error_on_another_alias(self) -> None:
        async with async_atomic(using="other"), async_atomic():
            await add("other", using="other")
            await add("default")
            with self.assertRaises(Oops):
                async with mark_for_rollback_on_error(using="other"):
                    raise Oops
            self.assertTrue(get_rollback(using="other"))
            self.assertFalse(get_rollback())
        self.assertEqual(committed_names(), ["default"])

    async def test_module_on_commit_runs_after_commit(self) -> None:
        ran: list[list[str]] = []
        async with async_atomic():
            await add("a")
            await on_commit(lambda: ran.append(committed_names()))
            self.assertEqual(ran, [])
        # The callback ran after the commit: it saw the row from outside.
        self.assertEqual(ran, [["a"]])

    async def test_module_on_commit_with_using(self) -> None:
        ran: list[str] = []
        async with async_atomic(using="other"):
            async with async_atomic():
                await on_commit(lambda: ran.append("other"), using="other")
                await on_commit(lambda: ran.append("default"))
            # The default transaction committed: only its callback ran.
            self.assertEqual(ran, ["default"])
        self.assertEqual(ran, ["default", "other"])

    async def test_module_on_commit_robust(self) -> None:
        ran: list[str] = []

        def fail() -> None:
            raise Oops("robust")

        with self.assertLogs("django.db.backends.base", "ERROR"):
            async with async_atomic():
                await on_commit(fail, robust=True)
                await on_commit(lambda: ran.append("next"))
        self.assertEqual(ran, ["next"])


# ----------------------------------------------------------------------------
# Transactions and tasks
# ----------------------------------------------------------------------------


CHILD_REFUSED = r"inside async_atomic\(\).*independent_connection"


class TaskIsolationTests(DatabaseTestCase):
    async def test_transaction_belongs_to_the_tasks_connection(self) -> None:
        async def work(name: str, fail: bool) -> int:
            with self.assertRaises(Oops) if fail else nullcontext():
                async with async_atomic():
                    await add(name)
                    pid = await backend_pid(conn())
                    # Both transactions are open at the same time.
                    await asyncio.sleep(0.05)
                    if fail:
                        raise Oops
            return pid

        pids = await asyncio.gather(work("kept", False), work("dropped", True))
        self.assertNotEqual(pids[0], pids[1])
        self.assertEqual(committed_names(), ["kept"])

    async def test_sibling_task_cannot_see_uncommitted_rows(self) -> None:
        written = asyncio.Event()
        read = asyncio.Event()
        seen: list[list[str]] = []

        async def writer() -> None:
            async with async_atomic():
                await add("uncommitted")
                written.set()
                await read.wait()

        async def reader() -> None:
            await written.wait()
            seen.append(await names())
            read.set()

        await asyncio.gather(writer(), reader())
        self.assertEqual(seen, [[]])
        self.assertEqual(committed_names(), ["uncommitted"])

    async def test_child_on_another_alias_cannot_see_uncommitted_rows(self) -> None:
        async def read_other() -> list[str]:
            return await names(using="other")

        async with async_atomic():
            await add("uncommitted")
            # Another alias is another connection, usable from a child task.
            self.assertEqual(await asyncio.create_task(read_other()), [])
            self.assertEqual(await names(), ["uncommitted"])
        self.assertEqual(await asyncio.create_task(read_other()), ["uncommitted"])

    async def test_gather_child_inside_atomic_is_refused(self) -> None:
        async def child() -> None:
            await add("child")

        with self.assertRaisesRegex(RuntimeError, CHILD_REFUSED):
            async with async_atomic():
                await add("parent")
                await asyncio.gather(child())
        self.assertEqual(committed_names(), [])

    async def test_create_task_child_inside_atomic_is_refused(self) -> None:
        async def child() -> None:
            await add("child")

        with self.assertRaisesRegex(RuntimeError, CHILD_REFUSED):
            async with async_atomic():
                await add("parent")
                await asyncio.create_task(child())
        self.assertEqual(committed_names(), [])

    async def test_taskgroup_child_inside_atomic_is_refused(self) -> None:
        async def child(name: str) -> None:
            await add(name)

        with self.assertRaises(ExceptionGroup) as ctx:
            async with async_atomic():
                await add("parent")
                async with asyncio.TaskGroup() as group:
                    group.create_task(child("child-1"))
                    group.create_task(child("child-2"))
        errors = ctx.exception.exceptions
        self.assertEqual(len(errors), 2)
        for error in errors:
            self.assertIsInstance(error, RuntimeError)
            self.assertRegex(str(error), CHILD_REFUSED)
        self.assertEqual(committed_names(), [])

    async def test_child_refusal_caught_in_block_lets_parent_commit_alone(
        self,
    ) -> None:
        async def child() -> None:
            await add("child")

        async with async_atomic():
            await add("parent")
            with self.assertRaisesRegex(RuntimeError, CHILD_REFUSED):
                await asyncio.create_task(child())
        # The child wrote nothing anywhere; the parent's block committed.
        self.assertEqual(committed_names(), ["parent"])

    async def test_wrapper_passed_to_child_inside_atomic_is_refused(self) -> None:
        async def child(connection: Any) -> None:
            async with connection.cursor() as cursor:
                await cursor.execute(
                    "INSERT INTO testapp_account (name, balance) VALUES ('child', 0)"
                )

        with self.assertRaisesRegex(RuntimeError, "belongs to task"):
            async with async_atomic():
                await add("parent")
                await asyncio.create_task(child(conn()))
        self.assertEqual(committed_names(), [])

    async def test_child_with_independent_connection_commits_on_its_own(self) -> None:
        async def child() -> int:
            async with async_connections.independent_connection():
                await add("independent")
                return await backend_pid(conn())

        with self.assertRaises(Oops):
            async with async_atomic():
                parent_pid = await backend_pid(conn())
                await add("parent")
                child_pid = await asyncio.create_task(child())
                # Committed already, while the parent's block is still open.
                self.assertEqual(committed_names(), ["independent"])
                raise Oops
        self.assertNotEqual(child_pid, parent_pid)
        # The parent rolled back; the child's work stays.
        self.assertEqual(committed_names(), ["independent"])

    async def test_independent_connection_in_gather_and_taskgroup(self) -> None:
        async def child(name: str) -> None:
            async with async_connections.independent_connection():
                async with async_atomic():
                    await add(name)

        async with async_atomic():
            await add("parent")
            await asyncio.gather(child("gather-1"), child("gather-2"))
            async with asyncio.TaskGroup() as group:
                group.create_task(child("group-1"))
        self.assertEqual(
            committed_names(), ["gather-1", "gather-2", "group-1", "parent"]
        )

    async def test_independent_connection_in_same_task_inside_atomic(self) -> None:
        with self.assertRaises(Oops):
            async with async_atomic():
                await add("outer")
                async with async_connections.independent_connection():
                    self.assertFalse(conn().in_atomic_block)
                    await add("independent")
                # Back on the outer connection, still in its transaction.
                self.assertTrue(conn().in_atomic_block)
                raise Oops
        self.assertEqual(committed_names(), ["independent"])

    async def test_child_after_parent_block_ends_is_allowed(self) -> None:
        async def child() -> None:
            await add("child")

        async with async_atomic():
            await add("parent")
        await asyncio.create_task(child())
        self.assertEqual(committed_names(), ["child", "parent"])


if __name__ == "__main__":
    unittest.main()
