"""pytest-django's database blocker, applied to async connections.

Registered by ``django_async_backend.test.pytest_plugin`` when pytest-django
is active. Every async connection the backend sets up (a new one, one reused
from a finished task or from a pool, and a ``listen()`` block's) first asks
whether the sync side may connect now: where pytest-django refuses, it
refuses too, with pytest-django's own error.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

import pytest

__all__ = ["check_access", "connections_refused"]

T = TypeVar("T")

# Why the current context may not open async connections at all (see
# connections_refused); None: pytest-django's blocker decides.
_refusal: ContextVar[str | None] = ContextVar(
    "django_async_backend_pytest_refusal", default=None
)


@contextlib.contextmanager
def connections_refused(reason: str) -> Iterator[None]:
    """Make the async connections set up in the block fail with ``reason``."""
    token = _refusal.set(reason)
    try:
        yield
    finally:
        _refusal.reset(token)


def check_access(blocker: Any) -> None:
    """Raise if this context may not connect: pytest-django's error, or ours."""
    reason = _refusal.get()
    if reason is not None:
        raise RuntimeError(reason)
    from django.db.backends.base.base import BaseDatabaseWrapper

    ensure_connection: Any = BaseDatabaseWrapper.ensure_connection
    # pytest-django blocks the sync side by putting a method of its blocker
    # there (and Django's own back to unblock): calling it raises its error.
    if getattr(ensure_connection, "__self__", None) is blocker:
        ensure_connection()


@pytest.fixture(autouse=True, scope="session")
def _django_async_db_blocker(django_db_blocker: Any) -> Iterator[None]:
    """Make async connections obey pytest-django's database blocker."""
    if django_db_blocker is None:  # no Django settings: pytest-django is idle
        yield
        return
    from django_async_backend.db.backends.base.base import BaseAsyncDatabaseWrapper
    from django_async_backend.db.backends.postgresql.listen import Notifications

    with pytest.MonkeyPatch.context() as patch:
        # Where every connection starts: a wrapper's (new, reused or
        # pooled), and a listen() block's (the loop's listener connection).
        for owner, name in (
            (BaseAsyncDatabaseWrapper, "_set_up_connection"),
            (Notifications, "__aenter__"),
        ):
            patch.setattr(
                owner, name, _checked(getattr(owner, name), django_db_blocker)
            )
        yield


def _checked(method: Callable[..., Awaitable[T]], blocker: Any) -> Callable[..., Any]:
    """Wrap the async ``method``: ask check_access() first."""

    @functools.wraps(method)
    async def checked(self: Any, /, *args: Any, **kwargs: Any) -> T:
        check_access(blocker)
        return await method(self, *args, **kwargs)

    return checked
