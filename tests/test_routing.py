"""Primary + replica routing: Django's routers, pinned inside transactions.

The "replica" is a second database on the same server that never receives
the primary's writes: the worst possible replication lag. Each test tells
which database answered by what it sees (a marker row only the replica has,
or a row just written on the primary).
"""

from __future__ import annotations

import asyncio
import os
import unittest
import uuid
from typing import Any

import psycopg
from django.conf import settings
from django.test import override_settings
from psycopg import sql as pgsql

import support
from aliases import temporary_alias
from django_async_backend.db import async_connections
from django_async_backend.db.routing import (
    db_for_read,
    db_for_write,
    in_transaction,
    pinned_alias,
)
from django_async_backend.db.transaction import async_atomic
from testapp.models import Account

support.ensure_test_tables()

REPLICA_DB = f"{settings.DATABASES['default']['NAME']}_replica"
MARKER = "only-on-the-replica"


class PrimaryReplicaRouter:
    """Reads from "replica", writes to "default"; records the hints."""

    def __init__(self) -> None:
        self.hints: list[dict[str, Any]] = []

    def db_for_read(self, model: Any, **hints: Any) -> str:
        self.hints.append(hints)
        return "replica"

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return "default"

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        return True


def create_replica_database() -> None:
    """The replica database with a copy of the table and a marker row."""
    with psycopg.connect(support.server_dsn(), autocommit=True) as conn:
        found = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (REPLICA_DB,)
        ).fetchone()
        if found is None:
            conn.execute(
                pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(REPLICA_DB))
            )
    with psycopg.connect(
        support.server_dsn(), dbname=REPLICA_DB, autocommit=True
    ) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS testapp_account ("
            " id bigserial PRIMARY KEY, name varchar(100) UNIQUE, balance int)"
        )
        conn.execute(
            "INSERT INTO testapp_account (name, balance) VALUES (%s, 0) "
            "ON CONFLICT (name) DO NOTHING",
            (MARKER,),
        )


class RoutingTests(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        create_replica_database()

    def setUp(self) -> None:
        self.name = f"dab-routing-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.router = PrimaryReplicaRouter()
        self.enterContext(temporary_alias("replica", NAME=REPLICA_DB))
        self.enterContext(override_settings(DATABASE_ROUTERS=[self.router]))

    async def asyncTearDown(self) -> None:
        await async_connections.close_all()

    def tearDown(self) -> None:
        support.outside("DELETE FROM testapp_account WHERE name = %s", (self.name,))

    async def names(self, alias: str) -> set[str]:
        async with async_connections[alias].cursor() as cursor:
            await cursor.execute("SELECT name FROM testapp_account")
            return {row[0] for row in await cursor.fetchall()}

    async def write(self) -> None:
        async with async_connections[db_for_write(Account)].cursor() as cursor:
            await cursor.execute(
                "INSERT INTO testapp_account (name, balance) VALUES (%s, 1)",
                [self.name],
            )

    async def test_reads_outside_a_transaction_go_to_the_replica(self) -> None:
        alias = db_for_read(Account)
        self.assertEqual(alias, "replica")
        self.assertIn(MARKER, await self.names(alias))

    async def test_writes_go_to_the_primary(self) -> None:
        await self.write()
        self.assertIn(self.name, await self.names("default"))
        self.assertNotIn(self.name, await self.names("replica"))

    async def test_committed_write_is_not_on_the_lagging_replica(self) -> None:
        async with async_atomic():
            await self.write()
        self.assertNotIn(self.name, await self.names(db_for_read(Account)))

    async def test_reads_inside_async_atomic_stay_on_the_primary(self) -> None:
        async with async_atomic():
            await self.write()
            alias = db_for_read(Account)
            seen = await self.names(alias)
        self.assertEqual(alias, "default")
        self.assertIn(self.name, seen)
        self.assertNotIn(MARKER, seen)

    async def test_nested_blocks_stay_pinned(self) -> None:
        async with async_atomic():
            async with async_atomic():
                await self.write()
            self.assertEqual(db_for_read(Account), "default")
            self.assertIn(self.name, await self.names(db_for_read(Account)))

    async def test_pin_ends_with_the_block(self) -> None:
        async with async_atomic():
            self.assertEqual(db_for_read(Account), "default")
        self.assertEqual(db_for_read(Account), "replica")

    async def test_pin_ends_when_the_block_rolls_back(self) -> None:
        with self.assertRaises(ZeroDivisionError):
            async with async_atomic():
                await self.write()
                1 / 0  # noqa: B018
        self.assertEqual(db_for_read(Account), "replica")
        self.assertNotIn(self.name, await self.names("default"))

    async def test_transaction_on_another_alias_does_not_pin(self) -> None:
        async with async_atomic(using="other"):
            self.assertEqual(db_for_read(Account), "replica")
            self.assertIn(MARKER, await self.names(db_for_read(Account)))

    async def test_manual_transaction_pins(self) -> None:
        connection = async_connections["default"]
        await connection.set_autocommit(False)
        try:
            await self.write()
            self.assertEqual(db_for_read(Account), "default")
            self.assertIn(self.name, await self.names(db_for_read(Account)))
            await connection.commit()
        finally:
            await connection.set_autocommit(True)
        self.assertEqual(db_for_read(Account), "replica")

    async def test_child_task_created_inside_the_block_reads_the_replica(self) -> None:
        async def child() -> tuple[str, set[str]]:
            alias = db_for_read(Account)
            return alias, await self.names(alias)

        async with async_atomic():
            await self.write()
            alias, seen = await asyncio.create_task(child())
        self.assertEqual(alias, "replica")
        self.assertIn(MARKER, seen)

    async def test_hints_reach_the_routers(self) -> None:
        instance = Account(name="x")
        db_for_read(Account, instance=instance)
        self.assertIs(self.router.hints[-1]["instance"], instance)

    async def test_without_routers_reads_use_the_default_alias(self) -> None:
        with override_settings(DATABASE_ROUTERS=[]):
            self.assertEqual(db_for_read(Account), "default")
            async with async_atomic():
                self.assertEqual(db_for_read(Account), "default")


class PinnedAliasTests(unittest.IsolatedAsyncioTestCase):
    async def asyncTearDown(self) -> None:
        await async_connections.close_all()

    async def test_no_transaction_keeps_the_read_alias(self) -> None:
        self.assertEqual(pinned_alias("replica", "default"), "replica")

    async def test_open_block_pins_to_the_write_alias(self) -> None:
        async with async_atomic():
            self.assertTrue(in_transaction("default"))
            self.assertEqual(pinned_alias("replica", "default"), "default")
        self.assertFalse(in_transaction("default"))

    async def test_unused_alias_is_not_in_a_transaction(self) -> None:
        self.assertFalse(in_transaction("other"))

    def test_outside_an_event_loop(self) -> None:
        self.assertEqual(pinned_alias("replica", "default"), "replica")
