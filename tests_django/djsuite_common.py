"""What both settings modules of Django's test suite run share.

The server comes, as in ``tests/settings.py``, from ``DATABASE_URL``
(``postgresql://user:pass@host:port/dbname``, host also as ``?host=``), else
the libpq ``PG*`` variables, else ``127.0.0.1:5432`` as ``postgres``. Django's
test databases get their own names, ``<prefix>_<engine>_<alias>`` (prefix from
``DJSUITE_DB_PREFIX``, default ``djsuite``), so the two ENGINE runs and other
users of the server never share one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import django

# Django's connection keys that may come as query parameters of the URL.
_URL_KEYS = {"host": "HOST", "port": "PORT", "user": "USER", "password": "PASSWORD"}


def server_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """Connection settings (no ENGINE) from DATABASE_URL, PG* or defaults."""
    url = environ.get("DATABASE_URL", "").strip()
    if not url:
        return {
            "NAME": environ.get("PGDATABASE", "postgres"),
            "USER": environ.get("PGUSER", "postgres"),
            "PASSWORD": environ.get("PGPASSWORD", ""),
            "HOST": environ.get("PGHOST", "127.0.0.1"),
            "PORT": environ.get("PGPORT", "5432"),
            "OPTIONS": {},
        }
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"DATABASE_URL must be a postgresql:// URL, got {url!r}")
    config: dict[str, Any] = {
        "NAME": unquote(parts.path.lstrip("/")) or "postgres",
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": unquote(parts.hostname or ""),
        "PORT": str(parts.port or ""),
        "OPTIONS": {},
    }
    for key, value in parse_qsl(parts.query):
        if key in _URL_KEYS:
            config[_URL_KEYS[key]] = value
        elif key == "dbname":
            config["NAME"] = value
        else:
            config["OPTIONS"][key] = value
    config["USER"] = config["USER"] or environ.get("PGUSER", "postgres")
    config["HOST"] = config["HOST"] or environ.get("PGHOST", "127.0.0.1")
    return config


def databases(engine: str, tag: str) -> dict[str, dict[str, Any]]:
    """``default`` and ``other`` on ``engine``, as Django's suite expects."""
    server = server_from_env(os.environ)
    prefix = os.environ.get("DJSUITE_DB_PREFIX", "djsuite")
    return {
        alias: {
            **server,
            "OPTIONS": dict(server["OPTIONS"]),
            "ENGINE": engine,
            "TEST": {"NAME": f"{prefix}_{tag}_{alias}"},
        }
        for alias in ("default", "other")
    }


def suite_settings(engine: str, tag: str) -> dict[str, Any]:
    """A settings module's names: Django's tests/test_sqlite.py, our DATABASES."""
    values: dict[str, Any] = {
        "DATABASES": databases(engine, tag),
        "SECRET_KEY": "django_tests_secret_key",
        "PASSWORD_HASHERS": ["django.contrib.auth.hashers.MD5PasswordHasher"],
        "USE_TZ": False,
        # Records each test's outcome to $DJSUITE_RESULTS for the comparison.
        "TEST_RUNNER": "djsuite_runner.RecordingRunner",
    }
    if django.VERSION < (6, 0):
        # Django 6.0 made BigAutoField the default and dropped this line from
        # its own settings file; overriding it counts in some checks' tests.
        values["DEFAULT_AUTO_FIELD"] = "django.db.models.AutoField"
    return values
