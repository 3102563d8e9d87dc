"""Security: bound parameters, no password leaks, ``assume_role``.

* Hostile strings are sent as parameters and come back unchanged: nothing in
  them is ever read as SQL or as a placeholder.
* The password of DATABASES never shows in the SQL log, in the errors of a
  failed connection (their messages, args and ``__cause__`` chains) or in the
  repr()/str() of wrappers, cursors, connections and pools.
* ``OPTIONS["assume_role"]`` runs the session as that role: its privileges
  apply, and a pooled connection comes back from the pool on that role.
"""

from __future__ import annotations

import logging
import os
import socket
import traceback
import unittest
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
from django.db import DataError, OperationalError, ProgrammingError
from psycopg import sql as pgsql

import support
from aliases import temporary_alias
from cluster import Cluster, find_bindir
from django_async_backend.db import async_connections
from django_async_backend.test import AsyncioTestCase
from django_async_backend.utils.loops import loop_state

support.ensure_test_tables()

# Never a real password: trust authentication ignores it, which lets the
# tests connect with it set and look for it everywhere.
PASSWORD = f"pw-{uuid.uuid4().hex}-Zq9"

HOSTILE = [
    "O'Reilly",
    "'; DROP TABLE testapp_account; --",
    '"; DROP TABLE testapp_account; --',
    "back\\slash \\' \\\\",
    "E'\\x41' || chr(65)",
    "%s",
    "%%s %% %(name)s %(x)s",
    "$1 $2 ::text",
    "$$ dollar $$ $tag$ quoted $tag$",
    "/* comment */ -- line comment",
    "unicode: ünïcødé, 中文, emoji 🐍, rtl \u202e, zero width \u200b",
    "newline\nand\ttab\rcarriage",
    "",
]


def unique_role(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"


def closed_port() -> int:
    """A local TCP port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def exception_texts(exc: BaseException) -> Iterator[str]:
    """Everything an exception and its cause/context chain shows."""
    yield "".join(traceback.format_exception(exc))
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        yield from (repr(arg) for arg in current.args)
        current = current.__cause__ or current.__context__


class Captured(logging.Handler):
    """Keep every formatted record, arguments included."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
        self.lines.append(repr(record.args))
        if record.exc_info and record.exc_info[1] is not None:
            self.lines.extend(exception_texts(record.exc_info[1]))


class BoundParameterTests(AsyncioTestCase):
    async def round_trip(self, value: str) -> Any:
        async with async_connections["default"].cursor() as cursor:
            await cursor.execute("SELECT %s::text", [value])
            (result,) = await cursor.fetchone()
        return result

    async def test_hostile_strings_round_trip_through_select(self) -> None:
        for value in HOSTILE:
            with self.subTest(value=value):
                self.assertEqual(await self.round_trip(value), value)

    async def asyncSetUp(self) -> None:
        # Dropped with the test's transaction; nobody else sees it.
        async with async_connections["default"].cursor() as cursor:
            await cursor.execute(
                "CREATE TEMPORARY TABLE hostile (n int, value text) ON COMMIT DROP"
            )

    async def test_hostile_strings_are_stored_and_read_back(self) -> None:
        async with async_connections["default"].cursor() as cursor:
            for number, value in enumerate(HOSTILE):
                await cursor.execute(
                    "INSERT INTO hostile (n, value) VALUES (%s, %s)", [number, value]
                )
            await cursor.execute("SELECT value FROM hostile ORDER BY n")
            stored = [row[0] for row in await cursor.fetchall()]
            await cursor.execute("SELECT to_regclass('testapp_account') IS NOT NULL")
            (table_still_there,) = await cursor.fetchone()
        self.assertEqual(stored, HOSTILE)
        self.assertTrue(table_still_there)

    async def test_named_parameters_with_placeholder_values(self) -> None:
        async with async_connections["default"].cursor() as cursor:
            await cursor.execute(
                "SELECT %(a)s::text, %(b)s::text",
                {"a": "%(b)s", "b": "%s ' \\"},
            )
            row = await cursor.fetchone()
        self.assertEqual(tuple(row), ("%(b)s", "%s ' \\"))

    async def test_executemany_binds_every_row(self) -> None:
        async with async_connections["default"].cursor() as cursor:
            await cursor.executemany(
                "INSERT INTO hostile (n, value) VALUES (%s, %s)",
                [[number, value] for number, value in enumerate(HOSTILE)],
            )
            await cursor.execute("SELECT value FROM hostile ORDER BY n")
            stored = [row[0] for row in await cursor.fetchall()]
        self.assertEqual(stored, HOSTILE)

    async def test_nul_character_is_refused_as_a_django_error(self) -> None:
        with self.assertRaises(DataError) as caught:
            await self.round_trip("before\x00after")
        self.assertIsInstance(caught.exception.__cause__, psycopg.DataError)

    async def test_compose_sql_quotes_placeholders_in_values(self) -> None:
        connection = async_connections["default"]
        await connection.ensure_connection()
        values = ["%s", "%(name)s", "'; DROP TABLE x; --"]
        sql = connection.ops.compose_sql("SELECT %s::text, %s::text, %s::text", values)
        async with connection.cursor() as cursor:
            await cursor.execute(sql)
            row = await cursor.fetchone()
        self.assertEqual(list(row), values)

    async def test_debug_sql_quotes_the_values(self) -> None:
        connection = async_connections["default"]
        connection.force_debug_cursor = True
        try:
            for value in ["%s", "%(name)s", "'; DROP TABLE x; --", "a\\b"]:
                async with connection.cursor() as cursor:
                    await cursor.execute("SELECT %s::text", [value])
                logged = connection.queries[-1]["sql"]
                async with connection.cursor() as cursor:
                    # The logged SQL is the statement that ran: running it
                    # again gives the value back, quoted as a literal.
                    await cursor.execute(logged)
                    (result,) = await cursor.fetchone()
                self.assertEqual(result, value)
        finally:
            connection.force_debug_cursor = False


class PasswordLeakTests(unittest.IsolatedAsyncioTestCase):
    """The configured PASSWORD must not show anywhere a user may look."""

    # Every logger that may see connection details, at DEBUG.
    LOGGERS = ("", "django", "django.db.backends", "psycopg", "psycopg.pool")

    def setUp(self) -> None:
        self.captured = Captured()
        self.captured.setFormatter(logging.Formatter("%(name)s %(message)s"))
        self.levels = {name: logging.getLogger(name).level for name in self.LOGGERS}
        for name in self.LOGGERS:
            logging.getLogger(name).setLevel(logging.DEBUG)
            logging.getLogger(name).addHandler(self.captured)

    def tearDown(self) -> None:
        for name, level in self.levels.items():
            logging.getLogger(name).removeHandler(self.captured)
            logging.getLogger(name).setLevel(level)

    async def asyncTearDown(self) -> None:
        await async_connections.close_all()

    def assertNoPassword(self, texts: Any) -> None:
        for text in texts:
            self.assertNotIn(PASSWORD, text)

    async def failed_connection(self, **overrides: Any) -> OperationalError:
        with temporary_alias("secret", PASSWORD=PASSWORD, **overrides):
            connection = async_connections["secret"]
            with self.assertRaises(OperationalError) as caught:
                async with connection.cursor() as cursor:
                    await cursor.execute("SELECT 1")
            self.assertNoPassword([repr(connection), str(connection)])
        return caught.exception

    async def test_refused_connection(self) -> None:
        error = await self.failed_connection(PORT=str(closed_port()))
        self.assertIsInstance(error.__cause__, psycopg.OperationalError)
        self.assertNoPassword(exception_texts(error))
        self.assertNoPassword(self.captured.lines)

    async def test_unknown_database(self) -> None:
        error = await self.failed_connection(NAME=f"no_such_db_{uuid.uuid4().hex}")
        self.assertIn("does not exist", str(error))
        self.assertNoPassword(exception_texts(error))
        self.assertNoPassword(self.captured.lines)

    async def test_pool_that_cannot_connect(self) -> None:
        error = await self.failed_connection(
            PORT=str(closed_port()), OPTIONS={"pool": {"timeout": 0.5}}
        )
        self.assertNoPassword(exception_texts(error))
        self.assertNoPassword(self.captured.lines)
        for pool in loop_state().pools.values():
            if pool.done() and pool.exception() is None:
                self.assertNoPassword([repr(pool.result()), str(pool.result())])

    async def test_working_connection_reprs_and_sql_log(self) -> None:
        with temporary_alias("secret", PASSWORD=PASSWORD):
            connection = async_connections["secret"]
            connection.force_debug_cursor = True
            async with connection.cursor() as cursor:
                await cursor.execute("SELECT %s::text", ["x"])
                await cursor.fetchone()
                shown = [repr(cursor), repr(cursor.cursor), str(cursor.cursor)]
            shown += [repr(connection), str(connection)]
            shown += [repr(connection.connection), str(connection.connection)]
            shown += [str(connection.connection.info.dsn)]
            shown += [str(query) for query in connection.queries]
        self.assertNoPassword(shown)
        self.assertTrue(
            any("django.db.backends" in line for line in self.captured.lines)
        )
        self.assertNoPassword(self.captured.lines)

    async def test_pooled_connection_reprs(self) -> None:
        with temporary_alias("secret", PASSWORD=PASSWORD, OPTIONS={"pool": True}):
            connection = async_connections["secret"]
            async with connection.cursor() as cursor:
                await cursor.execute("SELECT 1")
                shown = [repr(cursor.cursor), repr(connection.connection)]
            pool = connection._pool
            shown += [repr(pool), str(pool), repr(pool.get_stats())]
        self.assertNoPassword(shown)
        self.assertNoPassword(self.captured.lines)


class PasswordAuthenticationTests(unittest.IsolatedAsyncioTestCase):
    """A throwaway server that checks passwords (scram-sha-256) for "app"."""

    cluster: Cluster

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        if find_bindir() is None:
            raise unittest.SkipTest("no PostgreSQL binaries for a throwaway cluster")
        cls.cluster = Cluster(
            hba=[
                "local all all trust",
                "host all postgres 127.0.0.1/32 trust",
                "host all all 127.0.0.1/32 scram-sha-256",
            ]
        )
        cls.addClassCleanup(cls.cluster.destroy)
        cls.cluster.start()
        cls.cluster.execute(
            pgsql.SQL("CREATE ROLE app LOGIN PASSWORD {}")
            .format(pgsql.Literal(PASSWORD))
            .as_string()
        )

    def setUp(self) -> None:
        self.captured = Captured()
        self.captured.setFormatter(logging.Formatter("%(name)s %(message)s"))
        for name in PasswordLeakTests.LOGGERS:
            logging.getLogger(name).addHandler(self.captured)

    def tearDown(self) -> None:
        for name in PasswordLeakTests.LOGGERS:
            logging.getLogger(name).removeHandler(self.captured)

    async def asyncTearDown(self) -> None:
        await async_connections.close_all()

    def alias(self, password: str, **options: Any) -> Any:
        settings_dict = self.cluster.database(USER="app", PASSWORD=password)
        return temporary_alias("auth", **settings_dict, OPTIONS=options)

    async def current_user(self) -> str:
        async with async_connections["auth"].cursor() as cursor:
            await cursor.execute("SELECT current_user")
            (user,) = await cursor.fetchone()
        return str(user)

    async def test_right_password_connects(self) -> None:
        with self.alias(PASSWORD):
            self.assertEqual(await self.current_user(), "app")
            connection = async_connections["auth"]
            shown = [repr(connection), repr(connection.connection)]
            shown.append(connection.connection.info.dsn)
        for text in [*shown, *self.captured.lines]:
            self.assertNotIn(PASSWORD, text)

    async def test_wrong_password_error_does_not_show_either_password(self) -> None:
        wrong = f"wrong-{uuid.uuid4().hex}"
        for options in ({}, {"pool": {"timeout": 0.5}}):
            with self.subTest(options=options), self.alias(wrong, **options):
                with self.assertRaises(OperationalError) as caught:
                    await self.current_user()
                texts = list(exception_texts(caught.exception))
                await async_connections.close_all()
            if not options:
                self.assertIn("password authentication failed", texts[0])
            for text in [*texts, *self.captured.lines]:
                self.assertNotIn(wrong, text)
                self.assertNotIn(PASSWORD, text)


class AssumeRoleTests(unittest.IsolatedAsyncioTestCase):
    """Two roles; a table only one of them may read."""

    def setUp(self) -> None:
        self.allowed = unique_role("dab_allowed")
        self.denied = unique_role("dab_denied")
        self.table = unique_role("dab_secret")
        with psycopg.connect(support.server_dsn(), autocommit=True) as conn:
            for role in (self.allowed, self.denied):
                conn.execute(
                    pgsql.SQL("CREATE ROLE {} NOLOGIN").format(pgsql.Identifier(role))
                )
                conn.execute(
                    pgsql.SQL("GRANT {} TO CURRENT_USER").format(pgsql.Identifier(role))
                )
            conn.execute(
                pgsql.SQL("CREATE TABLE {} (secret text)").format(
                    pgsql.Identifier(self.table)
                )
            )
            conn.execute(
                pgsql.SQL("INSERT INTO {} VALUES ('s3')").format(
                    pgsql.Identifier(self.table)
                )
            )
            conn.execute(
                pgsql.SQL("GRANT SELECT ON {} TO {}").format(
                    pgsql.Identifier(self.table), pgsql.Identifier(self.allowed)
                )
            )

    async def asyncTearDown(self) -> None:
        await async_connections.close_all()

    def tearDown(self) -> None:
        with psycopg.connect(support.server_dsn(), autocommit=True) as conn:
            conn.execute(
                pgsql.SQL("DROP TABLE {}").format(pgsql.Identifier(self.table))
            )
            for role in (self.allowed, self.denied):
                conn.execute(pgsql.SQL("DROP ROLE {}").format(pgsql.Identifier(role)))

    async def read_secret(self, alias: str) -> Any:
        async with async_connections[alias].cursor() as cursor:
            await cursor.execute(
                pgsql.SQL("SELECT secret FROM {}").format(pgsql.Identifier(self.table))
            )
            return await cursor.fetchall()

    async def current_user(self, alias: str) -> str:
        async with async_connections[alias].cursor() as cursor:
            await cursor.execute("SELECT current_user")
            (user,) = await cursor.fetchone()
        return str(user)

    async def test_granted_role_reads_the_table(self) -> None:
        with temporary_alias("role", OPTIONS={"assume_role": self.allowed}):
            self.assertEqual(await self.read_secret("role"), [("s3",)])

    async def test_other_role_is_refused(self) -> None:
        with temporary_alias("role", OPTIONS={"assume_role": self.denied}):
            with self.assertRaises(ProgrammingError) as caught:
                await self.read_secret("role")
        self.assertIn("permission denied", str(caught.exception))
        self.assertIsInstance(caught.exception.__cause__, psycopg.Error)

    async def test_pooled_connection_returns_on_the_assumed_role(self) -> None:
        options = {"assume_role": self.denied, "pool": {"min_size": 1, "max_size": 1}}
        with temporary_alias("role", OPTIONS=options):
            connection = async_connections["role"]
            async with connection.cursor() as cursor:
                # Session-level role change by the application.
                await cursor.execute(
                    pgsql.SQL("SET ROLE {}").format(pgsql.Identifier(self.allowed))
                )
            self.assertEqual(await self.current_user("role"), self.allowed)
            await connection.close()  # back to the pool (its only connection)
            self.assertEqual(await self.current_user("role"), self.denied)
            with self.assertRaises(ProgrammingError):
                await self.read_secret("role")
