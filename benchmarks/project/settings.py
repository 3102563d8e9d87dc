"""Django settings for the benchmarks, read from ``DATABASE_URL``.

Used by the benchmark process itself and by the uvicorn server of the ASGI
benchmark. Every alias points at the same PostgreSQL database:

* ``default``: this backend, one plain connection per task (no pool);
* ``pooled``: this backend with ``OPTIONS["pool"]`` (``POOL_SIZE`` connections);
* ``server_binding``: this backend with psycopg's defaults (server-side
  binding, statements prepared after 5 executions) instead of Django's;
* ``stock``: Django's stock postgresql backend, persistent connection;
* ``stock_pooled``: Django's stock backend with its own (sync) pool;
* ``orm`` and ``orm_stock``: this backend and the stock one (persistent
  connection) with ``synchronous_commit=off``, for the ORM benchmark;
* ``gather``: this backend with a pool of ``GATHER_POOL_SIZE`` connections,
  for the view that runs its three queries at once (three connections per
  request).
"""

from __future__ import annotations

import os
from typing import Any

from psycopg.conninfo import conninfo_to_dict

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASE_URL = os.environ.get("DATABASE_URL", "").strip() or DEFAULT_URL
POOL_SIZE = 10  # the descriptions on the page say 10
# Three connections per request for the 10 clients of the gather scenario.
GATHER_POOL_SIZE = 3 * 10

ASYNC_ENGINE = "django_async_backend.db.backends.postgresql"
STOCK_ENGINE = "django.db.backends.postgresql"


def database(engine: str, **extra: Any) -> dict[str, Any]:
    """One ``DATABASES`` entry for DATABASE_URL (libpq parses the URL)."""
    info = {key: str(value) for key, value in conninfo_to_dict(DATABASE_URL).items()}
    options: dict[str, Any] = {"application_name": "dab-bench"}
    entry: dict[str, Any] = {
        "ENGINE": engine,
        "NAME": info.pop("dbname", "postgres"),
        "USER": info.pop("user", "postgres"),
        "PASSWORD": info.pop("password", ""),
        "HOST": info.pop("host", "127.0.0.1"),
        "PORT": info.pop("port", "5432"),
        "CONN_MAX_AGE": 0,
        "OPTIONS": options,
    }
    options.update(info)  # sslmode and the like
    options.update(extra.pop("OPTIONS", {}))
    entry.update(extra)
    return entry


POOL = {"min_size": POOL_SIZE, "max_size": POOL_SIZE}
NO_FSYNC_WAIT = "-c synchronous_commit=off"

DATABASES: dict[str, dict[str, Any]] = {
    "default": database(ASYNC_ENGINE),
    "pooled": database(ASYNC_ENGINE, OPTIONS={"pool": POOL}),
    "server_binding": database(
        ASYNC_ENGINE, OPTIONS={"server_side_binding": True, "prepare_threshold": 5}
    ),
    "stock": database(STOCK_ENGINE, CONN_MAX_AGE=None),
    "stock_pooled": database(STOCK_ENGINE, OPTIONS={"pool": POOL}),
    "gather": database(
        ASYNC_ENGINE,
        OPTIONS={"pool": {"min_size": GATHER_POOL_SIZE, "max_size": GATHER_POOL_SIZE}},
    ),
    # The ORM benchmark: no fsync wait at each autocommitted INSERT (the same
    # ~1 ms for both sides, which would hide what the clients do).
    "orm": database(ASYNC_ENGINE, OPTIONS={"options": NO_FSYNC_WAIT}),
    "orm_stock": database(
        STOCK_ENGINE, CONN_MAX_AGE=None, OPTIONS={"options": NO_FSYNC_WAIT}
    ),
}

INSTALLED_APPS = ["django_async_backend", "benchmarks.project"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "benchmarks.project.urls"
ASGI_APPLICATION = "benchmarks.project.asgi.application"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
SECRET_KEY = "django-async-backend-benchmarks-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
