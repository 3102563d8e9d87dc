"""Settings of the demo project: one PostgreSQL database, served over ASGI.

The server comes from ``DATABASE_URL`` (``python3 dev.py demo`` exports it),
else ``127.0.0.1:5432`` as user ``postgres``; the demo always uses its own
database on that server, ``DEMO_DATABASE`` (``example_demo`` by default), so it
never touches the test suite's.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ENGINE = "django_async_backend.db.backends.postgresql"


def server_settings(url: str) -> dict[str, Any]:
    """Django connection settings for a ``postgresql://`` URL.

    The host, port, user and password may also come as query parameters (as
    embedded PostgreSQL prints its URL, with ``?host=/socket/dir``); other
    query parameters (``sslmode``, ...) go to ``OPTIONS``.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError("DATABASE_URL must be a postgresql:// URL")
    config: dict[str, Any] = {
        "NAME": unquote(parts.path.lstrip("/")) or "postgres",
        "USER": unquote(parts.username or "") or "postgres",
        "PASSWORD": unquote(parts.password or ""),
        "HOST": unquote(parts.hostname or "") or "127.0.0.1",
        "PORT": str(parts.port or ""),
    }
    options: dict[str, Any] = {}
    for key, value in parse_qsl(parts.query):
        if key in ("host", "port", "user", "password", "dbname"):
            config["NAME" if key == "dbname" else key.upper()] = value
        else:
            options[key] = value
    options.setdefault("connect_timeout", 10)
    config["OPTIONS"] = options
    return config


# The server as given (its database is only used to create ours).
SERVER = server_settings(os.environ.get("DATABASE_URL") or DEFAULT_SERVER_URL)
DEMO_DATABASE = os.environ.get("DEMO_DATABASE") or "example_demo"

DATABASES: dict[str, dict[str, Any]] = {
    "default": {
        **SERVER,
        "ENGINE": ENGINE,
        "NAME": DEMO_DATABASE,
        "OPTIONS": {
            **SERVER["OPTIONS"],
            "application_name": "example-demo",
            # Thousands of concurrent requests share a few connections: each
            # request waits for a free one (up to `timeout` seconds) instead
            # of opening its own and exhausting max_connections.
            "pool": {"min_size": 2, "max_size": 16, "timeout": 10},
        },
    },
}

# Demo only, served on the loopback interface: never deploy this key.
SECRET_KEY = "example-demo-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "django_async_backend",
    "example.bank",
]
# No stock middleware: Django runs sync middleware through a thread hop per
# request; this one is async, and CSRF is checked per view (csrf_protect).
MIDDLEWARE = ["example.bank.middleware.security"]
CSRF_FAILURE_VIEW = "example.bank.views.csrf_failure"

ROOT_URLCONF = "example.urls"
ASGI_APPLICATION = "example.asgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": []},
    },
]

USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        # 4xx answers (insufficient funds, unknown pages) are the demo's
        # normal business; server errors are still logged, with traceback.
        "django.request": {"handlers": ["console"], "level": "ERROR"},
        "example": {"handlers": ["console"], "level": "INFO"},
    },
}
