"""Every private name the package relies on still means what it relies on.

django_async_backend/utils/compat.py is the only module that reaches behind
a public API of Django, asyncio or psycopg_pool. Each accessor is checked
here against the installed versions (CI runs every supported Python and
Django), so that a change there fails loudly, here, with its name.
"""

from __future__ import annotations

import asyncio
import os
import unittest
import warnings
from typing import Any
from unittest import mock

import django
from django.db import models
from django.db.models.signals import post_save
from django.test import TestCase

import support
from django_async_backend.utils import compat
from testapp.models import Author, Book, Tag


class AsyncioTests(unittest.IsolatedAsyncioTestCase):
    async def test_running_task_is_the_current_task(self) -> None:
        self.assertIs(compat.running_task(), asyncio.current_task())
        self.assertIs(compat.task_of(compat.running_loop()), asyncio.current_task())

        async def child() -> bool:
            return compat.running_task() is asyncio.current_task()

        self.assertTrue(await asyncio.create_task(child()))

    def test_running_task_without_a_loop_is_none(self) -> None:
        self.assertIsNone(compat.running_loop())
        self.assertIsNone(compat.running_task())

    async def test_a_task_can_be_dropped_quietly(self) -> None:
        task = asyncio.get_running_loop().create_task(asyncio.sleep(0))
        compat.quiet_when_destroyed(task)
        self.assertFalse(task._log_destroy_pending)  # type: ignore[attr-defined]
        await task


class SignalTests(unittest.TestCase):
    def test_live_receivers_splits_sync_and_async(self) -> None:
        def sync_receiver(**kwargs: Any) -> None:
            pass

        async def async_receiver(**kwargs: Any) -> None:
            pass

        post_save.connect(sync_receiver, sender=Tag)
        post_save.connect(async_receiver, sender=Tag)
        self.addCleanup(post_save.disconnect, sync_receiver, sender=Tag)
        self.addCleanup(post_save.disconnect, async_receiver, sender=Tag)
        sync_receivers, async_receivers = compat.live_receivers(post_save, Tag)
        self.assertIn(sync_receiver, sync_receivers)
        self.assertIn(async_receiver, async_receivers)
        self.assertNotIn(async_receiver, sync_receivers)
        self.assertFalse(compat.has_no_receivers(post_save, Tag))

    def test_has_no_receivers(self) -> None:
        signal = django.dispatch.Signal(use_caching=True)
        self.assertTrue(compat.has_no_receivers(signal, Tag))

    def test_log_robust_failure_logs_on_djangos_logger(self) -> None:
        def receiver(**kwargs: Any) -> None:
            pass

        with self.assertLogs("django.dispatch", "ERROR"):
            compat.log_robust_failure(post_save, receiver, ValueError("boom"))


class ModelTests(unittest.TestCase):
    def test_parse_save_params_exists_where_positional_arguments_do(self) -> None:
        parse = compat.parse_save_params(Author(name="a"))
        if django.VERSION < (6, 0):
            assert parse is not None
            self.enterContext(warnings.catch_warnings())
            warnings.simplefilter("ignore")  # (the deprecation it is for)
            values = parse(
                True,
                method_name="save",
                force_insert=False,
                force_update=False,
                using=None,
                update_fields=None,
            )
            self.assertEqual(next(iter(values)), True)
        else:
            self.assertIsNone(parse)

    def test_local_managers_holds_the_models_own_managers(self) -> None:
        names = [manager.name for manager in compat.local_managers(Book)]
        self.assertIn("objects", names)

    def test_queryset_class_of_a_manager(self) -> None:
        self.assertTrue(
            issubclass(compat.queryset_class(Book.objects), models.QuerySet)
        )

    def test_queryset_write_db(self) -> None:
        self.assertEqual(compat.queryset_write_db(Author.objects.all()), "default")
        self.assertEqual(
            compat.queryset_write_db(Author.objects.using("other")), "other"
        )

    def test_related_manager_db(self) -> None:
        author = Author(pk=1, name="a")
        self.assertIsNone(compat.related_manager_db(author.books))
        self.assertEqual(
            compat.related_manager_db(author.books.db_manager("other")), "other"
        )

    def test_async_unsafe_allowed_reads_djangos_variable(self) -> None:
        with mock.patch.dict(os.environ, {"DJANGO_ALLOW_ASYNC_UNSAFE": "true"}):
            self.assertTrue(compat.async_unsafe_allowed())
        with mock.patch.dict(os.environ, clear=False) as environ:
            environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
            self.assertFalse(compat.async_unsafe_allowed())


class QuerysetTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        support.ensure_test_tables()

    def test_fetch_all_and_iterate_queryset(self) -> None:
        queryset = Tag.objects.using("stock").filter(name="dab-compat-none")
        self.assertEqual(compat.fetch_all(queryset), [])
        iterator = compat.iterate_queryset(queryset, False, 10)
        self.assertEqual(list(iterator), [])
        from django.db import connections

        connections["stock"].close()


class TestCaseTests(unittest.TestCase):
    def test_databases_names(self) -> None:
        class Case(TestCase):
            databases = {"default", "other"}

        self.assertEqual(sorted(compat.databases_names(Case)), ["default", "other"])

    def test_database_operation_forbidden(self) -> None:
        error = compat.database_operation_forbidden("nope")
        self.assertIsInstance(error, AssertionError)
        self.assertEqual(type(error).__name__, "DatabaseOperationForbidden")

    def test_ran_db_version_check_is_djangos_set(self) -> None:
        from django.db.backends.base import base

        self.assertIs(compat.RAN_DB_VERSION_CHECK, base.RAN_DB_VERSION_CHECK)


class PoolTests(unittest.IsolatedAsyncioTestCase):
    async def test_idle_pool_connections(self) -> None:
        from psycopg_pool import AsyncConnectionPool

        pool = AsyncConnectionPool(
            support.server_dsn(), min_size=1, max_size=1, open=False
        )
        await pool.open(wait=True)
        try:
            self.assertEqual(len(compat.idle_pool_connections(pool)), 1)
            async with pool.connection():
                self.assertEqual(compat.idle_pool_connections(pool), [])
        finally:
            await pool.close()


if __name__ == "__main__":
    unittest.main()
