"""Existing sync code inside async transactions: native, or refused.

``run_sync`` runs a sync helper on the event loop, inside the native bridge:
its ORM writes join the task's ``async_atomic()`` block and roll back with
it. The same helper through ``sync_to_async`` or ``asyncio.to_thread`` runs
on Django's sync connection and would commit on its own: its writes are
refused (reads pass), or warned about with ``ASYNC_BACKEND_ESCAPED_WRITES``.
Sync signal receivers and ``save()`` overrides, called from native ORM
calls, run natively too. Each runs on a plain alias and on a pooled one.
"""

from __future__ import annotations

import asyncio
import unittest
from typing import Any

from asgiref.sync import sync_to_async
from django.db import connections, transaction
from django.db.models.signals import post_save
from django.db.transaction import TransactionManagementError
from django.test.utils import override_settings

import support
from django_async_backend.db import async_connections
from django_async_backend.db.backends.postgresql.guard import EscapedWriteWarning
from django_async_backend.db.models import run_sync
from django_async_backend.db.transaction import async_atomic
from scenarios import POOLED, AliasTestCase
from support import outside, settle_background
from test_no_threads import no_threads
from testapp.models import Author, Tag


class AuditedAuthor(Author):
    """A save() override written as sync code: it writes a second row."""

    class Meta:
        proxy = True
        app_label = "testapp"

    def save(self, *args: Any, **kwargs: Any) -> None:
        super().save(*args, **kwargs)
        Tag.objects.using(self._state.db).create(name=f"saved-{self.name}")


def names(table: str) -> list[str]:
    return [row[0] for row in outside(f"SELECT name FROM {table} ORDER BY name")]


class Boom(Exception):
    pass


class RunSyncScenarios(AliasTestCase):
    """The scenarios, run plain and pooled by the two classes at the end."""

    tables = ("testapp_tag", "testapp_author")
    app_prefix = "dab-sync"

    async def asyncTearDown(self) -> None:
        await settle_background()
        await support.close_everything()  # the pools too

    def helper(self, name: str) -> None:
        """Existing sync code: the ORM, on Django's connections."""
        Author.objects.using(self.alias).create(name=name)

    def in_thread(self, fn: Any, *args: Any) -> Any:
        """``fn`` run in a thread, which then closes its sync connections."""
        try:
            return fn(*args)
        finally:
            connections.close_all()

    # ---- run_sync ------------------------------------------------------------

    async def test_run_sync_joins_the_block_and_rolls_back_with_it(self) -> None:
        with self.assertRaises(Boom):
            async with async_atomic(using=self.alias):
                await Author.objects.using(self.alias).acreate(name="native")
                await run_sync(self.helper, "via-sync")
                self.assertEqual(
                    await Author.objects.using(self.alias).acount(), 2
                )  # both in the transaction
                raise Boom
        self.assertEqual(names("testapp_author"), [])

    async def test_run_sync_commits_with_the_block(self) -> None:
        async with async_atomic(using=self.alias):
            await run_sync(self.helper, "via-sync")
            self.assertEqual(names("testapp_author"), [])  # not yet
        self.assertEqual(names("testapp_author"), ["via-sync"])

    async def test_run_sync_outside_a_block_commits_at_once(self) -> None:
        await run_sync(self.helper, "alone")
        self.assertEqual(names("testapp_author"), ["alone"])

    async def test_atomic_blocks_of_the_sync_code_are_savepoints(self) -> None:
        alias = self.alias

        def helper() -> None:
            Author.objects.using(alias).create(name="kept")
            try:
                with transaction.atomic(using=alias):
                    Author.objects.using(alias).create(name="undone")
                    raise Boom
            except Boom:
                pass

        async with async_atomic(using=alias):
            await run_sync(helper)
            self.assertTrue(async_connections[alias].in_atomic_block)
        self.assertEqual(names("testapp_author"), ["kept"])

    async def test_on_commit_of_the_sync_code_waits_for_the_block(self) -> None:
        alias = self.alias
        ran: list[str] = []

        def helper(name: str) -> None:
            Author.objects.using(alias).create(name=name)
            transaction.on_commit(lambda: ran.append(name), using=alias)

        async with async_atomic(using=alias):
            await run_sync(helper, "committed")
            self.assertEqual(ran, [])
        self.assertEqual(ran, ["committed"])
        with self.assertRaises(Boom):
            async with async_atomic(using=alias):
                await run_sync(helper, "rolled-back")
                raise Boom
        self.assertEqual(ran, ["committed"])

    async def test_run_sync_as_a_decorator(self) -> None:
        alias = self.alias

        @run_sync
        def add(name: str, *, twice: bool = False) -> int:
            Author.objects.using(alias).create(name=name)
            if twice:
                Author.objects.using(alias).create(name=f"{name}-again")
            return int(Author.objects.using(alias).count())

        async with async_atomic(using=alias):
            self.assertEqual(await add("deco", twice=True), 2)
        self.assertEqual(names("testapp_author"), ["deco", "deco-again"])
        self.assertEqual(await run_sync(add)("more"), 3)  # already decorated

    async def test_run_sync_returns_and_raises_what_the_function_does(self) -> None:
        def fails() -> None:
            raise KeyError("missing")

        self.assertEqual(await run_sync(divmod, 7, 2), (3, 1))
        with self.assertRaises(KeyError):
            await run_sync(fails)

    async def test_run_sync_uses_no_thread(self) -> None:
        with no_threads():
            async with async_atomic(using=self.alias):
                await run_sync(self.helper, "no-thread")
        self.assertEqual(names("testapp_author"), ["no-thread"])

    # ---- the safety net ---------------------------------------------------------

    async def test_sync_to_async_write_in_a_block_is_refused(self) -> None:
        with self.assertRaisesRegex(TransactionManagementError, r"run_sync"):
            async with async_atomic(using=self.alias):
                await Author.objects.using(self.alias).acreate(name="native")
                await sync_to_async(self.in_thread)(self.helper, "via-sync")
        self.assertEqual(names("testapp_author"), [])

    async def test_to_thread_write_in_a_block_is_refused(self) -> None:
        with self.assertRaisesRegex(TransactionManagementError, r"run_sync"):
            async with async_atomic(using=self.alias):
                await asyncio.to_thread(self.in_thread, self.helper, "via-thread")
        self.assertEqual(names("testapp_author"), [])

    async def test_sync_to_async_copy_in_a_block_is_refused(self) -> None:
        alias = self.alias

        def copy_in(name: str) -> None:
            with connections[alias].cursor() as cursor:
                with cursor.copy("COPY testapp_author (name) FROM STDIN") as copy:
                    copy.write_row((name,))

        with self.assertRaisesRegex(TransactionManagementError, r"run_sync"):
            async with async_atomic(using=alias):
                await sync_to_async(self.in_thread)(copy_in, "via-copy")
        self.assertEqual(names("testapp_author"), [])

    async def test_reads_in_a_thread_pass(self) -> None:
        def count() -> int:
            return int(Author.objects.using(self.alias).count())

        async with async_atomic(using=self.alias):
            self.assertEqual(await sync_to_async(self.in_thread)(count), 0)

    async def test_writes_in_a_thread_outside_blocks_pass(self) -> None:
        await sync_to_async(self.in_thread)(self.helper, "outside")
        async with async_atomic(using=self.alias):
            pass
        await sync_to_async(self.in_thread)(self.helper, "after")
        self.assertEqual(names("testapp_author"), ["after", "outside"])

    async def test_the_setting_makes_it_a_warning(self) -> None:
        with (
            override_settings(ASYNC_BACKEND_ESCAPED_WRITES="warn"),
            self.assertWarns(EscapedWriteWarning),
        ):
            async with async_atomic(using=self.alias):
                await sync_to_async(self.in_thread)(self.helper, "escaped")
        # Warned, not refused: it committed on its own, as sync_to_async does.
        self.assertEqual(names("testapp_author"), ["escaped"])

    # ---- the migration guide's shapes (docs/migrating.md) --------------------

    async def test_run_sync_of_a_django_atomic_function(self) -> None:
        alias = self.alias

        def fn(name: str) -> None:
            Author.objects.using(alias).create(name=name)

        await run_sync(transaction.atomic(using=alias)(fn), "own-transaction")
        self.assertEqual(names("testapp_author"), ["own-transaction"])
        with self.assertRaises(Boom):
            async with async_atomic(using=alias):
                await run_sync(transaction.atomic(using=alias)(fn), "savepoint")
                raise Boom
        self.assertEqual(names("testapp_author"), ["own-transaction"])

    async def test_run_sync_of_a_third_party_app(self) -> None:
        from django.contrib.auth.models import User

        users = User.objects.db_manager(self.alias)
        self.addCleanup(outside, "DELETE FROM auth_user WHERE username = 'ann'")
        with self.assertRaises(Boom):
            async with async_atomic(using=self.alias):
                user = await run_sync(users.create_user, "ann", password="secret")
                self.assertTrue(user.check_password("secret"))
                raise Boom
        self.assertEqual(outside("SELECT count(*) FROM auth_user"), [(0,)])

    # ---- sync code that native ORM calls run ------------------------------------

    async def test_sync_receivers_write_in_the_block(self) -> None:
        alias = self.alias

        def receiver(sender: Any, instance: Author, **kwargs: Any) -> None:
            Tag.objects.using(alias).create(name=f"tag-{instance.name}")

        post_save.connect(receiver, sender=Author)
        self.addCleanup(post_save.disconnect, receiver, sender=Author)
        with self.assertRaises(Boom):
            async with async_atomic(using=alias):
                await Author.objects.using(alias).acreate(name="signalled")
                self.assertEqual(await Tag.objects.using(alias).acount(), 1)
                raise Boom
        self.assertEqual(names("testapp_tag"), [])

    async def test_save_overrides_write_in_the_block(self) -> None:
        with self.assertRaises(Boom):
            async with async_atomic(using=self.alias):
                author = AuditedAuthor(name="audited")
                await author.asave(using=self.alias)
                self.assertEqual(await Tag.objects.using(self.alias).acount(), 1)
                raise Boom
        self.assertEqual(names("testapp_tag"), [])
        self.assertEqual(names("testapp_author"), [])


class PlainRunSyncTests(RunSyncScenarios):
    alias = "sync_plain"


class PooledRunSyncTests(RunSyncScenarios):
    alias = "sync_pooled"
    alias_options = POOLED


del RunSyncScenarios


if __name__ == "__main__":
    unittest.main()
