"""A flush that costs what the test wrote, for the without-transactions mode.

``djsuite_native`` runs each test of a ``TestCase`` class with async tests
outside a transaction, so its rows have to go afterwards. Django's
``flush`` empties every table of every installed app and runs
``post_migrate`` for all of them (content types, permissions, the default
site...): with the whole suite's ~200 apps, seconds per test.

``flush(alias)`` gets the same database state, cheaper:

1. The first flush of a database is Django's own (``call_command("flush")``,
   with ``TRUNCATE ... CASCADE``). What it leaves behind, the rows
   ``post_migrate`` re-created, is the *baseline*: the tables that are not
   empty, each with a digest of its rows.
2. Every later flush is one statement, a ``DO`` block run on the server: it
   truncates (``CASCADE``) the other tables that have a page on disk, then
   checks each baseline table's digest. Any difference (a test changed a
   content type, or a cascade reached a baseline table) makes the block
   raise, which rolls the truncation back, and Django's own flush runs
   instead (step 1 again).

The one thing that differs from Django's flush: the baseline rows keep their
ids (Django's flush re-creates content types and permissions with new ids,
as it does not reset sequences). Both runs of ``run.py --native-orm`` flush
this way, so the comparison between them is unaffected.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

# A digest of a table's rows, in a stable order.
DIGEST = (
    "(SELECT md5(coalesce(string_agg(r::text, ',' ORDER BY r::text), '')) "
    "FROM {table} r)"
)
BODY = """
DECLARE
    others text[] := ARRAY(SELECT json_array_elements_text('{spec}'::json));
    tbl text;
    looked int := 0;
    written text[] := '{{}}';
BEGIN
    -- The tables with a page on disk: a table emptied by TRUNCATE has none.
    -- COMMIT every 100 tables, so that the locks taken to look do not pile
    -- up in the server's shared lock table (another run may share it).
    FOREACH tbl IN ARRAY others LOOP
        IF pg_relation_size(tbl::regclass) > 0 THEN
            written := written || tbl;
        END IF;
        looked := looked + 1;
        IF looked % 100 = 0 THEN
            COMMIT;
        END IF;
    END LOOP;
    COMMIT;
    IF cardinality(written) > 0 THEN
        EXECUTE 'TRUNCATE ' || array_to_string(written, ', ') || ' CASCADE';
    END IF;
    IF {changed} THEN
        RAISE EXCEPTION 'djsuite: a baseline table changed';
    END IF;
END
"""


@dataclass(frozen=True)
class Baseline:
    tables: tuple[str, ...]  # every table Django's flush empties
    statement: str  # the DO block of a later flush


_baselines: dict[tuple[str, str], Baseline] = {}


def flush(alias: str) -> None:
    """Empty ``alias``'s tables as Django's ``flush`` command would."""
    from django.db import DatabaseError, connections

    connection = connections[alias]
    tables = tuple(
        sorted(
            connection.introspection.django_table_names(
                only_existing=True, include_views=False
            )
        )
    )
    key = (alias, str(connection.settings_dict["NAME"]))
    baseline = _baselines.get(key)
    if baseline is not None and baseline.tables == tables:
        try:
            with connection.cursor() as cursor:
                cursor.execute(baseline.statement)
            return
        except DatabaseError:
            pass  # a baseline table changed: Django's flush puts it back
    _baselines[key] = _django_flush(alias, tables)


def _django_flush(alias: str, tables: tuple[str, ...]) -> Baseline:
    """Django's flush, then the baseline it leaves behind."""
    from django.core.management import call_command
    from django.db import connections

    # With a swapped AUTH_USER_MODEL (auth_tests), auth_user_user_permissions
    # is left out of the flush but references auth_permission: CASCADE.
    call_command(
        "flush",
        verbosity=0,
        interactive=False,
        database=alias,
        reset_sequences=False,
        allow_cascade=True,
    )
    connection = connections[alias]
    quote = connection.ops.quote_name
    kept: dict[str, str] = {}
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"SELECT EXISTS (SELECT FROM {quote(table)})")
            if cursor.fetchone()[0]:
                cursor.execute("SELECT " + DIGEST.format(table=quote(table)))
                kept[table] = cursor.fetchone()[0]
    changed = " OR ".join(
        f"{DIGEST.format(table=quote(table))} <> '{digest}'"
        for table, digest in kept.items()
    )
    # Quoted as Django's own flush quotes them.
    spec = json.dumps([quote(t) for t in tables if t not in kept])
    body = BODY.format(spec=spec.replace("'", "''"), changed=changed or "false")
    return Baseline(tables, f"DO $djsuite$ {body} $djsuite$")
