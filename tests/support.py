"""Shared helpers for the test modules; import it before anything Django.

Importing this module configures Django (``DJANGO_SETTINGS_MODULE=settings``
unless already set), calls ``django.setup()`` once and enters
``run_database()``: the suite's own database (``test_<NAME>_<pid>_<hex>``,
see tests/settings.py), created when missing, dropped at interpreter exit by
the last of the run's processes. It is the one place the tests' database
comes from, for every runner.

The helpers that inspect the server use short-lived *synchronous* psycopg
connections on purpose: they observe the backend under test from the outside
and must not share its event loop, pool or connection state.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")

import django
from django.apps import apps

if not apps.ready:
    django.setup()

import psycopg
from django.conf import settings
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

__all__ = [
    "close_everything",
    "count_sessions",
    "ensure_test_tables",
    "expected_logs",
    "idle_in_transaction",
    "outside",
    "poll",
    "run_database",
    "run_python",
    "server_dsn",
    "session_state",
    "sessions_once_settled",
    "settle_background",
    "terminate",
]

# The alias whose stock (sync) Django backend creates the schema.
MIGRATE_ALIAS = "stock"

_SESSIONS_SQL = """
    SELECT count(*) FROM pg_stat_activity
    WHERE datname = current_database()
      AND pid <> pg_backend_pid()
      AND backend_type = 'client backend'
"""


def server_dsn(alias: str = "default") -> str:
    """A libpq conninfo string for ``alias``, usable with ``psycopg.connect``."""
    config: dict[str, Any] = settings.DATABASES[alias]
    if "postgresql" not in config["ENGINE"]:
        raise ValueError(f"database alias {alias!r} is not a PostgreSQL alias")
    params: dict[str, Any] = {
        "dbname": config.get("NAME") or None,
        "user": config.get("USER") or None,
        "password": config.get("PASSWORD") or None,
        "host": config.get("HOST") or None,
        "port": str(config["PORT"]) if config.get("PORT") else None,
    }
    if settings.DAB_SERVER_URL:
        # Behind PgBouncer (tests_pgbouncer): observe the server itself, so
        # that observers neither count as nor borrow PgBouncer's sessions.
        server = urlsplit(settings.DAB_SERVER_URL)
        params["host"] = server.hostname or params["host"]
        params["port"] = str(server.port) if server.port else params["port"]
    options: dict[str, Any] = dict(config.get("OPTIONS") or {})
    # Only libpq parameters belong in a conninfo string.
    for key in ("connect_timeout", "sslmode", "application_name", "options"):
        if key in options:
            params[key] = options[key]
    return make_conninfo(**{k: v for k, v in params.items() if v is not None})


# The helpers' own sessions: a closed session can linger in pg_stat_activity
# for a moment, and must never count as one of the backend's.
OBSERVER = "dab-tests-observer"


def _observer_dsn() -> str:
    return make_conninfo(server_dsn(), application_name=OBSERVER)


# ---- the run's databases -------------------------------------------------
#
# A run and the subprocesses it starts (they inherit DAB_TEST_DATABASE) each
# hold a shared advisory lock on the database's name, on a session of the
# server's own database, for as long as they live. At exit each asks for the
# lock exclusively: only the last one alive gets it, and drops the databases.
# A database of this server's naming whose lock nobody holds is left over
# from a killed run: a new run drops it.

# The database tests/test_routing.py makes as its "replica", and the one
# tests/test_djsuite_flush.py migrates and flushes.
REPLICA_DATABASE_NAME = f"{settings.TEST_DATABASE_NAME}_replica"
FLUSH_DATABASE_NAME = f"{settings.TEST_DATABASE_NAME}_flush"
RUN_APPLICATION_NAME = "dab-tests-run"
_RUN_LOCK_SQL = "hashtext('django-async-backend tests ' || %s)"
# test_<database>_<pid>_<hex>, and its replica and flush databases.
_RUN_DATABASE = re.compile(
    re.escape(settings.TEST_DATABASE_PREFIX) + r"\d+_[0-9a-f]{4}(?:_replica|_flush)?"
)


def _maintenance_dsn() -> str:
    """Conninfo of the database the settings were given, for CREATE/DROP."""
    return make_conninfo(
        server_dsn(),
        dbname=settings.SERVER_DATABASE_NAME,
        application_name=RUN_APPLICATION_NAME,
    )


def _unreachable(error: psycopg.Error) -> RuntimeError:
    """The one-line error for a server the settings point at but can't reach."""
    params = conninfo_to_dict(_maintenance_dsn())
    where = " ".join(
        f"{key}={params[key]}"
        for key in ("host", "port", "user", "dbname")
        if key in params
    )
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = lines[0] if lines else type(error).__name__
    return RuntimeError(
        f"tests: cannot connect to PostgreSQL ({where}): {reason}. Start a "
        "server there, or point DATABASE_URL or the PG* variables at one "
        "(docs/development.md)."
    )


def _drop(session: psycopg.Connection[Any], *names: str) -> None:
    for name in names:
        # FORCE: what is still connected (a pool, PgBouncer's server
        # sessions) belongs to a run that is over.
        session.execute(
            pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                pgsql.Identifier(name)
            )
        )


def _try_lock(session: psycopg.Connection[Any], name: str) -> bool:
    row = session.execute(f"SELECT pg_try_advisory_lock({_RUN_LOCK_SQL})", (name,))
    return bool((row.fetchone() or (False,))[0])


def _drop_leftovers(session: psycopg.Connection[Any]) -> None:
    """Drop the databases of killed runs: those whose lock nobody holds."""
    rows = session.execute("SELECT datname FROM pg_database").fetchall()
    found = {row[0] for row in rows if _RUN_DATABASE.fullmatch(row[0])}
    own = {settings.TEST_DATABASE_NAME, REPLICA_DATABASE_NAME, FLUSH_DATABASE_NAME}
    runs = {re.sub("_(?:replica|flush)$", "", name) for name in found - own}
    for name in sorted(runs):
        if _try_lock(session, name):
            _drop(session, f"{name}_replica", f"{name}_flush", name)
            session.execute(f"SELECT pg_advisory_unlock({_RUN_LOCK_SQL})", (name,))


def _claim_test_database() -> psycopg.Connection[Any]:
    """Hold the run's shared lock; create the test database when missing."""
    name = settings.TEST_DATABASE_NAME
    try:
        session = psycopg.connect(_maintenance_dsn(), autocommit=True)
    except psycopg.OperationalError as error:
        raise _unreachable(error) from None
    session.execute(f"SELECT pg_advisory_lock_shared({_RUN_LOCK_SQL})", (name,))
    _drop_leftovers(session)
    found = session.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
    if found.fetchone() is None:
        # A subprocess of the run, starting at the same moment, may make it.
        with contextlib.suppress(psycopg.errors.DuplicateDatabase):
            session.execute(
                pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name))
            )
    return session


def _release_test_database(session: psycopg.Connection[Any]) -> None:
    """Drop the run's databases unless a process of the run still uses them."""
    name = settings.TEST_DATABASE_NAME
    try:
        session.execute(f"SELECT pg_advisory_unlock_shared({_RUN_LOCK_SQL})", (name,))
        if _try_lock(session, name):
            _drop(session, REPLICA_DATABASE_NAME, FLUSH_DATABASE_NAME, name)
    except psycopg.Error as error:
        print(
            f"tests: could not drop {name!r} ({error}); drop it with: "
            f"dropdb --if-exists {name}",
            file=sys.stderr,
        )
    finally:
        session.close()


@contextlib.contextmanager
def run_database() -> Iterator[str]:
    """Hold this run's database (created when missing); yield its name.

    On exit the database is dropped if no other process of the run still
    holds it. This module enters it on import and leaves it at interpreter
    exit, so that every runner (unittest, pytest, Django's, a subprocess)
    gets the same database by importing this module; a pytest fixture or a
    unittest ``enterModuleContext`` may enter it again, which is harmless.
    """
    session = _claim_test_database()
    try:
        yield settings.TEST_DATABASE_NAME
    finally:
        _release_test_database(session)


_run = contextlib.ExitStack()
_run.enter_context(run_database())
atexit.register(_run.close)


def count_sessions(application_name: str | None = None) -> int:
    """Client sessions on the test database, other than the one asking.

    Only sessions with ``application_name`` are counted; by default the name
    that tests/settings.py gives this test process's connections.
    """
    if application_name is None:
        # The name tests/settings.py gives this process's connections.
        application_name = settings.DATABASES["default"]["OPTIONS"]["application_name"]
    if settings.DAB_SERVER_URL:
        return _pgbouncer_clients(application_name)
    rows = outside(_SESSIONS_SQL + " AND application_name = %s", (application_name,))
    return int(rows[0][0])


def _pgbouncer_clients(application_name: str) -> int:
    """Behind PgBouncer: the client connections to it with that name.

    Server sessions belong to PgBouncer's pool there; what the backend opens
    and closes are its connections to PgBouncer, listed by SHOW CLIENTS on
    PgBouncer's admin console.
    """
    config: dict[str, Any] = settings.DATABASES["default"]
    conninfo = make_conninfo(
        host=config["HOST"],
        port=str(config["PORT"]),
        user=config["USER"],
        password=config.get("PASSWORD") or None,
        dbname="pgbouncer",
    )
    with psycopg.connect(conninfo, autocommit=True) as admin:
        # The admin console speaks the simple query protocol only.
        cursor = psycopg.ClientCursor(admin)
        cursor.execute("SHOW CLIENTS")
        columns = [column.name for column in cursor.description or []]
        clients = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    return sum(
        1
        for client in clients
        if client["database"] == config["NAME"]
        and client["application_name"] == application_name
    )


_tables_ready = False
_tables_lock = threading.Lock()


def _migrate() -> None:
    from django.core.management import call_command
    from django.db import connections

    # The processes of a run (a subprocess imports this module too) take
    # turns: two migrations of a fresh database at once would clash.
    with psycopg.connect(_observer_dsn(), autocommit=True) as turn:
        turn.execute("SELECT pg_advisory_lock(hashtext('dab-tests migrate'))")
        try:
            call_command("migrate", database=MIGRATE_ALIAS, verbosity=0)
        finally:
            # Leave no session behind that count_sessions() would see.
            connections[MIGRATE_ALIAS].close()


def ensure_test_tables() -> None:
    """Create the schema of every installed app (testapp included), once.

    Runs ``migrate`` through the stock synchronous PostgreSQL backend on the
    same database, so it works before the async backend is usable and from
    both sync and async callers (the work runs in a helper thread, which
    keeps Django's async-safety guard happy when an event loop is running).
    Idempotent and cheap after the first call in a process.
    """
    global _tables_ready
    with _tables_lock:
        if _tables_ready:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            in_loop = False
        else:
            in_loop = True
        if in_loop:
            with ThreadPoolExecutor(max_workers=1) as pool:
                pool.submit(_migrate).result()
        else:
            _migrate()
        _tables_ready = True


def outside(sql: str, params: Any = ()) -> list[Any]:
    """Run ``sql`` in a fresh autocommit session: the view from outside."""
    with psycopg.connect(_observer_dsn(), autocommit=True) as connection:
        cursor = connection.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def session_state(pid: int) -> str | None:
    """The pg_stat_activity state of a backend (None: no such session)."""
    rows = outside("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,))
    return rows[0][0] if rows else None


def idle_in_transaction(application_name: str) -> int:
    """Sessions of ``application_name`` left idle inside an open transaction."""
    rows = outside(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = %s "
        "AND state LIKE 'idle in transaction%%'",
        (application_name,),
    )
    return int(rows[0][0])


def running(application_name: str, fragment: str) -> bool:
    """Whether a session of ``application_name`` is executing, right now, a
    statement that contains ``fragment`` (to cancel it deterministically)."""
    rows = outside(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
        "AND state = 'active' AND query LIKE %s",
        (application_name, f"%{fragment}%"),
    )
    return bool(rows[0][0])


def terminate(pid: int) -> None:
    """Kill a backend from outside; wait (bounded) until it is gone."""
    outside("SELECT pg_terminate_backend(%s, 5000)", (pid,))


def run_python(arguments: list[str]) -> subprocess.CompletedProcess[str]:
    """Run this Python in tests/, with the test settings (e.g. a test runner)."""
    here = Path(__file__).resolve().parent
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "settings",
        "PYTHONPATH": os.pathsep.join([str(here), str(here.parent)]),
    }
    return subprocess.run(
        [sys.executable, *arguments],
        cwd=here,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


async def poll(check: Callable[[], object], attempts: int = 250) -> bool:
    """Poll ``check`` a bounded number of times (never a duration claim)."""
    for _ in range(attempts):
        if check():
            return True
        await asyncio.sleep(0.02)
    return bool(check())


async def sessions_once_settled(
    expected: int, application_name: str | None = None
) -> int:
    """``count_sessions()``, polled (bounded) until it shows ``expected``.

    A closed connection's backend stays in pg_stat_activity for a moment
    after the client has gone; the count is the final one either way, for
    the caller to assert.
    """
    await poll(lambda: count_sessions(application_name) == expected)
    return count_sessions(application_name)


async def close_everything() -> None:
    """Close what the event loop's shutdown would: the task's connections,
    the parked ones and the loop's pools (``close_all()`` leaves pools open,
    since other tasks may use them)."""
    from django_async_backend.db import async_connections
    from django_async_backend.utils.loops import loop_state

    await async_connections.close_all()
    await loop_state().close_pools()


async def settle_background() -> None:
    """Let the background connection releases of finished tasks run (bounded)."""
    from django_async_backend.utils.loops import loop_state

    for _ in range(200):
        pending = [task for task in loop_state().tasks if not task.done()]
        if not pending:
            return
        await asyncio.wait(pending, timeout=0.05)


class _Records(logging.Handler):
    def __init__(self, messages: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.messages = messages

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def expected_logs(logger: str, *kinds: str) -> Iterator[list[str]]:
    """Capture ``logger``'s warnings; each must start with one of ``kinds``.

    For scenarios that make a library log on purpose (psycopg_pool discarding
    the connection of a killed session, or failing to reach a stopped
    server): the records stay off stderr, the caller gets their messages to
    assert on, and a record of any other kind fails the test on exit.
    """
    messages: list[str] = []
    handler = _Records(messages)
    target = logging.getLogger(logger)
    propagate = target.propagate
    target.addHandler(handler)
    target.propagate = False
    try:
        yield messages
    finally:
        target.removeHandler(handler)
        target.propagate = propagate
    unexpected = [text for text in messages if not text.startswith(kinds)]
    if unexpected:
        raise AssertionError(f"unexpected {logger} warnings: {unexpected}")
