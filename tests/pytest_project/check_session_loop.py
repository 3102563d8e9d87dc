"""loop_scope="session": nothing of a test is left on the loop after it."""

import asyncio
from typing import Any

import pytest
from inner_support import add_account, backend_pid, count, gone

from django_async_backend.utils.loops import loop_state

pytestmark = pytest.mark.asyncio(loop_scope="session")
seen: dict[str, Any] = {}


@pytest.mark.django_db(databases=["default", "pooled"])
async def test_first() -> None:
    seen["loop"] = asyncio.get_running_loop()
    seen["pids"] = {await backend_pid("default"), await backend_pid("pooled")}
    await add_account("pooled", alias="pooled")


@pytest.mark.django_db(databases=["default", "pooled"])
async def test_second() -> None:
    assert asyncio.get_running_loop() is seen["loop"]
    assert await gone(seen["pids"])
    assert await count("testapp_account", alias="pooled") == 0
    seen["pids"] = {await backend_pid("default"), await backend_pid("pooled")}


# No mark: pytest-django runs it after the database tests.
async def test_the_loop_keeps_nothing() -> None:
    assert asyncio.get_running_loop() is seen["loop"]
    state = loop_state()
    assert not state.pools
    assert not state.idle
    assert not any(scope.wrappers for scope in state.scopes)
    assert await gone(seen["pids"])
    with pytest.raises(RuntimeError, match="Database access not allowed"):
        await count("testapp_account")
