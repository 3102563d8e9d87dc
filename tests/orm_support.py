"""Helpers shared by the native async ORM tests (tests/test_orm_*.py)."""

from __future__ import annotations

import unittest
from collections.abc import Awaitable, Callable
from typing import Any

import support  # noqa: F401 - configures Django
from django_async_backend.db import async_connections
from django_async_backend.db.transaction import async_atomic

__all__ = [
    "Boom",
    "assert_rolled_back",
    "rows",
    "scalar",
    "seed",
    "snapshot",
]

# Every table of the ORM models, in a fixed order.
TABLES = (
    "testapp_author",
    "testapp_profile",
    "testapp_tag",
    "testapp_book",
    "testapp_book_tags",
    "testapp_novel",
    "testapp_chapter",
    "testapp_loan",
)


class Boom(Exception):
    """Raised to roll an async_atomic() block back."""


async def rows(sql: str, params: Any = None, alias: str = "default") -> list[Any]:
    """All rows of ``sql``, read on the task's own connection (so inside its
    transaction, seeing what the ORM wrote there)."""
    async with async_connections[alias].cursor() as cursor:
        await cursor.execute(sql, params)
        return list(await cursor.fetchall())


async def scalar(sql: str, params: Any = None, alias: str = "default") -> Any:
    """The first value of ``sql``'s first row, on the task's connection."""
    return (await rows(sql, params, alias))[0][0]


async def snapshot() -> list[list[Any]]:
    """The contents of every ORM table, as the task's connection sees them."""
    return [await rows(f"SELECT * FROM {table} ORDER BY 1") for table in TABLES]


async def assert_rolled_back(
    test: unittest.TestCase, action: Callable[[], Awaitable[Any]]
) -> None:
    """Run ``action`` in an async_atomic() block that then fails: it must have
    changed the tables inside the block and left no trace after it."""
    before = await snapshot()
    with test.assertRaises(Boom):
        async with async_atomic():
            await action()
            test.assertNotEqual(await snapshot(), before, "the action wrote nothing")
            raise Boom
    test.assertEqual(await snapshot(), before)


async def seed() -> dict[str, Any]:
    """Two authors, three tags, four books (with tags) via plain SQL, so that
    the ORM methods under test do not build their own fixtures."""
    ann = await scalar("INSERT INTO testapp_author (name) VALUES ('Ann') RETURNING id")
    bob = await scalar("INSERT INTO testapp_author (name) VALUES ('Bob') RETURNING id")
    tags = {}
    for name in ("red", "green", "blue"):
        tags[name] = await scalar(
            "INSERT INTO testapp_tag (name) VALUES (%s) RETURNING id", [name]
        )
    books = {}
    for title, author, pages, published in (
        ("Alpha", ann, 100, "2020-01-05"),
        ("Beta", ann, 350, "2021-03-07"),
        ("Gamma", bob, 500, "2022-06-09"),
        ("Delta", bob, 50, None),
    ):
        books[title] = await scalar(
            "INSERT INTO testapp_book (title, author_id, pages, published) "
            "VALUES (%s, %s, %s, %s) RETURNING id",
            [title, author, pages, published],
        )
    for title, tag in (("Alpha", "red"), ("Alpha", "green"), ("Gamma", "blue")):
        await rows(
            "INSERT INTO testapp_book_tags (book_id, tag_id) VALUES (%s, %s) "
            "RETURNING id",
            [books[title], tags[tag]],
        )
    return {"ann": ann, "bob": bob, "tags": tags, "books": books}
