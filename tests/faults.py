"""Shared helpers of the fault suite (tests/test_faults*.py).

Every scenario runs on an alias of its own (``fault_alias``) with a unique
``application_name``, so session counts only see the connections under test,
and writes rows tagged with a unique tag into ``fault_rows``, so that what was
committed can be checked from outside without disturbing other tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import unittest
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import support  # noqa: F401 - configures Django
from aliases import temporary_alias
from django_async_backend.db import async_connections
from django_async_backend.utils.loops import loop_state
from support import outside

__all__ = [
    "TABLE_SQL",
    "FaultRows",
    "execute",
    "fault_alias",
    "insert",
    "pool_is_whole",
    "rss_bytes",
    "unique_name",
]

TABLE_SQL = (
    "CREATE TABLE IF NOT EXISTS fault_rows "
    "(id bigserial PRIMARY KEY, tag text NOT NULL, name text NOT NULL)"
)


def unique_name(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class FaultRows(unittest.TestCase):
    """Set-up shared by the fault tests (mix in before the TestCase class).

    ``fault_rows`` exists once per class; each test gets a unique
    ``application_name`` (``self.app``, from ``app_prefix``) and a unique row
    tag (``self.tag``), whose rows are deleted afterwards.
    """

    app_prefix = "dab-faults"

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        outside(TABLE_SQL)

    def setUp(self) -> None:
        super().setUp()
        self.app = unique_name(self.app_prefix)
        self.tag = unique_name("tag")

    def tearDown(self) -> None:
        outside("DELETE FROM fault_rows WHERE tag = %s", (self.tag,))
        super().tearDown()


@contextlib.contextmanager
def fault_alias(
    name: str,
    application_name: str,
    *,
    pool: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    **overrides: Any,
) -> Iterator[str]:
    """A temporary alias; ``pool`` turns OPTIONS["pool"] on with those args."""
    merged: dict[str, Any] = {"application_name": application_name, **(options or {})}
    if pool is not None:
        merged["pool"] = pool or True
    with temporary_alias(name, OPTIONS=merged, **overrides) as alias:
        yield alias


async def execute(alias: str, sql: str, params: Any = None) -> list[Any]:
    """Run ``sql`` on the current task's connection of ``alias``."""
    async with async_connections[alias].cursor() as cursor:
        await cursor.execute(sql, params)
        return list(await cursor.fetchall()) if cursor.description else []


async def insert(alias: str, tag: str, name: str) -> None:
    await execute(
        alias, "INSERT INTO fault_rows (tag, name) VALUES (%s, %s)", [tag, name]
    )


async def pool_is_whole(
    alias: str, count_sessions: Callable[[], int] | None = None
) -> bool:
    """Wait (bounded polls) until every connection of the pool is back in it.

    With ``count_sessions``, the server must also show exactly the pool's
    sessions.
    """
    from support import poll

    pool = await loop_state().pools[alias]

    def whole() -> bool:
        stats = pool.get_stats()
        return bool(
            stats["pool_available"] == stats["pool_size"]
            and stats.get("requests_waiting", 0) == 0
            and len(pool._pool) == pool._nconns
            and (count_sessions is None or count_sessions() == stats["pool_size"])
        )

    return await poll(whole)


def rss_bytes() -> int | None:
    """The resident set size of this process (None where /proc is missing)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


async def wait_all(tasks: list[asyncio.Task[Any]], guard: float) -> list[Any]:
    """Gather ``tasks`` (exceptions returned); ``guard`` only stops a hang."""
    async with asyncio.timeout(guard):
        return await asyncio.gather(*tasks, return_exceptions=True)
