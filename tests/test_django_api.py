"""Django's wrapper API on the async side, earlier releases' names, misuse.

The async wrapper answers Django's public ``BaseDatabaseWrapper`` calls that
users and libraries make (awaited where they do I/O); code written for the
product's earlier releases runs unchanged; and the common mistakes of async
code get an error that says what to write instead.
"""

from __future__ import annotations

import unittest
import uuid
import warnings
from typing import Any
from unittest import mock

from django.db import NotSupportedError, OperationalError, ProgrammingError
from django.db.backends.postgresql.features import DatabaseFeatures

import support
from aliases import backend_pid, temporary_alias
from django_async_backend.db import async_connections
from django_async_backend.db.transaction import (
    async_atomic,
    async_mark_for_rollback_on_error,
    mark_for_rollback_on_error,
    on_commit,
)
from scenarios import AliasTestCase
from support import poll, settle_background, terminate


class DjangoAPITestCase(AliasTestCase):
    tables = ("testapp_account",)
    app_prefix = "dab-api"

    def setUp(self) -> None:
        self.alias = f"api_{uuid.uuid4().hex[:8]}"
        super().setUp()

    async def asyncTearDown(self) -> None:
        await settle_background()
        await support.close_everything()  # the pools too

    def conn(self) -> Any:
        return async_connections[self.alias]


class WrapperAPITests(DjangoAPITestCase):
    def persistent(self) -> Any:
        """A wrapper of an alias with CONN_MAX_AGE = None (never obsolete)."""
        alias = f"{self.alias}_kept"
        self.enterContext(
            temporary_alias(
                alias, CONN_MAX_AGE=None, OPTIONS={"application_name": self.app}
            )
        )
        return async_connections[alias]

    async def test_close_if_unusable_keeps_a_healthy_connection(self) -> None:
        connection = self.persistent()
        pid = await backend_pid(connection)
        await connection.close_if_unusable_or_obsolete()
        self.assertEqual(await backend_pid(connection), pid)
        await connection.close()

    async def test_close_if_unusable_drops_an_autocommit_left_off(self) -> None:
        await backend_pid(self.conn())
        await self.conn().set_autocommit(False)
        await self.conn().close_if_unusable_or_obsolete()
        self.assertIsNone(self.conn().connection)

    async def test_close_if_unusable_keeps_a_connection_that_answers(
        self,
    ) -> None:
        connection = self.persistent()
        pid = await backend_pid(connection)
        with self.assertRaises(ProgrammingError):
            async with connection.cursor() as cursor:
                await cursor.execute("SELECT * FROM dab_no_such_table")
        self.assertTrue(connection.errors_occurred)
        # It answers: kept, the error forgotten.
        await connection.close_if_unusable_or_obsolete()
        self.assertFalse(connection.errors_occurred)
        self.assertEqual(await backend_pid(connection), pid)
        await connection.close()

    async def test_close_if_unusable_drops_a_dead_connection(self) -> None:
        pid = await backend_pid(self.conn())
        terminate(pid)
        with self.assertRaises(OperationalError):
            await backend_pid(self.conn())
        await self.conn().close_if_unusable_or_obsolete()
        self.assertIsNone(self.conn().connection)
        self.assertNotEqual(await backend_pid(self.conn()), pid)

    async def test_close_if_obsolete_drops_one_past_conn_max_age(self) -> None:
        alias = f"{self.alias}_aged"
        with temporary_alias(
            alias, CONN_MAX_AGE=0, OPTIONS={"application_name": self.app}
        ):
            connection = async_connections[alias]
            await backend_pid(connection)
            await connection.close_if_unusable_or_obsolete()
            self.assertIsNone(connection.connection)

    async def test_is_usable(self) -> None:
        pid = await backend_pid(self.conn())
        self.assertTrue(await self.conn().is_usable())
        terminate(pid)
        self.assertTrue(await poll(lambda: support.session_state(pid) is None))
        self.assertFalse(await self.conn().is_usable())

    async def test_copy_is_a_second_connection_on_the_same_settings(self) -> None:
        first = await backend_pid(self.conn())
        copy = self.conn().copy()
        self.assertEqual(copy.settings_dict, self.conn().settings_dict)
        self.assertIsNot(copy.settings_dict, self.conn().settings_dict)
        self.assertEqual(copy.alias, self.alias)
        self.assertNotEqual(await backend_pid(copy), first)
        await copy.close()
        self.assertEqual(self.conn().copy("elsewhere").alias, "elsewhere")

    async def test_pool_is_none_without_a_pool(self) -> None:
        await backend_pid(self.conn())
        self.assertIsNone(self.conn().pool)

    async def test_get_database_version(self) -> None:
        version = await self.conn().get_database_version()
        server = self.conn().connection.info.server_version
        self.assertEqual(version, divmod(server, 10000))

    async def test_the_version_is_checked_once_per_alias(self) -> None:
        # First connection of the alias: checked (and supported).
        await backend_pid(self.conn())
        # Even a requirement the server no longer meets is not checked again
        # at the next connection, as in Django.
        with mock.patch.object(DatabaseFeatures, "minimum_database_version", (99,)):
            await self.conn().close()
            await backend_pid(self.conn())

    async def test_an_unsupported_version_is_refused(self) -> None:
        with (
            mock.patch.object(DatabaseFeatures, "minimum_database_version", (99,)),
            self.assertRaisesRegex(NotSupportedError, r"PostgreSQL 99 or later"),
        ):
            await backend_pid(self.conn())


class EarlierReleasesTests(DjangoAPITestCase):
    async def test_async_mark_for_rollback_on_error_is_mark_for_rollback(self) -> None:
        self.assertIs(async_mark_for_rollback_on_error, mark_for_rollback_on_error)
        async with async_atomic(using=self.alias):
            with self.assertRaises(KeyError):
                async with async_mark_for_rollback_on_error(using=self.alias):
                    raise KeyError
            self.assertTrue(self.conn().needs_rollback)
            self.conn().set_rollback(False)

    async def test_async_with_await_cursor(self) -> None:
        async with await self.conn().cursor() as cursor:
            await cursor.execute("SELECT 42")
            self.assertEqual(await cursor.fetchone(), (42,))
        self.assertTrue(cursor.closed)

    async def test_awaited_cursor_closed_by_hand(self) -> None:
        cursor = await self.conn().cursor()
        await cursor.execute("SELECT 1")
        self.assertEqual(await cursor.fetchall(), [(1,)])
        await cursor.close()
        self.assertTrue(cursor.closed)


class MisuseTests(DjangoAPITestCase):
    def test_sync_with_async_atomic_names_async_with(self) -> None:
        with self.assertRaisesRegex(TypeError, r"async with async_atomic\(\)"):
            with async_atomic():
                pass

    async def test_on_commit_with_a_coroutine_object_names_the_fix(self) -> None:
        async def send_receipt() -> None:
            pass

        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "never awaited" on top
            for register in (
                lambda: self.conn().on_commit(send_receipt()),
                lambda: on_commit(send_receipt(), using=self.alias),  # type: ignore[arg-type]
            ):
                with self.assertRaisesRegex(TypeError, r"on_commit\(send_receipt\)"):
                    async with async_atomic(using=self.alias):
                        await register()

    async def test_on_commit_with_something_not_callable_names_the_fix(self) -> None:
        with self.assertRaisesRegex(TypeError, "pass the function"):
            await self.conn().on_commit(42)


if __name__ == "__main__":
    unittest.main()
