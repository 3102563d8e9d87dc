"""tests_django/djsuite_flush.py: the flush after each test of a class run
without transactions (``run.py --native-orm``) leaves the database as
Django's own ``flush`` command does, on a database of its own, migrated for
these tests (support.FLUSH_DATABASE_NAME, dropped with the run's).
"""

from __future__ import annotations

import sys
import unittest
from pathlib import Path
from typing import Any

import psycopg
from django.core.management import call_command
from django.db import connections
from psycopg import sql as pgsql

import support
from aliases import temporary_alias

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests_django"))
import djsuite_flush

ALIAS = "flushed"
# What post_migrate re-creates (the baseline), and two tables tests write to.
BASELINE = ("django_content_type", "auth_permission")


def server(sql: str, params: Any = ()) -> list[Any]:
    with psycopg.connect(
        support.server_dsn(), dbname=support.FLUSH_DATABASE_NAME, autocommit=True
    ) as connection:
        cursor = connection.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def contents(table: str) -> list[str]:
    """A table's rows without ids (Django's flush makes them anew)."""
    rows = server(f"SELECT to_jsonb(t) - 'id' - 'content_type_id' FROM {table} t")
    return sorted(str(row[0]) for row in rows)


class FlushTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        name = pgsql.Identifier(support.FLUSH_DATABASE_NAME)
        with psycopg.connect(support.server_dsn(), autocommit=True) as session:
            session.execute(pgsql.SQL("DROP DATABASE IF EXISTS {}").format(name))
            session.execute(pgsql.SQL("CREATE DATABASE {}").format(name))
        cls.enterClassContext(temporary_alias(ALIAS, NAME=support.FLUSH_DATABASE_NAME))
        call_command("migrate", database=ALIAS, verbosity=0)
        cls.addClassCleanup(connections[ALIAS].close)

    def setUp(self) -> None:
        djsuite_flush._baselines.clear()
        djsuite_flush.flush(ALIAS)  # the first one: Django's own
        self.baseline = {table: contents(table) for table in BASELINE}
        self.assertTrue(all(self.baseline.values()))

    def write(self) -> None:
        server("INSERT INTO testapp_author (name) VALUES ('flush-me')")
        server(
            "WITH g AS (INSERT INTO auth_group (name) VALUES ('flush-group') "
            "RETURNING id) INSERT INTO auth_group_permissions (group_id, "
            "permission_id) SELECT g.id, min(p.id) FROM g, auth_permission p "
            "GROUP BY g.id"
        )

    def assert_flushed(self) -> None:
        for table in ("testapp_author", "auth_group", "auth_group_permissions"):
            self.assertEqual(server(f"SELECT count(*) FROM {table}"), [(0,)], table)
        self.assertEqual({t: contents(t) for t in BASELINE}, self.baseline)

    def test_a_later_flush_empties_what_was_written_and_keeps_the_baseline(
        self,
    ) -> None:
        ids = server("SELECT id FROM django_content_type ORDER BY id")
        self.write()
        djsuite_flush.flush(ALIAS)
        self.assert_flushed()
        # Not re-created: the cheap flush ran, not Django's.
        self.assertEqual(server("SELECT id FROM django_content_type ORDER BY id"), ids)

    def test_a_changed_baseline_row_gets_djangos_flush(self) -> None:
        self.write()
        server("UPDATE django_content_type SET model = 'renamed' WHERE id IN "
               "(SELECT min(id) FROM django_content_type)")  # fmt: skip
        djsuite_flush.flush(ALIAS)
        self.assert_flushed()

    def test_a_deleted_baseline_row_gets_djangos_flush(self) -> None:
        server("DELETE FROM auth_permission WHERE id IN "
               "(SELECT min(id) FROM auth_permission)")  # fmt: skip
        djsuite_flush.flush(ALIAS)
        self.assert_flushed()

    def test_the_state_is_djangos_flush_state(self) -> None:
        self.write()
        djsuite_flush.flush(ALIAS)
        cheap = {t: contents(t) for t in (*BASELINE, "testapp_author")}
        self.write()
        call_command(
            "flush", database=ALIAS, interactive=False, verbosity=0, allow_cascade=True
        )
        django = {t: contents(t) for t in (*BASELINE, "testapp_author")}
        self.assertEqual(cheap, django)
