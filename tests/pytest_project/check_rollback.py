"""Function-scoped loops: what an async test writes is rolled back."""

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from inner_support import add_account, count

from django_async_backend.db.transaction import async_atomic
from testapp.models import Author

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db]


async def test_writes() -> None:
    await add_account("written")
    await Author.objects.acreate(name="native")
    assert await count("testapp_account") == 1
    assert await Author.objects.acount() == 1


async def test_sees_nothing_of_the_last_test() -> None:
    assert await count("testapp_account") == 0
    assert await Author.objects.acount() == 0


async def test_blocks_are_savepoints() -> None:
    with pytest.raises(ValueError):
        async with async_atomic():
            await add_account("undone")
            raise ValueError
    async with async_atomic(durable=True):
        await add_account("durable")
    assert await count("testapp_account") == 1


@pytest_asyncio.fixture
async def author() -> Author:
    created: Author = await Author.objects.acreate(name="from a fixture")
    return created


@pytest_asyncio.fixture
async def account() -> AsyncIterator[None]:
    await add_account("fixture")
    yield
    # The tear-down is in the test's transaction too: it sees the test's row.
    assert await count("testapp_account") == 2


async def test_fixtures_share_the_transaction(author: Author, account: None) -> None:
    assert (await Author.objects.aget(pk=author.pk)).name == "from a fixture"
    await add_account("test")


async def test_fixture_rows_are_rolled_back_too() -> None:
    assert await count("testapp_account") == 0
    assert await Author.objects.acount() == 0


async def test_child_tasks_are_refused() -> None:
    with pytest.raises(RuntimeError, match="created inside async_atomic"):
        await asyncio.create_task(count("testapp_account"))


async def test_the_documented_example() -> None:
    # docs/testing.md, "pytest".
    ann = await Author.objects.acreate(name="Ann")
    async with async_atomic():
        ann.name = "Anne"
        await ann.asave()
    assert await Author.objects.filter(name="Anne").aexists()
