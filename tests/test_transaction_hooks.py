"""on_commit callbacks of async connections.

``TestConnectionOnCommit`` ports Django's ``tests/transaction_hooks/tests.py``
(same test names) to async code, with raw SQL on ``testapp_item`` instead of
the ``Thing`` model. ``AsyncOnCommitTests`` covers what only exists in async
code (coroutine callbacks) and the remaining points of the contract.

Each callback records what it saw; the rows it wrote are checked in the
database, so that callbacks and transaction outcomes are seen to match.
"""

from __future__ import annotations

import asyncio
import unittest
from collections.abc import Callable
from typing import Any

from django.db import IntegrityError

from django_async_backend.db.transaction import (
    TransactionManagementError,
    async_atomic,
    commit,
    on_commit,
    savepoint,
    savepoint_rollback,
    set_autocommit,
    set_rollback,
)
from django_async_backend.db.transaction import rollback as rollback_transaction
from scenarios import DatabaseTestCase, conn, execute, fetchall
from support import outside

LOGGER = "django.db.backends.base"


def committed_things() -> list[int]:
    rows = outside("SELECT name FROM testapp_item")
    return sorted(int(row[0]) for row in rows)


class ForcedError(Exception):
    pass


class HooksTestCase(DatabaseTestCase):
    tables = ("testapp_item",)

    def setUp(self) -> None:
        super().setUp()
        self.notified: list[Any] = []

    def notify(self, id_: Any) -> None:
        if id_ == "error":
            raise ForcedError()
        self.notified.append(id_)

    async def create_thing(self, num: int) -> None:
        """``Thing.objects.create(num=num)``."""
        await execute(
            "INSERT INTO testapp_item (name, created) VALUES (%s, now())", [str(num)]
        )

    async def things(self) -> list[int]:
        """The things this task's connection sees."""
        rows = await fetchall("SELECT name FROM testapp_item")
        return sorted(int(row[0]) for row in rows)

    async def do(self, num: int) -> None:
        """Create a Thing instance and notify about it."""
        await self.create_thing(num)
        await on_commit(lambda: self.notify(num))

    def assertDone(self, nums: list[int]) -> None:
        self.assertNotified(nums)
        # Committed for real: seen from another session.
        self.assertEqual(committed_things(), sorted(nums))

    def assertNotified(self, nums: list[Any]) -> None:
        self.assertEqual(self.notified, nums)


class TestConnectionOnCommit(HooksTestCase):
    """Tests for on_commit().

    Creation/checking of database rows in parallel with callback tracking is
    to verify that the behavior of the two match in all tested cases.
    """

    async def test_executes_immediately_if_no_transaction(self) -> None:
        await self.do(1)
        self.assertDone([1])

    async def test_robust_if_no_transaction(self) -> None:
        def robust_callback() -> None:
            raise ForcedError("robust callback")

        with self.assertLogs(LOGGER, "ERROR") as cm:
            await on_commit(robust_callback, robust=True)
            await self.do(1)

        self.assertDone([1])
        log_record = cm.records[0]
        self.assertEqual(
            log_record.getMessage(),
            "Error calling TestConnectionOnCommit.test_robust_if_no_transaction."
            "<locals>.robust_callback in on_commit() (robust callback).",
        )
        self.assertIsNotNone(log_record.exc_info)
        assert log_record.exc_info is not None
        raised_exception = log_record.exc_info[1]
        self.assertIsInstance(raised_exception, ForcedError)
        self.assertEqual(str(raised_exception), "robust callback")

    async def test_robust_transaction(self) -> None:
        def robust_callback() -> None:
            raise ForcedError("robust callback")

        with self.assertLogs("django.db.backends", "ERROR") as cm:
            async with async_atomic():
                await on_commit(robust_callback, robust=True)
                await self.do(1)

        self.assertDone([1])
        log_record = cm.records[0]
        self.assertEqual(
            log_record.getMessage(),
            "Error calling TestConnectionOnCommit.test_robust_transaction.<locals>."
            "robust_callback in on_commit() during transaction (robust callback).",
        )
        self.assertIsNotNone(log_record.exc_info)
        assert log_record.exc_info is not None
        raised_exception = log_record.exc_info[1]
        self.assertIsInstance(raised_exception, ForcedError)
        self.assertEqual(str(raised_exception), "robust callback")

    async def test_delays_execution_until_after_transaction_commit(self) -> None:
        async with async_atomic():
            await self.do(1)
            self.assertNotified([])
        self.assertDone([1])

    async def test_does_not_execute_if_transaction_rolled_back(self) -> None:
        try:
            async with async_atomic():
                await self.do(1)
                raise ForcedError()
        except ForcedError:
            pass

        self.assertDone([])

    async def test_executes_only_after_final_transaction_committed(self) -> None:
        async with async_atomic():
            async with async_atomic():
                await self.do(1)
                self.assertNotified([])
            self.assertNotified([])
        self.assertDone([1])

    async def test_discards_hooks_from_rolled_back_savepoint(self) -> None:
        async with async_atomic():
            # one successful savepoint
            async with async_atomic():
                await self.do(1)
            # one failed savepoint
            try:
                async with async_atomic():
                    await self.do(2)
                    raise ForcedError()
            except ForcedError:
                pass
            # another successful savepoint
            async with async_atomic():
                await self.do(3)

        # only hooks registered during successful savepoints execute
        self.assertDone([1, 3])

    async def test_no_hooks_run_from_failed_transaction(self) -> None:
        """If outer transaction fails, no hooks from within it run."""
        try:
            async with async_atomic():
                async with async_atomic():
                    await self.do(1)
                raise ForcedError()
        except ForcedError:
            pass

        self.assertDone([])

    async def test_inner_savepoint_rolled_back_with_outer(self) -> None:
        async with async_atomic():
            try:
                async with async_atomic():
                    async with async_atomic():
                        await self.do(1)
                    raise ForcedError()
            except ForcedError:
                pass
            await self.do(2)

        self.assertDone([2])

    async def test_no_savepoints_atomic_merged_with_outer(self) -> None:
        async with async_atomic():
            async with async_atomic():
                await self.do(1)
                try:
                    async with async_atomic(savepoint=False):
                        raise ForcedError()
                except ForcedError:
                    pass

        self.assertDone([])

    async def test_inner_savepoint_does_not_affect_outer(self) -> None:
        async with async_atomic():
            async with async_atomic():
                await self.do(1)
                try:
                    async with async_atomic():
                        raise ForcedError()
                except ForcedError:
                    pass

        self.assertDone([1])

    async def test_runs_hooks_in_order_registered(self) -> None:
        async with async_atomic():
            await self.do(1)
            async with async_atomic():
                await self.do(2)
            await self.do(3)

        self.assertDone([1, 2, 3])

    async def test_hooks_cleared_after_successful_commit(self) -> None:
        async with async_atomic():
            await self.do(1)
        async with async_atomic():
            await self.do(2)

        self.assertDone([1, 2])  # not [1, 1, 2]

    async def test_hooks_cleared_after_rollback(self) -> None:
        try:
            async with async_atomic():
                await self.do(1)
                raise ForcedError()
        except ForcedError:
            pass

        async with async_atomic():
            await self.do(2)

        self.assertDone([2])

    async def test_hooks_cleared_on_reconnect(self) -> None:
        async with async_atomic():
            await self.do(1)
            await conn().close()

        await conn().connect()

        async with async_atomic():
            await self.do(2)

        self.assertDone([2])

    async def test_error_in_hook_doesnt_prevent_clearing_hooks(self) -> None:
        try:
            async with async_atomic():
                await on_commit(lambda: self.notify("error"))
        except ForcedError:
            pass

        async with async_atomic():
            await self.do(1)

        self.assertDone([1])

    async def test_db_query_in_hook(self) -> None:
        async def query_things() -> None:
            for num in await self.things():
                self.notify(num)

        async with async_atomic():
            await self.create_thing(1)
            await on_commit(query_things)

        self.assertDone([1])

    async def test_transaction_in_hook(self) -> None:
        async def on_commit_hook() -> None:
            async with async_atomic():
                await self.create_thing(1)
                self.notify(1)

        async with async_atomic():
            await on_commit(on_commit_hook)

        self.assertDone([1])

    async def test_hook_in_hook(self) -> None:
        async def on_commit_hook(i: int, add_hook: bool) -> None:
            async with async_atomic():
                if add_hook:
                    await on_commit(lambda: on_commit_hook(i + 10, False))
                await self.create_thing(i)
                self.notify(i)

        async with async_atomic():
            await on_commit(lambda: on_commit_hook(1, True))
            await on_commit(lambda: on_commit_hook(2, True))

        self.assertDone([1, 11, 2, 12])

    async def test_raises_exception_non_autocommit_mode(self) -> None:
        def should_never_be_called() -> None:
            raise AssertionError("this function should never be called")

        try:
            await conn().set_autocommit(False)
            msg = "on_commit\\(\\) cannot be used in manual transaction management"
            with self.assertRaisesRegex(TransactionManagementError, msg):
                await on_commit(should_never_be_called)
        finally:
            await conn().set_autocommit(True)

    async def test_raises_exception_non_callable(self) -> None:
        msg = "on_commit\\(\\)'s callback must be a callable."
        with self.assertRaisesRegex(TypeError, msg):
            await on_commit(None)  # type: ignore[arg-type]


class AsyncOnCommitTests(HooksTestCase):
    """The async side of the contract, and what Django's tests leave implicit."""

    def recorder(self, tag: Any) -> Callable[[], Any]:
        async def callback() -> None:
            # A real suspension point: the callback is awaited, not just called.
            await asyncio.sleep(0)
            self.notify(tag)

        return callback

    async def test_async_callback_runs_after_commit(self) -> None:
        seen: list[list[int]] = []

        async def callback() -> None:
            await asyncio.sleep(0)
            # The commit is done: another session sees the row.
            seen.append(committed_things())

        async with async_atomic():
            await self.create_thing(1)
            await on_commit(callback)
            self.assertEqual(seen, [])
        self.assertEqual(seen, [[1]])

    async def test_async_callback_dropped_on_rollback(self) -> None:
        with self.assertRaises(ForcedError):
            async with async_atomic():
                await self.create_thing(1)
                await on_commit(self.recorder(1))
                raise ForcedError
        self.assertDone([])

    async def test_async_callback_outside_transaction_runs_at_once(self) -> None:
        await on_commit(self.recorder("now"))
        # Awaited to the end before on_commit() returned.
        self.assertNotified(["now"])

    async def test_sync_and_async_callbacks_run_in_registration_order(self) -> None:
        async with async_atomic():
            await on_commit(self.recorder(1))
            await on_commit(lambda: self.notify(2))
            async with async_atomic():
                await on_commit(self.recorder(3))
            await conn().on_commit(lambda: self.notify(4))
            await conn().on_commit(self.recorder(5))
        self.assertNotified([1, 2, 3, 4, 5])

    async def test_async_callback_may_query_the_database(self) -> None:
        async def callback() -> None:
            self.notify(await self.things())

        async with async_atomic():
            await self.create_thing(7)
            await on_commit(callback)
        # The callback ran on this task's connection, out of the transaction.
        self.assertNotified([[7]])
        self.assertFalse(conn().in_atomic_block)

    async def test_savepoint_rollback_drops_exactly_its_callbacks(self) -> None:
        async with async_atomic():
            await on_commit(self.recorder("before"))
            with self.assertRaises(ForcedError):
                async with async_atomic():
                    await on_commit(self.recorder("in-savepoint"))
                    async with async_atomic():
                        # Released, then dropped with its enclosing savepoint.
                        await on_commit(self.recorder("in-nested"))
                    raise ForcedError
            async with async_atomic():
                await on_commit(self.recorder("sibling"))
            await on_commit(self.recorder("after"))
        self.assertNotified(["before", "sibling", "after"])

    async def test_set_rollback_drops_callbacks(self) -> None:
        async with async_atomic():
            await self.create_thing(1)
            await on_commit(self.recorder(1))
            set_rollback(True)
        self.assertDone([])

    async def test_set_rollback_in_savepoint_drops_its_callbacks(self) -> None:
        async with async_atomic():
            await self.do(1)
            async with async_atomic():
                await self.do(2)
                set_rollback(True)
        self.assertDone([1])

    async def test_robust_async_callback_is_logged_and_the_rest_run(self) -> None:
        async def failing() -> None:
            await asyncio.sleep(0)
            raise ForcedError("async robust")

        with self.assertLogs(LOGGER, "ERROR") as cm:
            async with async_atomic():
                await on_commit(self.recorder(1))
                await on_commit(failing, robust=True)
                await on_commit(self.recorder(2))
        self.assertNotified([1, 2])
        self.assertEqual(len(cm.records), 1)
        self.assertIn("failing", cm.records[0].getMessage())
        self.assertIn("async robust", cm.records[0].getMessage())
        assert cm.records[0].exc_info is not None
        self.assertIsInstance(cm.records[0].exc_info[1], ForcedError)

    async def test_robust_async_callback_outside_transaction(self) -> None:
        async def failing() -> None:
            raise ForcedError("async robust")

        with self.assertLogs(LOGGER, "ERROR") as cm:
            await on_commit(failing, robust=True)
        self.assertIn("async robust", cm.records[0].getMessage())

    async def test_failing_callback_raises_after_the_commit(self) -> None:
        async def failing() -> None:
            raise ForcedError("not robust")

        with self.assertRaisesRegex(ForcedError, "not robust"):
            async with async_atomic():
                await self.do(1)
                await on_commit(failing)
                await on_commit(self.recorder("dropped"))
        # The transaction is committed; the callbacks after the failing one
        # are dropped, as in Django; the connection is out of the block.
        self.assertDone([1])
        self.assertFalse(conn().in_atomic_block)
        self.assertTrue(conn().autocommit)
        async with async_atomic():
            await self.do(2)
        self.assertDone([1, 2])

    async def test_callback_registering_another_outside_transaction(self) -> None:
        def first() -> Any:
            self.notify("first")
            # No transaction any more: the new callback runs at once.
            return on_commit(self.recorder("registered-by-first"))

        async def first_async() -> None:
            await first()

        async with async_atomic():
            await on_commit(first_async)
            await on_commit(self.recorder("second"))
        self.assertNotified(["first", "registered-by-first", "second"])

    async def test_callback_registering_another_in_its_own_block(self) -> None:
        async def first() -> None:
            async with async_atomic():
                await self.create_thing(10)
                await on_commit(self.recorder("nested"))
                self.notify("first")

        async with async_atomic():
            await self.create_thing(1)
            await on_commit(first)
            await on_commit(self.recorder("second"))
        self.assertNotified(["first", "nested", "second"])
        self.assertEqual(committed_things(), [1, 10])

    async def test_callbacks_belong_to_their_alias(self) -> None:
        async with async_atomic(using="other"):
            await conn("other").on_commit(self.recorder("other"))
            async with async_atomic():
                await conn().on_commit(self.recorder("default"))
            self.assertNotified(["default"])
        self.assertNotified(["default", "other"])

    async def test_callbacks_belong_to_their_task(self) -> None:
        async def work(tag: str, fail: bool) -> None:
            try:
                async with async_atomic():
                    await on_commit(self.recorder(tag))
                    await asyncio.sleep(0.02)
                    if fail:
                        raise ForcedError
            except ForcedError:
                pass

        await asyncio.gather(work("kept", False), work("dropped", True))
        self.assertNotified(["kept"])

    async def test_failed_commit_drops_callbacks(self) -> None:
        await execute(
            "CREATE TEMPORARY TABLE deferred_codes (code int "
            "UNIQUE DEFERRABLE INITIALLY DEFERRED)"
        )
        with self.assertRaises(IntegrityError):
            async with async_atomic():
                await self.create_thing(1)
                await execute("INSERT INTO deferred_codes VALUES (1), (1)")
                await on_commit(self.recorder(1))
        self.assertDone([])
        # Nothing left over for the next transaction either.
        async with async_atomic():
            await self.do(2)
        self.assertDone([2])

    async def test_manual_transaction_runs_callbacks_when_autocommit_returns(
        self,
    ) -> None:
        await set_autocommit(False)
        try:
            async with async_atomic():
                await self.do(1)
            # The block ended without committing (manual mode).
            self.assertNotified([])
            await commit()
            # As in Django: run when autocommit is switched back on.
            self.assertNotified([])
        finally:
            await set_autocommit(True)
        self.assertDone([1])

    async def test_manual_rollback_drops_callbacks(self) -> None:
        await set_autocommit(False)
        try:
            async with async_atomic():
                await self.do(1)
            await rollback_transaction()
        finally:
            await set_autocommit(True)
        self.assertDone([])

    async def test_manual_savepoint_rollback_keeps_earlier_callbacks(self) -> None:
        async with async_atomic():
            await self.do(1)
            sid = await savepoint()
            assert sid is not None
            await self.create_thing(2)
            await savepoint_rollback(sid)
        self.assertDone([1])


if __name__ == "__main__":
    unittest.main()
