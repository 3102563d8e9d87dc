"""Native async ORM: every QuerySet terminal method, fed by the chainable ones.

One behaviour per test, checked in the database on the task's connection
(orm_support). See docs/orm.md; the engine's own tests are test_orm_core.py.
"""

from __future__ import annotations

import datetime
from typing import Any

from django.core.exceptions import SynchronousOnlyOperation
from django.db.models import Count, F, Max, Sum, Value
from django.db.models.functions import Upper

import support
from django_async_backend.db.models import AsyncQuerySet
from django_async_backend.db.transaction import async_atomic
from django_async_backend.test import AsyncioTestCase
from orm_support import rows, scalar, seed
from testapp.models import Author, Book, Item, Tag

support.ensure_test_tables()


class TerminalMethodTests(AsyncioTestCase):
    async def asyncSetUp(self) -> None:
        self.ids: dict[str, Any] = await seed()

    async def test_aget_returns_the_row(self) -> None:
        book = await Book.objects.aget(title="Beta")
        self.assertEqual((book.pk, book.pages), (self.ids["books"]["Beta"], 350))

    async def test_aget_raises_multiple_objects_returned(self) -> None:
        with self.assertRaises(Book.MultipleObjectsReturned):
            await Book.objects.aget(author_id=self.ids["ann"])

    async def test_acreate_inserts_the_row(self) -> None:
        await Book.objects.acreate(title="New", author_id=self.ids["bob"], pages=7)
        self.assertEqual(
            await scalar("SELECT pages FROM testapp_book WHERE title = 'New'"), 7
        )

    async def test_aget_or_create_gets_an_existing_row(self) -> None:
        tag, created = await Tag.objects.aget_or_create(name="red")
        self.assertEqual((tag.pk, created), (self.ids["tags"]["red"], False))

    async def test_aget_or_create_creates_a_missing_row(self) -> None:
        tag, created = await Tag.objects.aget_or_create(name="cyan")
        self.assertTrue(created)
        self.assertEqual(
            await scalar("SELECT name FROM testapp_tag WHERE id = %s", [tag.pk]), "cyan"
        )

    async def test_aupdate_or_create_updates_an_existing_row(self) -> None:
        _, created = await Book.objects.aupdate_or_create(
            title="Alpha", defaults={"pages": 101}
        )
        self.assertFalse(created)
        self.assertEqual(
            await scalar("SELECT pages FROM testapp_book WHERE title = 'Alpha'"), 101
        )

    async def test_aupdate_or_create_creates_with_create_defaults(self) -> None:
        _, created = await Book.objects.aupdate_or_create(
            title="Omega",
            defaults={"pages": 1},
            create_defaults={"pages": 2, "author_id": self.ids["ann"]},
        )
        self.assertTrue(created)
        self.assertEqual(
            await scalar("SELECT pages FROM testapp_book WHERE title = 'Omega'"), 2
        )

    async def test_abulk_create_inserts_every_row_with_its_pk(self) -> None:
        made = await Tag.objects.abulk_create([Tag(name="x"), Tag(name="y")])
        self.assertTrue(all(tag.pk for tag in made))
        found = await rows("SELECT name FROM testapp_tag WHERE name IN ('x', 'y')")
        self.assertEqual(sorted(found), [("x",), ("y",)])

    async def test_abulk_create_ignore_conflicts_skips_duplicates(self) -> None:
        await Tag.objects.abulk_create(
            [Tag(name="red"), Tag(name="new")], ignore_conflicts=True
        )
        self.assertEqual(await scalar("SELECT count(*) FROM testapp_tag"), 4)

    async def test_abulk_update_writes_every_object(self) -> None:
        books = [book async for book in Book.objects.filter(author_id=self.ids["ann"])]
        for book in books:
            book.pages = 1
        self.assertEqual(await Book.objects.abulk_update(books, ["pages"]), 2)
        self.assertEqual(
            await scalar("SELECT count(*) FROM testapp_book WHERE pages = 1"), 2
        )

    async def test_acount(self) -> None:
        self.assertEqual(await Book.objects.filter(pages__gte=100).acount(), 3)

    async def test_ain_bulk(self) -> None:
        wanted = [self.ids["books"]["Alpha"], self.ids["books"]["Gamma"]]
        found = await Book.objects.ain_bulk(wanted)
        self.assertEqual(
            {pk: b.title for pk, b in found.items()},
            {
                wanted[0]: "Alpha",
                wanted[1]: "Gamma",
            },
        )

    async def test_alatest(self) -> None:
        dated = Book.objects.filter(published__isnull=False)
        self.assertEqual((await dated.alatest("published")).title, "Gamma")

    async def test_aearliest(self) -> None:
        self.assertEqual((await Book.objects.aearliest("published")).title, "Alpha")

    async def test_afirst(self) -> None:
        book = await Book.objects.order_by("-pages").afirst()
        self.assertEqual(book and book.title, "Gamma")

    async def test_alast(self) -> None:
        book = await Book.objects.order_by("-pages").alast()
        self.assertEqual(book and book.title, "Delta")

    async def test_afirst_of_nothing_is_none(self) -> None:
        self.assertIsNone(await Book.objects.filter(pages__lt=0).afirst())

    async def test_aaggregate(self) -> None:
        result = await Book.objects.aaggregate(total=Sum("pages"), most=Max("pages"))
        self.assertEqual(result, {"total": 1000, "most": 500})

    async def test_aexists(self) -> None:
        self.assertTrue(await Book.objects.filter(title="Beta").aexists())
        self.assertFalse(await Book.objects.filter(title="Zeta").aexists())

    async def test_acontains(self) -> None:
        beta = await Book.objects.aget(title="Beta")
        self.assertTrue(await Book.objects.filter(pages__gt=300).acontains(beta))
        self.assertFalse(await Book.objects.filter(pages__gt=400).acontains(beta))

    async def test_aupdate_writes_the_rows(self) -> None:
        changed = await Book.objects.filter(author_id=self.ids["bob"]).aupdate(
            pages=F("pages") + 1
        )
        self.assertEqual(changed, 2)
        self.assertEqual(
            await scalar(
                "SELECT sum(pages) FROM testapp_book WHERE author_id = %s",
                [self.ids["bob"]],
            ),
            552,
        )

    async def test_adelete_removes_the_rows_and_counts_them(self) -> None:
        deleted, per_model = await Book.objects.filter(pages__lt=200).adelete()
        # Alpha's two tag links go with it.
        self.assertEqual((deleted, per_model["testapp.Book"]), (4, 2))
        self.assertEqual(await scalar("SELECT count(*) FROM testapp_book"), 2)

    async def test_aexplain_returns_the_plan(self) -> None:
        plan = await Book.objects.filter(pages__gt=10).aexplain()
        self.assertIn("testapp_book", plan)

    async def test_async_for_yields_every_object(self) -> None:
        self.assertEqual(
            [b.title async for b in Book.objects.order_by("title")],
            ["Alpha", "Beta", "Delta", "Gamma"],
        )

    async def test_aiterator_yields_every_object(self) -> None:
        titles = [b.title async for b in Book.objects.aiterator(chunk_size=1)]
        self.assertEqual(titles, ["Alpha", "Beta", "Gamma", "Delta"])

    async def test_aiterator_declares_a_named_cursor(self) -> None:
        seen = []
        async for _ in Book.objects.filter(pages__gt=0).aiterator(chunk_size=2):
            seen += await rows(
                "SELECT name, statement FROM pg_cursors WHERE statement LIKE %s",
                ["%DECLARE%testapp_book%"],
            )
        self.assertTrue(seen)
        self.assertTrue(all(name.startswith("_django_async_curs_") for name, _ in seen))

    async def test_aiterator_rejects_a_bad_chunk_size(self) -> None:
        with self.assertRaises(ValueError):
            async for _ in Book.objects.aiterator(chunk_size=0):
                pass


class ChainedMethodTests(AsyncioTestCase):
    """Each chainable method feeding a native terminal method."""

    async def asyncSetUp(self) -> None:
        self.ids: dict[str, Any] = await seed()

    async def titles(self, qs: Any) -> list[str]:
        return [b.title async for b in qs]

    async def test_filter(self) -> None:
        qs = Book.objects.filter(author__name="Ann").order_by("title")
        self.assertEqual(await self.titles(qs), ["Alpha", "Beta"])

    async def test_exclude(self) -> None:
        qs = Book.objects.exclude(pages__gte=100)
        self.assertEqual(await self.titles(qs), ["Delta"])

    async def test_annotate(self) -> None:
        qs = Author.objects.annotate(n=Count("books")).order_by("name")
        self.assertEqual([(a.name, a.n) async for a in qs], [("Ann", 2), ("Bob", 2)])

    async def test_alias_filters_without_selecting(self) -> None:
        qs = Book.objects.alias(doubled=F("pages") * 2).filter(doubled__gt=800)
        book = await qs.aget()
        self.assertEqual((book.title, hasattr(book, "doubled")), ("Gamma", False))

    async def test_order_by(self) -> None:
        qs = Book.objects.order_by("-pages")
        self.assertEqual(await self.titles(qs), ["Gamma", "Beta", "Alpha", "Delta"])

    async def test_values(self) -> None:
        qs = Book.objects.filter(title="Beta").values("title", "pages")
        self.assertEqual([row async for row in qs], [{"title": "Beta", "pages": 350}])

    async def test_values_list_flat(self) -> None:
        qs = Tag.objects.order_by("name").values_list("name", flat=True)
        self.assertEqual([n async for n in qs], ["blue", "green", "red"])

    async def test_values_list_named(self) -> None:
        row = await Book.objects.values_list("title", "pages", named=True).aget(
            title="Delta"
        )
        self.assertEqual((row.title, row.pages), ("Delta", 50))

    async def test_dates(self) -> None:
        qs = Book.objects.dates("published", "year")
        self.assertEqual(
            [d async for d in qs],
            [
                datetime.date(2020, 1, 1),
                datetime.date(2021, 1, 1),
                datetime.date(2022, 1, 1),
            ],
        )

    async def test_datetimes(self) -> None:
        items: AsyncQuerySet[Item] = AsyncQuerySet(model=Item)
        made = await items.acreate(name="now")
        days = [d async for d in items.datetimes("created", "day")]
        self.assertEqual([d.date() for d in days], [made.created.date()])

    async def test_distinct(self) -> None:
        qs = Author.objects.filter(books__pages__gt=0).distinct()
        self.assertEqual(await qs.acount(), 2)

    async def test_union(self) -> None:
        qs = Book.objects.filter(pages=100).union(Book.objects.filter(pages=500))
        self.assertEqual(sorted(await self.titles(qs)), ["Alpha", "Gamma"])

    async def test_intersection(self) -> None:
        qs = Book.objects.filter(pages__gt=90).intersection(
            Book.objects.filter(pages__lt=400)
        )
        self.assertEqual(sorted(await self.titles(qs)), ["Alpha", "Beta"])

    async def test_difference(self) -> None:
        qs = Book.objects.all().difference(Book.objects.filter(pages__gt=90))
        self.assertEqual(await self.titles(qs), ["Delta"])

    async def test_select_related_loads_the_relation(self) -> None:
        book = await Book.objects.select_related("author").aget(title="Gamma")
        async with self.assertNumQueries(0):
            self.assertEqual(book.author.name, "Bob")

    async def test_without_select_related_the_relation_fails_loudly(self) -> None:
        book = await Book.objects.aget(title="Gamma")
        with self.assertRaisesRegex(SynchronousOnlyOperation, "prefetch_related"):
            book.author  # noqa: B018

    async def test_defer_leaves_the_field_unloaded(self) -> None:
        book = await Book.objects.defer("pages").aget(title="Beta")
        self.assertEqual(book.get_deferred_fields(), {"pages"})

    async def test_only_loads_just_those_fields(self) -> None:
        book = await Book.objects.only("title").aget(title="Beta")
        self.assertNotIn("title", book.get_deferred_fields())
        self.assertIn("pages", book.get_deferred_fields())

    async def test_raw(self) -> None:
        qs = Book.objects.raw(
            "SELECT * FROM testapp_book WHERE pages > %s ORDER BY title", [300]
        )
        self.assertEqual([b.title async for b in qs], ["Beta", "Gamma"])

    async def test_annotated_expression_in_values(self) -> None:
        qs = Tag.objects.annotate(big=Upper("name"), one=Value(1)).order_by("name")
        first, *_ = [(t.big, t.one) async for t in qs]
        self.assertEqual(first, ("BLUE", 1))

    async def test_prefetch_related_loads_the_relation(self) -> None:
        qs = Book.objects.prefetch_related("tags").filter(title="Alpha")
        (book,) = [b async for b in qs]
        async with self.assertNumQueries(0):
            names = sorted(t.name for t in book.tags.all())
        self.assertEqual(names, ["green", "red"])

    async def test_prefetch_related_reverse_foreign_key(self) -> None:
        qs = Author.objects.prefetch_related("books").order_by("name")
        authors = [a async for a in qs]
        async with self.assertNumQueries(0):
            titles = [sorted(b.title for b in a.books.all()) for a in authors]
        self.assertEqual(titles, [["Alpha", "Beta"], ["Delta", "Gamma"]])

    async def test_prefetch_related_with_aiterator(self) -> None:
        qs = Book.objects.prefetch_related("tags").order_by("id")
        tags = [
            sorted(t.name for t in b.tags.all())
            async for b in qs.aiterator(chunk_size=2)
        ]
        self.assertEqual(tags, [["green", "red"], [], ["blue"], []])

    async def test_custom_queryset_method_chains(self) -> None:
        self.assertEqual(await Book.objects.long().acount(), 2)

    async def test_custom_manager_queryset_feeds_native_methods(self) -> None:
        titles = [b.title async for b in Book.long_books.order_by("title")]
        self.assertEqual(titles, ["Beta", "Gamma"])

    async def test_values_with_aiterator(self) -> None:
        qs = Book.objects.filter(pages__gt=300).values_list("title", flat=True)
        self.assertEqual(
            [t async for t in qs.aiterator(chunk_size=1)], ["Beta", "Gamma"]
        )

    async def test_abulk_create_update_conflicts_updates_the_row(self) -> None:
        await Book.objects.abulk_create(
            [
                Book(
                    pk=self.ids["books"]["Beta"],
                    title="Beta",
                    pages=1,
                    author_id=self.ids["ann"],
                )
            ],
            update_conflicts=True,
            unique_fields=["id"],
            update_fields=["pages"],
        )
        self.assertEqual(
            await scalar("SELECT pages FROM testapp_book WHERE title = 'Beta'"), 1
        )

    async def test_select_for_update_of_self_with_select_related(self) -> None:
        async with async_atomic():
            book = await (
                Book.objects.select_related("author")
                .select_for_update(of=("self",))
                .aget(title="Beta")
            )
            self.assertEqual(book.author.name, "Ann")

    async def test_breaking_out_of_async_for_leaves_the_connection_usable(self) -> None:
        async for _ in Book.objects.all():
            break
        self.assertEqual(await Book.objects.acount(), 4)
