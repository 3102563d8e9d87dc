"""What the scenario tests share: their base classes and their row helpers.

A scenario works on the tables of tests/testapp with raw SQL on the current
task's connection (``conn``, ``execute``, ``fetchall``) and checks from outside what is
really committed (``committed_names``). ``DatabaseTestCase`` empties its
``tables`` before and after each test and closes the task's connections;
``AliasTestCase`` gives each test an alias of its own, ``alias`` with
``alias_options`` (``PLAIN`` or ``POOLED``), whose sessions are tagged with
``self.app``. A module runs its scenarios plain and pooled by subclassing
them twice, with those two options.
"""

from __future__ import annotations

import os
import unittest
import uuid
from typing import Any

import support
from aliases import temporary_alias
from django_async_backend.db import async_connections
from support import outside, settle_background

# The two ways a scenario runs: a connection per task, or from a pool.
PLAIN: dict[str, Any] = {}
POOLED: dict[str, Any] = {"pool": {"min_size": 1, "max_size": 4, "timeout": 5}}


def conn(using: str = "default") -> Any:
    """The current task's async wrapper (never keep it across test steps)."""
    return async_connections[using]


async def execute(sql: str, params: Any = None, using: str = "default") -> None:
    """Run ``sql`` on the current task's connection of ``using``."""
    async with conn(using).cursor() as cursor:
        await cursor.execute(sql, params)


async def fetchall(sql: str, params: Any = None, using: str = "default") -> list[Any]:
    """The rows of ``sql`` on the current task's connection of ``using``."""
    async with conn(using).cursor() as cursor:
        await cursor.execute(sql, params)
        return list(await cursor.fetchall())


def committed_names() -> list[str]:
    """Account names that are really committed (seen from outside)."""
    return [row[0] for row in outside("SELECT name FROM testapp_account ORDER BY name")]


def clean_tables(*tables: str) -> None:
    """Delete every row of ``tables``, from outside."""
    for table in tables:
        outside(f"DELETE FROM {table}")


def unique_name(prefix: str) -> str:
    """``prefix``, this process and a random tag: a name no other test uses."""
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class DatabaseTestCase(unittest.IsolatedAsyncioTestCase):
    """``tables`` emptied before and after each test; connections closed after."""

    tables: tuple[str, ...] = ()

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        support.ensure_test_tables()

    def setUp(self) -> None:
        clean_tables(*self.tables)

    async def asyncTearDown(self) -> None:
        await settle_background()
        await async_connections.close_all()

    def tearDown(self) -> None:
        clean_tables(*self.tables)


class AliasTestCase(DatabaseTestCase):
    """Each test on an alias of its own: ``alias``, with ``alias_options``.

    Its sessions carry the ``application_name`` ``self.app`` (from
    ``app_prefix``), so that the checks on the server see only them.
    """

    alias: str
    alias_options: dict[str, Any] = PLAIN
    app_prefix = "dab-tests"

    def setUp(self) -> None:
        super().setUp()
        self.app = unique_name(self.app_prefix)
        options = {"application_name": self.app, **self.alias_options}
        self.enterContext(temporary_alias(self.alias, OPTIONS=options))

    @property
    def pooled(self) -> bool:
        return "pool" in self.alias_options
