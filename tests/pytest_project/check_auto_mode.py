"""asyncio_mode=auto, asyncio_default_test_loop_scope=module: no asyncio
marks, the same isolation, on the module's loop."""

import asyncio
from typing import Any

import pytest
from inner_support import add_account, count

seen: dict[str, Any] = {}


@pytest.mark.django_db
async def test_writes() -> None:
    seen["loop"] = asyncio.get_running_loop()
    await add_account("auto")
    assert await count("testapp_account") == 1


@pytest.mark.django_db
async def test_rolled_back() -> None:
    assert asyncio.get_running_loop() is seen["loop"]
    assert await count("testapp_account") == 0


async def test_blocked() -> None:
    await count("testapp_account")
