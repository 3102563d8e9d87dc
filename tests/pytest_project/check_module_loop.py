"""loop_scope="module": tests share a loop, never connections or pools."""

import asyncio
from typing import Any

import pytest
import pytest_asyncio
from inner_support import add_account, backend_pid, count, gone

from testapp.models import Author

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.django_db(databases=["default", "pooled"]),
]
seen: dict[str, Any] = {}


@pytest_asyncio.fixture(loop_scope="module")
async def author() -> Author:
    created: Author = await Author.objects.acreate(name="module loop")
    return created


async def test_first(author: Author) -> None:
    seen["loop"] = asyncio.get_running_loop()
    seen["pids"] = {await backend_pid("default"), await backend_pid("pooled")}
    await add_account("pooled", alias="pooled")
    assert await Author.objects.acount() == 1


async def test_second() -> None:
    assert asyncio.get_running_loop() is seen["loop"]
    assert await gone(seen["pids"])  # the first test's sessions, pooled one too
    assert await count("testapp_account", alias="pooled") == 0
    assert await Author.objects.acount() == 0


@pytest_asyncio.fixture(loop_scope="function")
async def on_another_loop() -> int:
    return int(await Author.objects.acount())


async def test_fixture_on_another_loop(on_another_loop: int) -> None:
    pass
