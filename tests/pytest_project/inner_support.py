"""Helpers of the inner pytest projects (tests/test_pytest_plugin.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import psycopg
from django.conf import settings

from django_async_backend.db import async_connections


async def count(table: str, alias: str = "default") -> int:
    """Rows of ``table``, seen through the test's async connection."""
    async with async_connections[alias].cursor() as cursor:
        await cursor.execute(f"SELECT count(*) FROM {table}")
        return int((await cursor.fetchone())[0])


async def add_account(name: str, alias: str = "default") -> None:
    async with async_connections[alias].cursor() as cursor:
        await cursor.execute(
            "INSERT INTO testapp_account (name, balance) VALUES (%s, 0)", [name]
        )


async def backend_pid(alias: str = "default") -> int:
    async with async_connections[alias].cursor() as cursor:
        await cursor.execute("SELECT pg_backend_pid()")
        return int((await cursor.fetchone())[0])


def _live(pids: Iterable[int]) -> set[int]:
    """Those of ``pids`` that the server still lists, seen from outside."""
    config = settings.DATABASES["default"]
    with psycopg.connect(
        dbname=config["NAME"],
        user=config["USER"],
        host=config["HOST"],
        port=config["PORT"] or None,
        application_name="dab-pytest-observer",
        autocommit=True,
    ) as observer:
        rows = observer.execute(
            "SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", [list(pids)]
        ).fetchall()
    return {row[0] for row in rows}


async def gone(pids: Iterable[int]) -> bool:
    """Whether the server sessions ``pids`` ended (polled: exits lag a bit)."""
    pids = set(pids)
    for _ in range(250):
        if not _live(pids):
            return True
        await asyncio.sleep(0.02)
    return False
