"""The native async ORM core: Django's async API on the task's async connection.

Each test checks one behaviour of the bridge (docs/orm.md): the query runs on
the task's async connection (so inside its ``async_atomic()`` block), without
a thread, and Django's own transaction handling unwinds correctly when the
task is cancelled. The broad per-method coverage lives in tests/test_orm_*.py.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import unittest
import uuid
import warnings
from datetime import date
from typing import Any

import django
from asgiref.sync import sync_to_async
from django.core.exceptions import SynchronousOnlyOperation
from django.db import IntegrityError, OperationalError, connections, transaction
from django.db.models.signals import post_save
from django.dispatch import Signal

import support
from aliases import temporary_alias
from django_async_backend.db import async_connections
from django_async_backend.db.models import signals as model_signals
from django_async_backend.db.transaction import async_atomic
from django_async_backend.test import AsyncioTestCase, AsyncioTransactionTestCase
from django_async_backend.utils.bridge import await_, run_native
from support import idle_in_transaction, outside, poll, running
from test_no_threads import no_threads
from testapp.models import Author, Book, Novel, Profile, Tag

support.ensure_test_tables()


async def scalar(sql: str, params: Any = None, alias: str = "default") -> Any:
    """One value, read on the task's own connection (inside its transaction)."""
    async with async_connections[alias].cursor() as cursor:
        await cursor.execute(sql, params)
        row = await cursor.fetchone()
    return row[0]


async def open_cursors() -> int:
    return int(await scalar("SELECT count(*) FROM pg_cursors"))


class Boom(Exception):
    pass


class BridgeTests(AsyncioTestCase):
    async def test_run_native_returns_the_result(self) -> None:
        self.assertEqual(await run_native(lambda a, b=0: a + b, 2, b=3), 5)

    async def test_run_native_raises_the_exception(self) -> None:
        def fail() -> None:
            raise Boom

        with self.assertRaises(Boom):
            await run_native(fail)

    async def test_await_in_the_bridge_returns_the_value(self) -> None:
        async def later() -> int:
            await asyncio.sleep(0)
            return 7

        self.assertEqual(await run_native(lambda: await_(later())), 7)

    async def test_await_outside_the_bridge_is_refused(self) -> None:
        async def never() -> None:
            pass

        with self.assertRaisesRegex(RuntimeError, "run_native"):
            await_(never())

    async def test_bridge_shares_the_task(self) -> None:
        task = asyncio.current_task()
        self.assertIs(await run_native(asyncio.current_task), task)

    async def test_atomic_in_the_bridge_uses_the_task_connection(self) -> None:
        def create_in_atomic() -> None:
            with transaction.atomic():
                Author.objects.create(name="sync-atomic")

        async with async_atomic():
            await run_native(create_in_atomic)
            self.assertEqual(await scalar("SELECT count(*) FROM testapp_author"), 1)


class QuerySetTests(AsyncioTestCase):
    async def test_acreate_inserts_a_row(self) -> None:
        author = await Author.objects.acreate(name="Ann")
        self.assertEqual(
            await scalar("SELECT name FROM testapp_author WHERE id = %s", [author.pk]),
            "Ann",
        )

    async def test_aget_returns_the_row(self) -> None:
        author = await Author.objects.acreate(name="Ann")
        fetched = await Author.objects.aget(pk=author.pk)
        self.assertEqual((fetched.pk, fetched.name), (author.pk, "Ann"))

    async def test_aget_raises_does_not_exist(self) -> None:
        with self.assertRaises(Author.DoesNotExist):
            await Author.objects.aget(name="nobody")

    async def test_async_for_yields_every_row(self) -> None:
        for name in ("a", "b", "c"):
            await Author.objects.acreate(name=name)
        names = [a.name async for a in Author.objects.order_by("name")]
        self.assertEqual(names, ["a", "b", "c"])

    async def test_custom_queryset_methods_feed_native_methods(self) -> None:
        author = await Author.objects.acreate(name="Ann")
        await Book.objects.acreate(title="short", author=author, pages=10)
        await Book.objects.acreate(title="long", author=author, pages=500)
        titles = [b.title async for b in Book.objects.long()]
        self.assertEqual(titles, ["long"])

    async def test_custom_manager_feeds_native_methods(self) -> None:
        author = await Author.objects.acreate(name="Ann")
        await Book.objects.acreate(title="short", author=author, pages=10)
        await Book.objects.acreate(title="long", author=author, pages=500)
        with no_threads():
            self.assertEqual(await Book.long_books.acount(), 1)

    async def test_aiterator_streams_through_a_server_side_cursor(self) -> None:
        author = await Author.objects.acreate(name="Ann")
        for i in range(5):
            await Book.objects.acreate(title=f"b{i}", author=author)
        cursors = []
        async for _ in Book.objects.aiterator(chunk_size=2):
            cursors.append(await open_cursors())
        # Open while the first chunks stream; closed once the last one is read.
        self.assertEqual(cursors, [1, 1, 1, 1, 0])

    async def test_aiterator_stopped_early_closes_its_cursor(self) -> None:
        author = await Author.objects.acreate(name="Ann")
        for i in range(5):
            await Book.objects.acreate(title=f"b{i}", author=author)
        books: Any = Book.objects.aiterator(chunk_size=2)
        async for _ in books:
            break
        await books.aclose()
        self.assertEqual(await open_cursors(), 0)

    async def test_select_related_rows_need_no_query(self) -> None:
        author = await Author.objects.acreate(name="Ann")
        await Book.objects.acreate(title="t", author=author)
        book = await Book.objects.select_related("author").aget(title="t")
        async with self.assertNumQueries(0):
            self.assertEqual(book.author.name, "Ann")

    async def test_queries_are_logged_on_the_async_connection(self) -> None:
        async with self.assertNumQueries(1):
            await Author.objects.acount()


class RelationTests(AsyncioTestCase):
    async def asyncSetUp(self) -> None:
        self.author = await Author.objects.acreate(name="Ann")

    async def test_prefetch_related_is_resolved_natively(self) -> None:
        book = await Book.objects.acreate(title="t", author=self.author)
        await book.tags.aadd(await Tag.objects.acreate(name="x"))
        async with self.assertNumQueries(2):
            books = [b async for b in Book.objects.prefetch_related("tags")]
        self.assertEqual([t.name for t in books[0].tags.all()], ["x"])

    async def test_reverse_related_acreate_joins_a_rolled_back_block(self) -> None:
        with self.assertRaises(Boom):
            async with async_atomic():
                await self.author.books.acreate(title="t")
                raise Boom
        self.assertEqual(await scalar("SELECT count(*) FROM testapp_book"), 0)

    async def test_adelete_cascades_natively(self) -> None:
        book = await Book.objects.acreate(title="t", author=self.author)
        await book.chapters.acreate(number=1)
        with no_threads():
            await self.author.adelete()
        self.assertEqual(await scalar("SELECT count(*) FROM testapp_chapter"), 0)

    async def test_raw_async_for_is_native(self) -> None:
        await Book.objects.acreate(title="t", author=self.author)
        with no_threads():
            titles = [
                b.title async for b in Book.objects.raw("SELECT * FROM testapp_book")
            ]
        self.assertEqual(titles, ["t"])

    async def test_on_commit_from_orm_code_joins_the_connection(self) -> None:
        async with self.captureOnCommitCallbacks() as callbacks:
            async with async_atomic():
                await run_native(transaction.on_commit, lambda: None)
        self.assertEqual(len(callbacks), 1)


class ModelTests(AsyncioTestCase):
    async def test_asave_inserts_a_new_object(self) -> None:
        author = Author(name="Ann")
        await author.asave()
        self.assertEqual(await scalar("SELECT count(*) FROM testapp_author"), 1)

    async def test_asave_updates_an_existing_object(self) -> None:
        author = await Author.objects.acreate(name="Ann")
        author.name = "Anne"
        await author.asave()
        self.assertEqual(
            await scalar("SELECT name FROM testapp_author WHERE id = %s", [author.pk]),
            "Anne",
        )

    async def test_asave_update_fields_writes_only_those(self) -> None:
        author = await Author.objects.acreate(name="Ann")
        await Book.objects.acreate(title="old", author=author, pages=1)
        book = await Book.objects.aget(title="old")
        book.title, book.pages = "new", 2
        await book.asave(update_fields=["pages"])
        row = await scalar(
            "SELECT array[title, pages::text] FROM testapp_book WHERE id = %s",
            [book.pk],
        )
        self.assertEqual(row, ["old", "2"])

    @unittest.skipIf(django.VERSION >= (6, 0), "positional arguments end in 6.0")
    async def test_asave_positional_arguments_warn_as_django(self) -> None:
        author = Author(name="Ann")
        with self.assertWarnsRegex(Warning, r"positional arguments to asave\(\)"):
            await author.asave(False, False, None, None)  # type: ignore[call-arg]
        self.assertEqual(await scalar("SELECT count(*) FROM testapp_author"), 1)

    async def test_asave_multi_table_child_writes_both_tables(self) -> None:
        author = await Author.objects.acreate(name="Ann")
        novel = Novel(title="N", author=author, genre="sf")
        await novel.asave()
        self.assertEqual(
            await scalar(
                "SELECT b.title || '/' || n.genre FROM testapp_novel n "
                "JOIN testapp_book b ON b.id = n.book_ptr_id"
            ),
            "N/sf",
        )

    async def test_adelete_removes_the_row(self) -> None:
        author = await Author.objects.acreate(name="Ann")
        await author.adelete()
        self.assertEqual(await scalar("SELECT count(*) FROM testapp_author"), 0)

    async def test_arefresh_from_db_reloads_fields(self) -> None:
        author = await Author.objects.acreate(name="Ann")
        await Author.objects.filter(pk=author.pk).aupdate(name="Anne")
        await author.arefresh_from_db()
        self.assertEqual(author.name, "Anne")

    async def test_related_manager_aadd_is_native(self) -> None:
        author = await Author.objects.acreate(name="Ann")
        book = await Book.objects.acreate(title="t", author=author)
        tag = await Tag.objects.acreate(name="x")
        async with async_atomic():
            await book.tags.aadd(tag)
        self.assertEqual(await scalar("SELECT count(*) FROM testapp_book_tags"), 1)

    async def test_mixin_after_model_is_refused(self) -> None:
        from django.core.exceptions import ImproperlyConfigured
        from django.db import models
        from django.test.utils import isolate_apps

        from django_async_backend.db.models import AsyncModelMixin

        with (
            isolate_apps("testapp"),
            self.assertRaisesRegex(ImproperlyConfigured, "before models.Model"),
        ):

            class Misordered(models.Model, AsyncModelMixin):
                class Meta:
                    app_label = "testapp"

    async def test_model_without_manager_gets_async_manager(self) -> None:
        from django_async_backend.db.models import AsyncManager

        self.assertIsInstance(Author.objects, AsyncManager)


class AtomicTests(AsyncioTestCase):
    async def test_acreate_joins_a_rolled_back_block(self) -> None:
        with self.assertRaises(Boom):
            async with async_atomic():
                await Author.objects.acreate(name="Ann")
                raise Boom
        self.assertEqual(await scalar("SELECT count(*) FROM testapp_author"), 0)

    async def test_asave_joins_a_rolled_back_block(self) -> None:
        author = await Author.objects.acreate(name="Ann")
        with self.assertRaises(Boom):
            async with async_atomic():
                author.name = "changed"
                await author.asave()
                raise Boom
        self.assertEqual(
            await scalar("SELECT name FROM testapp_author WHERE id = %s", [author.pk]),
            "Ann",
        )

    async def test_failed_get_or_create_leaves_the_block_usable(self) -> None:
        await Author.objects.acreate(name="Ann")
        async with async_atomic():
            # Django's own atomic block inside get_or_create nests as a savepoint.
            _, created = await Author.objects.aget_or_create(name="Ann")
            await Author.objects.acreate(name="Bob")
        self.assertFalse(created)
        self.assertEqual(await scalar("SELECT count(*) FROM testapp_author"), 2)


class SavepointTests(AsyncioTestCase):
    async def test_integrity_error_in_get_or_create_keeps_the_block(self) -> None:
        await Author.objects.acreate(name="Ann")
        async with async_atomic():
            # get() misses (born differs), create() violates the unique name:
            # Django's savepoint inside get_or_create rolls the insert back.
            with self.assertRaises(IntegrityError):
                await Author.objects.aget_or_create(name="Ann", born=date(2000, 1, 1))
            await Author.objects.acreate(name="Bob")
        self.assertEqual(await scalar("SELECT count(*) FROM testapp_author"), 2)


class SignalTests(AsyncioTestCase):
    async def test_async_receiver_runs_in_the_same_task_and_block(self) -> None:
        seen: list[Any] = []

        async def receiver(sender: Any, instance: Any, **kwargs: Any) -> None:
            seen.append(asyncio.current_task())
            await Tag.objects.acreate(name=f"for-{instance.name}")

        post_save.connect(receiver, sender=Author, weak=False)
        self.addCleanup(post_save.disconnect, receiver, sender=Author)
        with self.assertRaises(Boom):
            async with async_atomic():
                await Author.objects.acreate(name="Ann")
                self.assertEqual(await scalar("SELECT count(*) FROM testapp_tag"), 1)
                raise Boom
        self.assertEqual(seen, [asyncio.current_task()])
        self.assertEqual(await scalar("SELECT count(*) FROM testapp_tag"), 0)

    async def test_sync_receiver_queries_natively(self) -> None:
        def receiver(sender: Any, instance: Any, **kwargs: Any) -> None:
            Tag.objects.create(name=f"for-{instance.name}")

        post_save.connect(receiver, sender=Author, weak=False)
        self.addCleanup(post_save.disconnect, receiver, sender=Author)
        await Author.objects.acreate(name="Ann")
        self.assertEqual(await scalar("SELECT name FROM testapp_tag"), "for-Ann")


class SignalSendOutsideTheBridgeTests(unittest.TestCase):
    """Outside the bridge, ``Signal.send``/``send_robust`` are Django's own:
    no frame of the package between a sender and its receivers, so that a
    receiver's ``warnings.warn(stacklevel=...)`` points where Django says
    (``override_settings`` of a complex setting names the test's line)."""

    def setUp(self) -> None:
        model_signals.install()  # the bridge hooks (once per process)

    def assert_warning_points_at_the_caller(self, method: str) -> None:
        signal = Signal()

        def receiver(**kwargs: Any) -> None:
            # 1: here, 2: the signal's send method, 3: the line calling it.
            warnings.warn("from the receiver", UserWarning, stacklevel=3)

        signal.connect(receiver, weak=False)
        send = getattr(signal, method)
        with self.assertWarns(UserWarning) as caught:
            line = sys._getframe().f_lineno + 1
            send(sender=None)
        self.assertEqual((caught.filename, caught.lineno), (__file__, line))

    def test_send(self) -> None:
        self.assert_warning_points_at_the_caller("send")

    def test_send_robust(self) -> None:
        self.assert_warning_points_at_the_caller("send_robust")


class LoudFailureTests(AsyncioTestCase):
    async def test_lazy_foreign_key_names_select_related(self) -> None:
        author = await Author.objects.acreate(name="Ann")
        await Book.objects.acreate(title="t", author=author)
        book = await Book.objects.aget(title="t")
        with self.assertRaisesRegex(SynchronousOnlyOperation, "select_related"):
            book.author  # noqa: B018

    async def test_lazy_reverse_one_to_one_names_select_related(self) -> None:
        author = await Author.objects.acreate(name="Ann")
        await Profile.objects.acreate(author=author)
        fetched = await Author.objects.aget(pk=author.pk)
        with self.assertRaisesRegex(SynchronousOnlyOperation, "select_related"):
            fetched.profile  # noqa: B018

    async def test_lazy_foreign_key_loads_inside_the_bridge(self) -> None:
        author = await Author.objects.acreate(name="Ann")
        await Book.objects.acreate(title="t", author=author)
        book = await Book.objects.aget(title="t")
        self.assertEqual(await run_native(lambda: book.author.name), "Ann")


class NoThreadTests(AsyncioTestCase):
    async def test_orm_calls_use_no_thread(self) -> None:
        with no_threads():
            author = await Author.objects.acreate(name="Ann")
            await Author.objects.aget(pk=author.pk)
            author.name = "Anne"
            await author.asave()
            names = [a.name async for a in Author.objects.all()]
            await author.adelete()
        self.assertEqual(names, ["Anne"])


class CommittedTests(AsyncioTransactionTestCase):
    """Outcomes seen from another session: the ORM's writes really commit."""

    available_apps = ["testapp"]

    async def test_acreate_outside_a_block_commits(self) -> None:
        await Author.objects.acreate(name="Ann")
        self.assertEqual(outside("SELECT name FROM testapp_author"), [("Ann",)])

    async def test_select_for_update_in_async_atomic_locks_the_row(self) -> None:
        author = await Author.objects.acreate(name="Ann")
        async with async_atomic():
            await Author.objects.select_for_update().aget(pk=author.pk)
            free = outside(
                "SELECT id FROM testapp_author WHERE id = %s FOR UPDATE SKIP LOCKED",
                [author.pk],
            )
        self.assertEqual(free, [])


class CancellationTests(AsyncioTransactionTestCase):
    """A task cancelled during a native ORM call leaves nothing behind."""

    available_apps = ["testapp"]

    def setUp(self) -> None:
        self.app = f"dab-orm-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.enterContext(
            temporary_alias("orm", OPTIONS={"application_name": self.app})
        )

    async def sleeping_count(self) -> int:
        qs = Author.objects.using("orm").extra(where=["pg_sleep(5) IS NOT NULL"])
        return int(await qs.acount())

    async def test_cancelled_query_in_async_atomic_commits_nothing(self) -> None:
        async def work() -> None:
            async with async_atomic(using="orm"):
                await Author.objects.using("orm").acreate(name="Ann")
                await self.sleeping_count()

        task = asyncio.create_task(work())
        self.assertTrue(await poll(lambda: running(self.app, "pg_sleep")))
        task.cancel()
        with self.assertRaises(asyncio.CancelledError):
            await task
        self.assertEqual(outside("SELECT count(*) FROM testapp_author"), [(0,)])
        self.assertTrue(await poll(lambda: idle_in_transaction(self.app) == 0))

    async def test_cancelled_commit_of_a_sync_atomic_is_let_finish(self) -> None:
        # Novel.save() runs Django's own atomic block (multi-table insert),
        # whose COMMIT is slowed down here by a deferred trigger. Cancelled
        # while it runs, the COMMIT is let finish: its outcome is known, its
        # on_commit callback runs, and then the cancellation propagates.
        outside(SLOW_COMMIT_SQL)
        self.addCleanup(outside, DROP_SLOW_COMMIT_SQL)
        ran: list[str] = []

        def save_and_announce(author: Author) -> None:
            with transaction.atomic(using="orm"):
                Novel.objects.using("orm").create(title="N", author=author)
                transaction.on_commit(lambda: ran.append("announced"), using="orm")

        async def work() -> None:
            author = await Author.objects.using("orm").acreate(name="Ann")
            await run_native(save_and_announce, author)
            ran.append("after")

        task = asyncio.create_task(work())
        self.assertTrue(await poll(lambda: running(self.app, "COMMIT")))
        task.cancel()
        with self.assertRaises(asyncio.CancelledError):
            await task
        self.assertEqual(outside("SELECT count(*) FROM testapp_novel"), [(1,)])
        self.assertEqual(ran, ["announced"])
        self.assertTrue(await poll(lambda: idle_in_transaction(self.app) == 0))

    async def test_cancelled_insert_in_a_sync_atomic_commits_nothing(self) -> None:
        # Novel.save() inserts the Book row, then the Novel row, in Django's
        # own atomic block; the second INSERT is held by a trigger that sleeps.
        outside(SLOW_INSERT_SQL)
        self.addCleanup(outside, DROP_SLOW_INSERT_SQL)

        async def work() -> None:
            author = await Author.objects.using("orm").acreate(name="Ann")
            await Novel.objects.using("orm").acreate(title="N", author=author)

        task = asyncio.create_task(work())
        self.assertTrue(
            await poll(lambda: running(self.app, 'INSERT INTO "testapp_novel"'))
        )
        task.cancel()
        with self.assertRaises(asyncio.CancelledError):
            await task
        self.assertEqual(outside("SELECT count(*) FROM testapp_book"), [(0,)])
        self.assertTrue(await poll(lambda: idle_in_transaction(self.app) == 0))

    async def test_same_task_works_after_a_cancelled_call(self) -> None:
        async def cancel_when_sleeping(task: asyncio.Task[Any]) -> None:
            await poll(lambda: running(self.app, "pg_sleep"))
            task.cancel()

        async def work() -> None:
            me = asyncio.current_task()
            assert me is not None
            watcher = asyncio.create_task(cancel_when_sleeping(me))
            try:
                async with async_atomic(using="orm"):
                    await Author.objects.using("orm").acreate(name="before")
                    await self.sleeping_count()
            except asyncio.CancelledError:
                me.uncancel()
            await watcher
            await Author.objects.using("orm").acreate(name="after")

        await asyncio.create_task(work())
        self.assertEqual(outside("SELECT name FROM testapp_author"), [("after",)])


SLOW_COMMIT_SQL = """
CREATE OR REPLACE FUNCTION testapp_slow_commit() RETURNS trigger
LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.5); RETURN NULL; END $$;
DROP TRIGGER IF EXISTS testapp_slow_commit ON testapp_novel;
CREATE CONSTRAINT TRIGGER testapp_slow_commit AFTER INSERT ON testapp_novel
DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION testapp_slow_commit();
"""
DROP_SLOW_COMMIT_SQL = """
DROP TRIGGER IF EXISTS testapp_slow_commit ON testapp_novel;
DROP FUNCTION IF EXISTS testapp_slow_commit();
"""


class UnknownAliasTests(AsyncioTestCase):
    async def test_unknown_alias_raises_django_error_without_thread(self) -> None:
        from django.utils.connection import ConnectionDoesNotExist

        with no_threads(), self.assertRaises(ConnectionDoesNotExist):
            await Author.objects.using("nowhere").acount()


class FallbackTests(unittest.IsolatedAsyncioTestCase):
    async def test_other_engine_runs_django_own_method(self) -> None:
        # SQLite's in-memory database has no tables: Django's own acount()
        # (in its thread, on the sync connection) reports it; the bridge
        # would have refused the sync connection instead.
        with self.assertRaisesRegex(OperationalError, "no such table"):
            await Author.objects.using("sqlite").acount()
        # Closed where it was opened (Django's connections are per thread).
        await sync_to_async(lambda: connections["sqlite"].close())()


SWITCH_SCRIPT = """
import asyncio, sys
import settings
settings.ASYNC_BACKEND_NATIVE_ORM = True
import support
from django_async_backend.db.transaction import async_atomic
from test_no_threads import no_threads
from testapp.models import Account

class Boom(Exception):
    pass

async def main():
    with no_threads():
        try:
            async with async_atomic():
                await Account.objects.acreate(name="switch-on", balance=1)
                raise Boom
        except Boom:
            pass
        print(await Account.objects.filter(name="switch-on").acount())

asyncio.run(main())
"""


class SwitchTests(unittest.TestCase):
    def test_setting_makes_plain_models_native(self) -> None:
        # A fresh process: the switch changes Django's classes for good.
        tests_dir = os.path.dirname(os.path.abspath(__file__))
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [
                    tests_dir,
                    os.path.dirname(tests_dir),
                    os.environ.get("PYTHONPATH", ""),
                ]
            ),
        }
        result = subprocess.run(
            [sys.executable, "-c", SWITCH_SCRIPT],
            capture_output=True,
            text=True,
            env=env,
            cwd=tests_dir,
            timeout=120,
            check=False,
        )
        self.assertEqual(
            (result.returncode, result.stdout.strip()), (0, "0"), result.stderr
        )


SLOW_INSERT_SQL = """
CREATE OR REPLACE FUNCTION testapp_slow_insert() RETURNS trigger
LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(5); RETURN NEW; END $$;
DROP TRIGGER IF EXISTS testapp_slow_insert ON testapp_novel;
CREATE TRIGGER testapp_slow_insert BEFORE INSERT ON testapp_novel
FOR EACH ROW EXECUTE FUNCTION testapp_slow_insert();
"""
DROP_SLOW_INSERT_SQL = """
DROP TRIGGER IF EXISTS testapp_slow_insert ON testapp_novel;
DROP FUNCTION IF EXISTS testapp_slow_insert();
"""
