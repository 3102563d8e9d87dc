"""Native async ORM: model instances (asave, adelete, arefresh_from_db),
on_delete rules, model signals, the loud lazy-relation failure, the fallback
on another ENGINE, and no thread anywhere.

One behaviour per test, checked in the database (orm_support).
"""

from __future__ import annotations

import asyncio
import unittest
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from asgiref.sync import sync_to_async
from django.core.exceptions import SynchronousOnlyOperation
from django.core.management import call_command
from django.db import DatabaseError, IntegrityError, connections
from django.db.models import Count, ProtectedError
from django.db.models.signals import (
    ModelSignal,
    post_delete,
    post_save,
    pre_delete,
    pre_save,
)

import support
from django_async_backend.test import AsyncioTestCase
from orm_support import assert_rolled_back, rows, scalar, seed
from test_no_threads import ThreadUsed, no_threads
from testapp.models import Author, Book, Chapter, Loan, Novel, Profile, Tag

support.ensure_test_tables()


@contextmanager
def receiver(signal: ModelSignal, func: Any, sender: type) -> Iterator[None]:
    signal.connect(func, sender=sender, weak=False)
    try:
        yield
    finally:
        signal.disconnect(func, sender=sender)


class SaveTests(AsyncioTestCase):
    async def asyncSetUp(self) -> None:
        self.ids: dict[str, Any] = await seed()

    async def book(self, title: str) -> Book:
        return await Book.objects.aget(title=title)

    async def test_asave_inserts_a_new_object(self) -> None:
        tag = Tag(name="fresh")
        await tag.asave()
        self.assertEqual(
            await scalar("SELECT name FROM testapp_tag WHERE id = %s", [tag.pk]),
            "fresh",
        )

    async def test_asave_updates_an_existing_object(self) -> None:
        book = await self.book("Beta")
        book.pages = 351
        await book.asave()
        self.assertEqual(
            await scalar("SELECT pages FROM testapp_book WHERE id = %s", [book.pk]),
            351,
        )

    async def test_asave_update_fields_leaves_other_columns(self) -> None:
        book = await self.book("Beta")
        await rows(
            "UPDATE testapp_book SET pages = 9 WHERE id = %s RETURNING id", [book.pk]
        )
        book.title, book.pages = "Beta 2", 1
        await book.asave(update_fields=["title"])
        self.assertEqual(
            await rows(
                "SELECT title, pages FROM testapp_book WHERE id = %s", [book.pk]
            ),
            [("Beta 2", 9)],
        )

    async def test_asave_force_insert_on_an_existing_pk_fails(self) -> None:
        book = await self.book("Beta")
        with self.assertRaises(IntegrityError):
            await book.asave(force_insert=True)

    async def test_asave_force_update_of_a_missing_row_fails(self) -> None:
        tag = Tag(pk=999_999, name="ghost")
        with self.assertRaisesRegex(DatabaseError, "did not affect any rows"):
            await tag.asave(force_update=True)

    async def test_asave_multi_table_child_inserts_both_rows(self) -> None:
        novel = Novel(title="Epic", author_id=self.ids["ann"], pages=9, genre="saga")
        await novel.asave()
        self.assertEqual(
            await rows(
                "SELECT b.title, n.genre FROM testapp_novel n "
                "JOIN testapp_book b ON b.id = n.book_ptr_id WHERE b.id = %s",
                [novel.pk],
            ),
            [("Epic", "saga")],
        )

    async def test_asave_multi_table_child_updates_both_rows(self) -> None:
        novel = await Novel.objects.acreate(
            title="Epic", author_id=self.ids["ann"], genre="saga"
        )
        novel.title, novel.genre = "Epic II", "myth"
        await novel.asave()
        self.assertEqual(
            await rows(
                "SELECT b.title, n.genre FROM testapp_novel n "
                "JOIN testapp_book b ON b.id = n.book_ptr_id WHERE b.id = %s",
                [novel.pk],
            ),
            [("Epic II", "myth")],
        )

    async def test_multi_table_child_is_found_through_the_parent(self) -> None:
        novel = await Novel.objects.acreate(title="Epic", author_id=self.ids["ann"])
        parent = await Book.objects.select_related("novel").aget(pk=novel.pk)
        self.assertEqual(parent.novel.pk, novel.pk)

    async def test_arefresh_from_db_reloads_every_field(self) -> None:
        book = await self.book("Beta")
        await rows(
            "UPDATE testapp_book SET pages = 1 WHERE id = %s RETURNING id", [book.pk]
        )
        await book.arefresh_from_db()
        self.assertEqual(book.pages, 1)

    async def test_arefresh_from_db_fields_reloads_only_those(self) -> None:
        book = await self.book("Beta")
        await rows(
            "UPDATE testapp_book SET pages = 1, title = 'B' WHERE id = %s RETURNING id",
            [book.pk],
        )
        await book.arefresh_from_db(fields=["pages"])
        self.assertEqual((book.title, book.pages), ("Beta", 1))

    async def test_arefresh_from_db_of_a_deleted_row_raises(self) -> None:
        tag = await Tag.objects.aget(name="red")
        await rows(
            "DELETE FROM testapp_book_tags WHERE tag_id = %s RETURNING id", [tag.pk]
        )
        await rows("DELETE FROM testapp_tag WHERE id = %s RETURNING id", [tag.pk])
        with self.assertRaises(Tag.DoesNotExist):
            await tag.arefresh_from_db()

    async def test_arefresh_from_db_loads_a_deferred_field(self) -> None:
        book = await Book.objects.only("title").aget(title="Beta")
        await book.arefresh_from_db(fields=["pages"])
        self.assertEqual(book.pages, 350)


class DeleteTests(AsyncioTestCase):
    async def asyncSetUp(self) -> None:
        self.ids: dict[str, Any] = await seed()

    async def test_adelete_removes_the_row(self) -> None:
        tag = await Tag.objects.aget(name="blue")
        await tag.adelete()
        self.assertEqual(
            await scalar("SELECT count(*) FROM testapp_tag WHERE name = 'blue'"), 0
        )

    async def test_adelete_cascades(self) -> None:
        book = await Book.objects.aget(title="Gamma")
        await Chapter.objects.acreate(book=book, number=1)
        author = await Author.objects.aget(name="Bob")
        _, per_model = await author.adelete()
        self.assertEqual(
            (per_model["testapp.Book"], per_model["testapp.Chapter"]), (2, 1)
        )
        self.assertEqual(
            await scalar(
                "SELECT count(*) FROM testapp_book WHERE author_id = %s",
                [self.ids["bob"]],
            ),
            0,
        )

    async def test_adelete_cascades_to_a_one_to_one(self) -> None:
        author = await Author.objects.aget(name="Ann")
        await Profile.objects.acreate(author=author, bio="hi")
        await author.adelete()
        self.assertEqual(await scalar("SELECT count(*) FROM testapp_profile"), 0)

    async def test_adelete_protected_raises_and_keeps_the_row(self) -> None:
        book = await Book.objects.aget(title="Alpha")
        await Loan.objects.acreate(book=book, borrower="Cy")
        with self.assertRaises(ProtectedError):
            await book.adelete()
        self.assertEqual(
            await scalar("SELECT count(*) FROM testapp_book WHERE id = %s", [book.pk]),
            1,
        )

    async def test_adelete_sets_null(self) -> None:
        book = await Book.objects.aget(title="Alpha")
        book.editor_id = self.ids["bob"]
        await book.asave()
        editor = await Author.objects.aget(pk=self.ids["bob"])
        await editor.adelete()
        self.assertEqual(
            await rows("SELECT editor_id FROM testapp_book WHERE id = %s", [book.pk]),
            [(None,)],
        )

    async def test_adelete_multi_table_child_removes_both_rows(self) -> None:
        novel = await Novel.objects.acreate(title="Epic", author_id=self.ids["ann"])
        await novel.adelete()
        self.assertEqual(
            await scalar("SELECT count(*) FROM testapp_book WHERE id = %s", [novel.pk]),
            0,
        )


class SignalTests(AsyncioTestCase):
    """Model signals' async receivers are awaited in the task and its block."""

    async def test_async_pre_and_post_save_receivers_are_awaited(self) -> None:
        seen: list[tuple[str, bool]] = []

        async def pre(sender: Any, instance: Tag, **kwargs: Any) -> None:
            await asyncio.sleep(0)
            seen.append(("pre", instance.pk is None))

        async def post(sender: Any, instance: Tag, created: bool, **kw: Any) -> None:
            seen.append(("post", created))

        with receiver(pre_save, pre, Tag), receiver(post_save, post, Tag):
            await Tag.objects.acreate(name="t")
        self.assertEqual(seen, [("pre", True), ("post", True)])

    async def test_async_receiver_runs_in_the_same_task(self) -> None:
        tasks: list[Any] = []

        async def post(sender: Any, **kwargs: Any) -> None:
            tasks.append(asyncio.current_task())

        with receiver(post_save, post, Tag):
            await Tag.objects.acreate(name="t")
        self.assertEqual(tasks, [asyncio.current_task()])

    async def test_async_receiver_sees_the_uncommitted_row(self) -> None:
        counts: list[int] = []

        async def post(sender: Any, instance: Tag, **kwargs: Any) -> None:
            counts.append(await Tag.objects.filter(pk=instance.pk).acount())

        with receiver(post_save, post, Tag):
            await Tag.objects.acreate(name="t")
        self.assertEqual(counts, [1])

    async def test_async_receiver_writes_roll_back_with_the_block(self) -> None:
        async def post(sender: Any, instance: Author, **kwargs: Any) -> None:
            await Tag.objects.acreate(name=f"{instance.name}-echo")

        async def create() -> None:
            await Author.objects.acreate(name="Eve")
            self.assertEqual(
                await scalar(
                    "SELECT count(*) FROM testapp_tag WHERE name = %s", ["Eve-echo"]
                ),
                1,
            )

        with receiver(post_save, post, Author):
            await assert_rolled_back(self, create)

    async def test_async_delete_receivers_are_awaited(self) -> None:
        seen: list[str] = []

        async def pre(sender: Any, instance: Tag, **kwargs: Any) -> None:
            seen.append(f"pre {instance.name}")

        async def post(sender: Any, instance: Tag, **kwargs: Any) -> None:
            seen.append(f"post {instance.name}")

        tag = await Tag.objects.acreate(name="t")
        with receiver(pre_delete, pre, Tag), receiver(post_delete, post, Tag):
            await tag.adelete()
        self.assertEqual(seen, ["pre t", "post t"])

    async def test_a_failing_async_receiver_fails_the_save(self) -> None:
        async def post(sender: Any, **kwargs: Any) -> None:
            raise RuntimeError("receiver failed")

        with receiver(post_save, post, Tag), self.assertRaises(RuntimeError):
            await Tag.objects.acreate(name="t")


class LoudFailureTests(AsyncioTestCase):
    async def asyncSetUp(self) -> None:
        self.ids: dict[str, Any] = await seed()

    async def test_lazy_foreign_key_raises_synchronous_only_operation(self) -> None:
        book = await Book.objects.aget(title="Alpha")
        with self.assertRaisesRegex(SynchronousOnlyOperation, "select_related"):
            book.author  # noqa: B018

    async def test_lazy_reverse_relation_raises(self) -> None:
        author = await Author.objects.aget(name="Ann")
        with self.assertRaises(SynchronousOnlyOperation):
            list(author.books.all())

    async def test_lazy_foreign_key_names_the_async_alternative(self) -> None:
        book = await Book.objects.aget(title="Alpha")
        with self.assertRaisesRegex(SynchronousOnlyOperation, "aget"):
            book.author  # noqa: B018


class NoThreadTests(AsyncioTestCase):
    async def test_the_whole_api_uses_no_thread(self) -> None:
        with no_threads():
            ids = await seed()
            author = await Author.objects.acreate(name="Cy")
            book = await Book.objects.acreate(title="T", author=author)
            await book.tags.aadd(ids["tags"]["red"])
            await Novel.objects.acreate(title="N", author=author)
            [b async for b in Book.objects.prefetch_related("tags")]
            [b async for b in Book.objects.aiterator(chunk_size=2)]
            await Book.objects.filter(pk=book.pk).aupdate(pages=2)
            await book.arefresh_from_db()
            await Book.objects.aaggregate(n=Count("id"))
            await author.adelete()
        self.assertEqual(book.pages, 2)


class OtherEngineFallbackTests(unittest.IsolatedAsyncioTestCase):
    """On an alias of another ENGINE ('sqlite'), Django's own methods run."""

    async def asyncTearDown(self) -> None:
        # The in-memory database lives in the one thread sync_to_async uses.
        await sync_to_async(lambda: connections["sqlite"].close())()

    async def test_sqlite_alias_runs_django_methods(self) -> None:
        await sync_to_async(call_command)(
            "migrate", "testapp", database="sqlite", verbosity=0
        )
        await Tag.objects.using("sqlite").acreate(name="lite")
        self.assertEqual(await Tag.objects.using("sqlite").acount(), 1)

    async def test_sqlite_alias_goes_through_a_thread(self) -> None:
        with no_threads(), self.assertRaises(ThreadUsed):
            await Tag.objects.using("sqlite").acount()
