"""Settings parity: DATABASES keys and OPTIONS behave as with Django's backend.

Every behaviour is checked on the server (``SHOW``, ``pg_stat_activity``,
backend pids) rather than by looking at the wrapper's own state. Aliases made
for one test carry an ``application_name`` of their own, so that session
counts ignore whatever else uses the database meanwhile.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import time
import unittest
import uuid
import zoneinfo
from collections.abc import Callable
from typing import Any

import psycopg
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import Error as DjangoDatabaseError
from django.db import OperationalError
from psycopg import sql as pgsql

import support
from aliases import backend_pid, temporary_alias
from django_async_backend.db import async_connections
from django_async_backend.utils.loops import loop_state


def unique_name(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


async def fetch_one(alias: str, sql: str, params: Any = None) -> tuple[Any, ...]:
    async with async_connections[alias].cursor() as cursor:
        await cursor.execute(sql, params)
        row = await cursor.fetchone()
    assert row is not None
    return tuple(row)


async def eventually(condition: Callable[[], bool]) -> bool:
    """Poll ``condition`` a bounded number of times; return its last value.

    Background work (a finished task's connections being released, a killed
    backend leaving pg_stat_activity) needs a few loop iterations. This waits
    for it without ever asserting how long it took.
    """
    for _ in range(150):
        if condition():
            return True
        await asyncio.sleep(0.02)
    return condition()


def server_pids() -> set[int]:
    with psycopg.connect(support.server_dsn(), autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity").fetchall()
    return {int(row[0]) for row in rows}


def terminate_backend(pid: int) -> None:
    with psycopg.connect(support.server_dsn(), autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


def parked(alias: str) -> bool:
    return bool(loop_state().idle.get(alias))


async def pid_in_new_task(alias: str) -> int:
    async def use() -> int:
        return await backend_pid(async_connections[alias])

    return await asyncio.create_task(use())


class OptionsTests(unittest.IsolatedAsyncioTestCase):
    async def asyncTearDown(self) -> None:
        await async_connections.close_all()

    async def test_application_name_reaches_the_server(self) -> None:
        name = unique_name("dab-appname")
        with temporary_alias("appname", OPTIONS={"application_name": name}):
            self.assertEqual(
                await fetch_one("appname", "SHOW application_name"), (name,)
            )
            self.assertEqual(support.count_sessions(name), 1)

    async def test_options_string_sets_statement_timeout(self) -> None:
        with temporary_alias("opts", OPTIONS={"options": "-c statement_timeout=1234"}):
            self.assertEqual(
                await fetch_one("opts", "SHOW statement_timeout"), ("1234ms",)
            )

    async def test_isolation_level_serializable_inside_a_transaction(self) -> None:
        level = psycopg.IsolationLevel.SERIALIZABLE
        with temporary_alias("iso", OPTIONS={"isolation_level": level}):
            connection = async_connections["iso"]
            await connection.set_autocommit(False)
            try:
                self.assertEqual(
                    await fetch_one("iso", "SHOW transaction_isolation"),
                    ("serializable",),
                )
                self.assertEqual(connection.isolation_level, level)
            finally:
                await connection.rollback()
                await connection.set_autocommit(True)

    async def test_invalid_isolation_level_is_improperly_configured(self) -> None:
        with (
            temporary_alias("badiso", OPTIONS={"isolation_level": "no-such-level"}),
            self.assertRaisesRegex(ImproperlyConfigured, "isolation level"),
        ):
            await fetch_one("badiso", "SELECT 1")

    async def test_wrong_option_key_surfaces_the_driver_error(self) -> None:
        with (
            temporary_alias("wrongopt", OPTIONS={"no_such_option": 1}),
            self.assertRaises(DjangoDatabaseError) as ctx,
        ):
            await fetch_one("wrongopt", "SELECT 1")
        self.assertIn("no_such_option", str(ctx.exception))
        self.assertIsInstance(ctx.exception.__cause__, psycopg.Error)

    async def test_unreachable_server_raises_operational_error(self) -> None:
        with (
            temporary_alias(
                "unreachable",
                HOST="127.0.0.1",
                PORT="1",
                OPTIONS={"connect_timeout": 2},
            ),
            self.assertRaises(OperationalError) as ctx,
        ):
            await fetch_one("unreachable", "SELECT 1")
        self.assertIsInstance(ctx.exception.__cause__, psycopg.OperationalError)


class ServerSideBindingTests(unittest.IsolatedAsyncioTestCase):
    """The query text the server received tells how parameters were bound."""

    SQL = (
        "SELECT query FROM pg_stat_activity "
        "WHERE pid = pg_backend_pid() AND %s::int = %s::int"
    )

    async def asyncTearDown(self) -> None:
        await async_connections.close_all()

    async def test_server_side_binding_sends_placeholders(self) -> None:
        with temporary_alias("ssb", OPTIONS={"server_side_binding": True}):
            async with async_connections["ssb"].cursor() as cursor:
                self.assertIs(type(cursor.cursor), psycopg.AsyncCursor)
                await cursor.execute(self.SQL, [4321, 4321])
                (query,) = await cursor.fetchone()
        self.assertIn("$1", query)
        self.assertNotIn("4321", query)

    async def test_default_is_client_side_binding(self) -> None:
        async with async_connections["default"].cursor() as cursor:
            self.assertIs(type(cursor.cursor), psycopg.AsyncClientCursor)
            await cursor.execute(self.SQL, [4321, 4321])
            (query,) = await cursor.fetchone()
        self.assertIn("4321", query)
        self.assertNotIn("$1", query)


class AssumeRoleTests(unittest.IsolatedAsyncioTestCase):
    def setUp(self) -> None:
        self.role = unique_name("dab_role").replace("-", "_")
        with psycopg.connect(support.server_dsn(), autocommit=True) as conn:
            conn.execute(
                pgsql.SQL("CREATE ROLE {} NOLOGIN").format(pgsql.Identifier(self.role))
            )
            conn.execute(
                pgsql.SQL("GRANT {} TO {}").format(
                    pgsql.Identifier(self.role), pgsql.Identifier("postgres")
                )
            )

    async def asyncTearDown(self) -> None:
        await async_connections.close_all()

    def tearDown(self) -> None:
        with psycopg.connect(support.server_dsn(), autocommit=True) as conn:
            conn.execute(pgsql.SQL("DROP ROLE {}").format(pgsql.Identifier(self.role)))

    async def test_assume_role_sets_current_user(self) -> None:
        with temporary_alias("role", OPTIONS={"assume_role": self.role}):
            self.assertEqual(
                await fetch_one("role", "SELECT current_user"), (self.role,)
            )
            self.assertEqual(
                await fetch_one("role", "SELECT session_user"), ("postgres",)
            )


class TimeZoneTests(unittest.IsolatedAsyncioTestCase):
    async def asyncTearDown(self) -> None:
        await async_connections.close_all()

    async def test_alias_time_zone_sets_session_and_aware_results(self) -> None:
        self.assertTrue(settings.USE_TZ)
        with temporary_alias("tz", TIME_ZONE="Europe/Paris"):
            self.assertEqual(await fetch_one("tz", "SHOW TimeZone"), ("Europe/Paris",))
            (value,) = await fetch_one(
                "tz", "SELECT '2024-01-15 12:00:00+00'::timestamptz"
            )
        self.assertEqual(value.tzinfo, zoneinfo.ZoneInfo("Europe/Paris"))
        self.assertEqual(value.hour, 13)
        self.assertEqual(value, datetime.datetime(2024, 1, 15, 12, tzinfo=datetime.UTC))


class AutocommitTests(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self) -> None:
        support.ensure_test_tables()
        self.name = unique_name("dab-autocommit")

    async def asyncTearDown(self) -> None:
        await async_connections.close_all()
        with psycopg.connect(support.server_dsn(), autocommit=True) as conn:
            conn.execute("DELETE FROM testapp_account WHERE name = %s", (self.name,))

    def visible_outside(self) -> bool:
        with psycopg.connect(support.server_dsn(), autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM testapp_account WHERE name = %s", (self.name,)
            ).fetchone()
        assert row is not None
        return bool(row[0])

    async def test_autocommit_false_write_visible_only_after_commit(self) -> None:
        with temporary_alias("manual", AUTOCOMMIT=False):
            connection = async_connections["manual"]
            self.assertFalse(await connection.get_autocommit())
            async with connection.cursor() as cursor:
                await cursor.execute(
                    "INSERT INTO testapp_account (name, balance) VALUES (%s, %s)",
                    [self.name, 1],
                )
            self.assertFalse(self.visible_outside())
            await connection.commit()
            self.assertTrue(self.visible_outside())


class PersistentConnectionTests(unittest.IsolatedAsyncioTestCase):
    async def asyncTearDown(self) -> None:
        await async_connections.close_all()

    async def test_conn_max_age_none_reuses_parked_connection(self) -> None:
        name = unique_name("dab-persist")
        with temporary_alias(
            "persist", CONN_MAX_AGE=None, OPTIONS={"application_name": name}
        ):
            first = await pid_in_new_task("persist")
            self.assertTrue(await eventually(lambda: parked("persist")))
            second = await pid_in_new_task("persist")
        self.assertEqual(first, second)
        self.assertEqual(support.count_sessions(name), 1)

    async def test_conn_max_age_none_next_task_right_after_reuses(self) -> None:
        """The task started right after the first one ends gets its connection.

        ``await asyncio.create_task(...)`` twice, nothing in between: the
        second task is the next task on the loop, so it should adopt the
        connection the first one parked rather than open another session.
        """
        name = unique_name("dab-persist-next")
        with temporary_alias(
            "persist_next", CONN_MAX_AGE=None, OPTIONS={"application_name": name}
        ):
            first = await pid_in_new_task("persist_next")
            second = await pid_in_new_task("persist_next")
            self.assertEqual(first, second)
            self.assertEqual(support.count_sessions(name), 1)

    async def test_expired_parked_connection_is_closed_not_reused(self) -> None:
        name = unique_name("dab-expired")
        with temporary_alias(
            "expired", CONN_MAX_AGE=None, OPTIONS={"application_name": name}
        ):
            first = await pid_in_new_task("expired")
            self.assertTrue(await eventually(lambda: parked("expired")))
            # As if CONN_MAX_AGE had run out while the connection waited.
            idle = loop_state().idle["expired"]
            idle[:] = [(connection, time.monotonic() - 1) for connection, _ in idle]
            second = await pid_in_new_task("expired")
            self.assertNotEqual(first, second)
            self.assertNotIn(first, server_pids())

    async def test_conn_max_age_zero_closes_after_task(self) -> None:
        name = unique_name("dab-nopersist")
        with temporary_alias(
            "nopersist", CONN_MAX_AGE=0, OPTIONS={"application_name": name}
        ):
            self.assertEqual(support.count_sessions(name), 0)
            pid = await pid_in_new_task("nopersist")
            self.assertTrue(await eventually(lambda: support.count_sessions(name) == 0))
        self.assertNotIn(pid, server_pids())
        self.assertFalse(parked("nopersist"))

    async def _kill_parked_connection(self, alias: str) -> int:
        killed = await pid_in_new_task(alias)
        self.assertTrue(await eventually(lambda: parked(alias)))
        terminate_backend(killed)
        self.assertTrue(await eventually(lambda: killed not in server_pids()))
        return killed

    async def test_health_checks_replace_a_dead_parked_connection(self) -> None:
        with temporary_alias("healthy", CONN_MAX_AGE=None, CONN_HEALTH_CHECKS=True):
            killed = await self._kill_parked_connection("healthy")
            # No error at all: the health check spots the dead connection.
            pid = await pid_in_new_task("healthy")
        self.assertNotEqual(pid, killed)

    async def test_without_health_checks_at_most_one_error(self) -> None:
        with temporary_alias("unchecked", CONN_MAX_AGE=None, CONN_HEALTH_CHECKS=False):
            killed = await self._kill_parked_connection("unchecked")

            async def use() -> tuple[int, int | None]:
                errors = 0
                for _ in range(2):
                    try:
                        return errors, await backend_pid(async_connections["unchecked"])
                    except OperationalError:
                        errors += 1
                return errors, None

            errors, pid = await asyncio.create_task(use())
        self.assertLessEqual(errors, 1)
        self.assertIsNotNone(pid)
        self.assertNotEqual(pid, killed)


if __name__ == "__main__":
    unittest.main()
