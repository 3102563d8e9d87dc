"""Native async ORM: related managers, and every write method inside
async_atomic() -- rolled back, it leaves no trace -- and select_for_update()
locking rows for real (seen from a second, independent connection).

One behaviour per test, checked in the database (orm_support).
"""

from __future__ import annotations

import asyncio
from typing import Any

from django.db import DatabaseError, OperationalError
from django.db.models import F
from django.db.models.signals import m2m_changed

import support
from django_async_backend.db import async_connections
from django_async_backend.db.transaction import async_atomic
from django_async_backend.test import AsyncioTestCase, AsyncioTransactionTestCase
from orm_support import assert_rolled_back, rows, scalar, seed
from support import outside
from testapp.models import Author, Book, Novel, Tag

support.ensure_test_tables()


async def tag_names(book_id: int) -> list[str]:
    found = await rows(
        "SELECT t.name FROM testapp_tag t JOIN testapp_book_tags bt "
        "ON bt.tag_id = t.id WHERE bt.book_id = %s ORDER BY t.name",
        [book_id],
    )
    return [name for (name,) in found]


class RelatedManagerTests(AsyncioTestCase):
    async def asyncSetUp(self) -> None:
        self.ids: dict[str, Any] = await seed()
        self.alpha = await Book.objects.aget(title="Alpha")
        self.beta = await Book.objects.aget(title="Beta")

    async def tag(self, name: str) -> Tag:
        tag: Tag = await Tag.objects.aget(name=name)
        return tag

    async def test_m2m_aadd(self) -> None:
        await self.beta.tags.aadd(await self.tag("red"), self.ids["tags"]["blue"])
        self.assertEqual(await tag_names(self.beta.pk), ["blue", "red"])

    async def test_m2m_aremove(self) -> None:
        await self.alpha.tags.aremove(await self.tag("red"))
        self.assertEqual(await tag_names(self.alpha.pk), ["green"])

    async def test_m2m_aclear(self) -> None:
        await self.alpha.tags.aclear()
        self.assertEqual(await tag_names(self.alpha.pk), [])

    async def test_m2m_aset(self) -> None:
        await self.alpha.tags.aset([await self.tag("blue"), await self.tag("red")])
        self.assertEqual(await tag_names(self.alpha.pk), ["blue", "red"])

    async def test_m2m_acreate(self) -> None:
        tag = await self.beta.tags.acreate(name="new")
        self.assertEqual(await tag_names(self.beta.pk), ["new"])
        self.assertEqual(tag.name, "new")

    async def test_m2m_aget_or_create_links_an_existing_object(self) -> None:
        tag, created = await self.beta.tags.aget_or_create(name="zzz")
        again, created_again = await self.beta.tags.aget_or_create(name="zzz")
        self.assertEqual((created, created_again, again.pk), (True, False, tag.pk))
        self.assertEqual(await tag_names(self.beta.pk), ["zzz"])

    async def test_m2m_aupdate_or_create(self) -> None:
        await self.beta.tags.aupdate_or_create(name="one")
        await self.beta.tags.aupdate_or_create(name="one", defaults={"name": "uno"})
        self.assertEqual(await tag_names(self.beta.pk), ["uno"])

    async def test_reverse_m2m_aadd(self) -> None:
        red = await self.tag("red")
        await red.books.aadd(self.beta)
        self.assertEqual(await tag_names(self.beta.pk), ["red"])

    async def test_m2m_async_for_reads_the_relation(self) -> None:
        names = sorted([t.name async for t in self.alpha.tags.all()])
        self.assertEqual(names, ["green", "red"])

    async def test_reverse_fk_acreate(self) -> None:
        ann = await Author.objects.aget(pk=self.ids["ann"])
        book = await ann.books.acreate(title="Third", pages=3)
        self.assertEqual(
            await scalar("SELECT author_id FROM testapp_book WHERE id = %s", [book.pk]),
            self.ids["ann"],
        )

    async def test_reverse_fk_aadd_moves_the_object(self) -> None:
        bob = await Author.objects.aget(pk=self.ids["bob"])
        await bob.books.aadd(self.alpha)
        self.assertEqual(
            await scalar(
                "SELECT author_id FROM testapp_book WHERE id = %s", [self.alpha.pk]
            ),
            self.ids["bob"],
        )

    async def test_reverse_fk_aget_or_create(self) -> None:
        ann = await Author.objects.aget(pk=self.ids["ann"])
        book, created = await ann.books.aget_or_create(title="Beta")
        self.assertEqual((book.pk, created), (self.beta.pk, False))

    async def test_reverse_fk_aupdate_or_create(self) -> None:
        ann = await Author.objects.aget(pk=self.ids["ann"])
        await ann.books.aupdate_or_create(title="Beta", defaults={"pages": 9})
        self.assertEqual(
            await scalar(
                "SELECT pages FROM testapp_book WHERE id = %s", [self.beta.pk]
            ),
            9,
        )

    async def test_nullable_reverse_fk_aremove_sets_null(self) -> None:
        ann = await Author.objects.aget(pk=self.ids["ann"])
        await ann.edited_books.aadd(self.beta)
        await ann.edited_books.aremove(self.beta)
        self.assertEqual(
            await rows(
                "SELECT editor_id FROM testapp_book WHERE id = %s", [self.beta.pk]
            ),
            [(None,)],
        )

    async def test_nullable_reverse_fk_aclear(self) -> None:
        ann = await Author.objects.aget(pk=self.ids["ann"])
        await ann.edited_books.aset([self.alpha, self.beta])
        await ann.edited_books.aclear()
        self.assertEqual(
            await scalar(
                "SELECT count(*) FROM testapp_book WHERE editor_id = %s", [ann.pk]
            ),
            0,
        )

    async def test_nullable_reverse_fk_aset(self) -> None:
        ann = await Author.objects.aget(pk=self.ids["ann"])
        await ann.edited_books.aset([self.alpha])
        await ann.edited_books.aset([self.beta])
        self.assertEqual(
            await rows("SELECT id FROM testapp_book WHERE editor_id = %s", [ann.pk]),
            [(self.beta.pk,)],
        )

    async def test_m2m_changed_async_receiver_is_awaited(self) -> None:
        seen: list[tuple[str, set[int]]] = []

        async def changed(sender: Any, action: str, pk_set: Any, **kw: Any) -> None:
            await asyncio.sleep(0)
            seen.append((action, set(pk_set or ())))

        m2m_changed.connect(changed, sender=Book.tags.through, weak=False)
        try:
            await self.beta.tags.aadd(self.ids["tags"]["red"])
        finally:
            m2m_changed.disconnect(changed, sender=Book.tags.through)
        red = self.ids["tags"]["red"]
        self.assertEqual(seen, [("pre_add", {red}), ("post_add", {red})])


class RollbackTests(AsyncioTestCase):
    """Each write method inside async_atomic(): undone by the rollback."""

    async def asyncSetUp(self) -> None:
        self.ids: dict[str, Any] = await seed()

    async def rolled_back(self, action: Any) -> None:
        await assert_rolled_back(self, action)

    async def test_acreate(self) -> None:
        await self.rolled_back(lambda: Tag.objects.acreate(name="t"))

    async def test_abulk_create(self) -> None:
        await self.rolled_back(
            lambda: Tag.objects.abulk_create([Tag(name="a"), Tag(name="b")])
        )

    async def test_aget_or_create(self) -> None:
        await self.rolled_back(lambda: Tag.objects.aget_or_create(name="t"))

    async def test_aupdate_or_create(self) -> None:
        await self.rolled_back(
            lambda: Book.objects.aupdate_or_create(title="Beta", defaults={"pages": 1})
        )

    async def test_aupdate(self) -> None:
        await self.rolled_back(lambda: Book.objects.aupdate(pages=F("pages") * 2))

    async def test_adelete_queryset(self) -> None:
        await self.rolled_back(lambda: Book.objects.filter(pages__lt=200).adelete())

    async def test_abulk_update(self) -> None:
        async def action() -> None:
            books = [b async for b in Book.objects.all()]
            for book in books:
                book.pages = 0
            await Book.objects.abulk_update(books, ["pages"])

        await self.rolled_back(action)

    async def test_asave(self) -> None:
        async def action() -> None:
            book = await Book.objects.aget(title="Beta")
            book.title = "changed"
            await book.asave()

        await self.rolled_back(action)

    async def test_asave_multi_table_child(self) -> None:
        await self.rolled_back(
            lambda: Novel(title="N", author_id=self.ids["ann"], genre="g").asave()
        )

    async def test_model_adelete_with_cascade(self) -> None:
        async def action() -> None:
            await (await Author.objects.aget(name="Bob")).adelete()

        await self.rolled_back(action)

    async def test_related_aadd(self) -> None:
        async def action() -> None:
            book = await Book.objects.aget(title="Beta")
            await book.tags.aadd(self.ids["tags"]["red"])

        await self.rolled_back(action)

    async def test_related_aset(self) -> None:
        async def action() -> None:
            book = await Book.objects.aget(title="Alpha")
            await book.tags.aset([self.ids["tags"]["blue"]])

        await self.rolled_back(action)

    async def test_related_aclear(self) -> None:
        async def action() -> None:
            await (await Book.objects.aget(title="Alpha")).tags.aclear()

        await self.rolled_back(action)

    async def test_related_acreate(self) -> None:
        async def action() -> None:
            await (await Book.objects.aget(title="Beta")).tags.acreate(name="n")

        await self.rolled_back(action)

    async def test_savepoint_rolls_back_only_the_inner_block(self) -> None:
        async with async_atomic():
            await Tag.objects.acreate(name="outer")
            await self.rolled_back(lambda: Tag.objects.acreate(name="inner"))
        found = await rows(
            "SELECT name FROM testapp_tag WHERE name = ANY(%s)", [["outer", "inner"]]
        )
        self.assertEqual(found, [("outer",)])


class SelectForUpdateTests(AsyncioTransactionTestCase):
    """Row locks taken natively, seen from an independent connection."""

    available_apps = ["testapp"]

    async def asyncSetUp(self) -> None:
        self.tag = await Tag.objects.acreate(name="locked")

    async def try_lock_elsewhere(self) -> Any:
        """Lock the row with NOWAIT on an independent connection."""
        async with async_connections.independent_connection():
            async with async_atomic():
                return await Tag.objects.select_for_update(nowait=True).aget(
                    pk=self.tag.pk
                )

    async def test_select_for_update_locks_the_row(self) -> None:
        async with async_atomic():
            await Tag.objects.select_for_update().aget(pk=self.tag.pk)
            with self.assertRaises(OperationalError) as caught:
                await asyncio.create_task(self.try_lock_elsewhere())
        self.assertEqual(caught.exception.__cause__.sqlstate, "55P03")  # type: ignore[union-attr]

    async def test_lock_is_released_at_commit(self) -> None:
        async with async_atomic():
            await Tag.objects.select_for_update().aget(pk=self.tag.pk)
        locked = await asyncio.create_task(self.try_lock_elsewhere())
        self.assertEqual(locked.pk, self.tag.pk)

    async def test_skip_locked_skips_the_locked_row(self) -> None:
        async with async_atomic():
            await Tag.objects.select_for_update().aget(pk=self.tag.pk)
            free = outside(
                "SELECT id FROM testapp_tag WHERE id = %s FOR UPDATE SKIP LOCKED",
                [self.tag.pk],
            )
        self.assertEqual(free, [])

    async def test_select_for_update_outside_a_block_is_refused(self) -> None:
        with self.assertRaises(DatabaseError):
            await Tag.objects.select_for_update().aget(pk=self.tag.pk)

    async def test_a_waiting_locker_times_out(self) -> None:
        async with async_atomic():
            await Tag.objects.select_for_update().aget(pk=self.tag.pk)
            with self.assertRaises(OperationalError) as caught:
                await asyncio.create_task(self.wait_for_lock())
        self.assertEqual(caught.exception.__cause__.sqlstate, "55P03")  # type: ignore[union-attr]

    async def wait_for_lock(self) -> None:
        """Wait for the row lock on an independent connection, briefly."""
        async with async_connections.independent_connection():
            async with async_atomic():
                async with async_connections["default"].cursor() as cursor:
                    await cursor.execute("SET LOCAL lock_timeout = '200ms'")
                await Tag.objects.select_for_update().aget(pk=self.tag.pk)
