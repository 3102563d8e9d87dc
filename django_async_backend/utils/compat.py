"""Every private name of Django, asyncio and psycopg_pool the package uses.

Nothing else in the package reaches behind a public API: when one of these
changes, tests/test_compat.py (run on each supported Python and Django)
fails here, loudly, rather than somewhere deep in a query.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from typing import Any

from django.db import router
from django.db.backends.base.base import RAN_DB_VERSION_CHECK
from django.dispatch import Signal
from django.dispatch.dispatcher import NO_RECEIVERS

__all__ = [
    "RAN_DB_VERSION_CHECK",
    "async_unsafe_allowed",
    "database_operation_forbidden",
    "databases_names",
    "fetch_all",
    "has_no_receivers",
    "idle_pool_connections",
    "iterate_queryset",
    "live_receivers",
    "local_managers",
    "log_robust_failure",
    "parse_save_params",
    "queryset_class",
    "queryset_write_db",
    "quiet_when_destroyed",
    "related_manager_db",
    "running_loop",
    "running_task",
    "task_of",
]

# ##### asyncio #####

# The running loop, or None (no error): asyncio's own C function.
running_loop: Callable[[], asyncio.AbstractEventLoop | None] = asyncio._get_running_loop

if sys.version_info < (3, 14):
    from asyncio.tasks import _current_tasks  # type: ignore[attr-defined]

    # The task running on a loop: the table asyncio.current_task() reads
    # (Python code on 3.11). ``task_of(running_loop())`` is two C calls and no
    # frame, nor an error without a loop: every query checks its task so.
    task_of: Callable[[Any], asyncio.Task[Any] | None] = _current_tasks.get
else:  # 3.14 keeps the running task in the thread state

    def task_of(loop: Any) -> asyncio.Task[Any] | None:
        return asyncio.current_task(loop) if loop is not None else None


def running_task() -> asyncio.Task[Any] | None:
    """Return the running task, or None (``asyncio.current_task()``, no error)."""
    return task_of(running_loop())


def quiet_when_destroyed(task: asyncio.Task[Any]) -> None:
    """Let ``task`` be dropped with its loop, pending, without a warning."""
    task._log_destroy_pending = False  # type: ignore[attr-defined]


# ##### Django: signals #####


def live_receivers(signal: Signal, sender: Any) -> tuple[list[Any], list[Any]]:
    """The (sync, async) receivers of ``signal`` for ``sender``."""
    receivers: tuple[list[Any], list[Any]] = signal._live_receivers(sender)
    return receivers


def has_no_receivers(signal: Signal, sender: Any) -> bool:
    """Tell cheaply that ``signal`` has no receiver for ``sender`` (Django's test)."""
    return (
        not signal.receivers
        or signal.sender_receivers_cache.get(sender) is NO_RECEIVERS
    )


def log_robust_failure(signal: Signal, receiver: Any, error: Exception) -> None:
    """Log a failed receiver as ``send_robust()`` does."""
    signal._log_robust_failure(receiver, error)  # type: ignore[attr-defined]


# ##### Django: models and querysets #####


def parse_save_params(obj: Any) -> Callable[..., Any] | None:
    """Django 5.2's parser of ``save()``'s deprecated positional arguments."""
    return getattr(obj, "_parse_save_params", None)


def iterate_queryset(queryset: Any, chunked: bool, chunk_size: int) -> Any:
    """The sync iterator behind ``QuerySet.iterator()``/``aiterator()``."""
    return queryset._iterator(chunked, chunk_size)


def fetch_all(queryset: Any) -> list[Any]:
    """Run the query (what iterating a QuerySet does); return the result cache."""
    queryset._fetch_all()
    return queryset._result_cache  # type: ignore[no-any-return]


def queryset_write_db(queryset: Any) -> str:
    """The alias a write through ``queryset`` goes to (QuerySet.db for writes)."""
    return queryset._db or router.db_for_write(queryset.model, **queryset._hints)


def related_manager_db(manager: Any) -> str | None:
    """The alias a related manager was bound to (``db_manager(alias)``), if any."""
    return manager._db  # type: ignore[no-any-return]


def queryset_class(manager: Any) -> type:
    """The QuerySet class a manager was built from."""
    return manager._queryset_class  # type: ignore[no-any-return]


def local_managers(model: type) -> list[Any]:
    """The managers declared (or auto-created) on ``model`` itself."""
    return model._meta.local_managers  # type: ignore[attr-defined, no-any-return]


def async_unsafe_allowed() -> bool:
    """Tell whether the project turned Django's async-safety check off."""
    return bool(os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE"))


# ##### Django: tests #####


def database_operation_forbidden(message: str) -> AssertionError:
    """The error of Django's test cases for a query to an alias not allowed."""
    from django.test.testcases import (  # type: ignore[attr-defined]  # (lazily)
        DatabaseOperationForbidden,
    )

    return DatabaseOperationForbidden(message)  # type: ignore[no-any-return]


def databases_names(test_case: Any, include_mirrors: bool = False) -> list[str]:
    """The aliases of a test case's ``databases``, as Django resolves them."""
    return test_case._databases_names(include_mirrors=include_mirrors)  # type: ignore[no-any-return]


# ##### psycopg_pool #####


def idle_pool_connections(pool: Any) -> list[Any]:
    """The connections idle in a psycopg_pool pool, right now."""
    return list(getattr(pool, "_pool", ()))
