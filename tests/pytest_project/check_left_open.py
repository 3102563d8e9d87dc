"""A test that leaves an async_atomic() block open fails at tear-down."""

import pytest
from inner_support import add_account

from django_async_backend.db.transaction import async_atomic


@pytest.mark.asyncio
@pytest.mark.django_db
async def test_leaves_a_block_open() -> None:
    await async_atomic().__aenter__()
    await add_account("left open")
