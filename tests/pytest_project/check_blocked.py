"""pytest-django's blocker covers async connections; sync tests unchanged."""

from typing import Any

import pytest
from inner_support import count

from django_async_backend.db import async_connections
from testapp.models import Account, Author


@pytest.mark.asyncio
async def test_async_connection_without_mark() -> None:
    await count("testapp_account")


@pytest.mark.asyncio
async def test_native_orm_without_mark() -> None:
    await Author.objects.acount()


@pytest.mark.asyncio
async def test_listen_without_mark() -> None:
    async with async_connections["default"].listen("dab_pytest_plugin"):
        pass


@pytest.mark.asyncio
async def test_unblocked_by_hand(django_db_blocker: Any) -> None:
    with django_db_blocker.unblock():
        await count("testapp_account")


def test_sync_orm_without_mark() -> None:
    Account.objects.count()


@pytest.mark.django_db
def test_sync_orm_with_mark() -> None:
    Account.objects.create(name="sync")
    assert Account.objects.count() == 1


@pytest.mark.django_db
def test_sync_orm_rolled_back() -> None:
    assert Account.objects.count() == 0
