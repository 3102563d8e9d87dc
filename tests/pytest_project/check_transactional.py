"""transaction=True: real commits, tables flushed after the test."""

import asyncio

import pytest
from inner_support import add_account, count

from django_async_backend.db import async_connections, transaction
from django_async_backend.db.notifications import notify

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


async def test_commits_for_real() -> None:
    await add_account("committed")
    async with async_connections.independent_connection():
        assert await count("testapp_account") == 1
    assert await asyncio.create_task(count("testapp_account")) == 1


async def test_tables_are_flushed() -> None:
    assert await count("testapp_account") == 0


async def test_listen_and_notify() -> None:
    # With real commits a notification is delivered, as in production.
    async with async_connections["default"].listen("dab_pytest_plugin") as heard:
        await notify("dab_pytest_plugin", "hello")
        notification = await heard.get(timeout=60)
    assert notification is not None
    assert notification.payload == "hello"


async def test_leaves_a_transaction_open() -> None:
    await transaction.set_autocommit(False)
    await add_account("never committed")
