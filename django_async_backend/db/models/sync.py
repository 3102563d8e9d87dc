"""``run_sync``: existing sync code, run natively inside async code.

``await run_sync(legacy_helper, *args)`` calls the sync function on the event
loop's thread, inside the native bridge: every ORM call and
``connection.cursor()`` in it goes to the calling task's async connection,
so it joins the task's open ``async_atomic()`` block (its
``transaction.atomic()`` blocks are savepoints, its ``transaction.on_commit``
callbacks wait for the block's commit) and a rollback undoes its writes.
``sync_to_async`` instead runs it in a thread on Django's sync connection,
outside the block (see :mod:`django_async_backend.db.backends.postgresql.guard`).

Blocking work that is not the database (``time.sleep``, ``requests.get``)
blocks the event loop inside ``run_sync``: keep ``sync_to_async`` for that.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Generic, ParamSpec, TypeVar

from asgiref.sync import markcoroutinefunction

from django_async_backend.utils.bridge import run_native

__all__ = ["run_sync"]

P = ParamSpec("P")
T = TypeVar("T")


class NativeSync(Generic[P, T]):
    """What ``run_sync(fn, ...)`` returns: awaitable, and an async callable.

    ``await run_sync(fn, *args)`` calls ``fn(*args)``; ``run_sync(fn)`` (or
    ``@run_sync`` on a function) is an async function to call with the
    arguments, as ``sync_to_async(fn)`` is.
    """

    def __init__(
        self, fn: Callable[P, T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        functools.update_wrapper(self, fn)
        markcoroutinefunction(self)

    def __await__(self) -> Generator[Any, None, T]:
        return self(*self.args, **self.kwargs).__await__()

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[T]:
        _install_bridge()
        return run_native(self.fn, *args, **kwargs)

    def __repr__(self) -> str:
        return f"run_sync({self.fn!r})"


def run_sync(fn: Callable[P, T], /, *args: Any, **kwargs: Any) -> NativeSync[P, T]:
    """Run sync ``fn`` natively: its ORM calls join the task's transaction.

    ``await run_sync(fn, *args, **kwargs)``, ``await run_sync(fn)(*args)``,
    or as a decorator, ``@run_sync`` (then ``await fn(*args)``).
    """
    if not callable(fn):
        raise TypeError(f"run_sync() takes a sync function, not {fn!r}.")
    if isinstance(fn, NativeSync):
        fn = fn.fn
    return NativeSync(fn, args, kwargs)


@functools.cache
def _install_bridge() -> None:
    """Route ``connections[alias]`` to the task's async connection (once).

    Done at ``ready()`` when ``django_async_backend`` is installed; also here,
    for projects that only use ``run_sync``.
    """
    from django_async_backend.db.models import facade

    facade.install()
