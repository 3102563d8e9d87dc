"""The async twin of ``django.db.transaction``.

``async_atomic`` follows the algorithm of Django's ``Atomic`` (see its
docstring in ``django/db/transaction.py``) on the current task's async
connection. The algorithm itself, Django's error ladder included, lives in
``db/backends/base/atomic.py`` as plain code without I/O; ``AsyncAtomic``
only awaits the connection methods it asks for.

Cancellation: a ``CancelledError`` in the block is an exception like any
other (the block rolls back, then it propagates). One that lands while the
block itself talks to the server (COMMIT, ROLLBACK, SAVEPOINT ...) is
deferred until that statement has finished, so that the block knows its
outcome: after a COMMIT that went through, the on_commit callbacks run, and
then the cancellation propagates. A statement that does not finish within
``cancel_grace`` seconds (5 by default) of the cancellation is given up: the
connection is closed, and only then is the outcome of a COMMIT unknown (the
error and the log say so; its callbacks are not run).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, NoReturn, TypeVar, overload

from django.db import DEFAULT_DB_ALIAS
from django.db.transaction import TransactionManagementError

from django_async_backend.db import async_connections
from django_async_backend.db.backends.base import atomic
from django_async_backend.db.backends.base.base import BaseAsyncDatabaseWrapper

__all__ = [
    "AsyncAtomic",
    "TransactionManagementError",
    "async_atomic",
    "async_mark_for_rollback_on_error",
    "clean_savepoints",
    "commit",
    "get_autocommit",
    "get_connection",
    "get_rollback",
    "mark_for_rollback_on_error",
    "on_commit",
    "rollback",
    "savepoint",
    "savepoint_commit",
    "savepoint_rollback",
    "set_autocommit",
    "set_rollback",
]

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def get_connection(using: str | None = None) -> BaseAsyncDatabaseWrapper:
    """Get the current task's async connection for ``using`` (default alias)."""
    return async_connections[using or DEFAULT_DB_ALIAS]


async def get_autocommit(using: str | None = None) -> bool:
    """Get the autocommit status of the connection."""
    return await get_connection(using).get_autocommit()


async def set_autocommit(autocommit: bool, using: str | None = None) -> None:
    """Set the autocommit status of the connection."""
    await get_connection(using).set_autocommit(autocommit)


async def commit(using: str | None = None) -> None:
    """Commit a transaction."""
    await get_connection(using).commit()


async def rollback(using: str | None = None) -> None:
    """Roll back a transaction."""
    await get_connection(using).rollback()


async def savepoint(using: str | None = None) -> str | None:
    """Create a savepoint inside the current transaction; return its ID."""
    return await get_connection(using).savepoint()


async def savepoint_rollback(sid: str, using: str | None = None) -> None:
    """Roll back the most recent savepoint (if one exists)."""
    await get_connection(using).savepoint_rollback(sid)


async def savepoint_commit(sid: str, using: str | None = None) -> None:
    """Commit the most recent savepoint (if one exists)."""
    await get_connection(using).savepoint_commit(sid)


def clean_savepoints(using: str | None = None) -> None:
    """Reset the counter used to generate unique savepoint ids."""
    get_connection(using).clean_savepoints()


def get_rollback(using: str | None = None) -> bool:
    """Get the "needs rollback" flag -- for *advanced use* only."""
    return bool(get_connection(using).get_rollback())


def set_rollback(rollback: bool, using: str | None = None) -> None:
    """Set or unset the "needs rollback" flag -- for *advanced use* only."""
    get_connection(using).set_rollback(rollback)


@asynccontextmanager
async def mark_for_rollback_on_error(using: str | None = None) -> AsyncIterator[None]:
    """Mark the innermost atomic block for rollback if the block raises."""
    try:
        yield
    except Exception as exc:
        connection = get_connection(using)
        if connection.in_atomic_block:
            connection.needs_rollback = True
            connection.rollback_exc = exc
        raise


# The name of the product's earlier releases, kept for code written for them.
async_mark_for_rollback_on_error = mark_for_rollback_on_error


async def on_commit(
    func: Callable[[], Any], using: str | None = None, robust: bool = False
) -> None:
    """Run ``func`` (sync or async) when the current transaction commits."""
    await get_connection(using).on_commit(func, robust)


class AsyncAtomic:
    """An atomic block for async code: the async twin of Django's ``Atomic``.

    The outermost block opens a transaction and commits it on a clean exit;
    inner blocks are savepoints (or, with ``savepoint=False``, doom the whole
    transaction when they fail). A ``durable`` block refuses to be nested.
    """

    # Set by the test cases on the block that wraps a test, so that durable
    # blocks are allowed inside it, as with Django's TestCase.
    _from_testcase = False

    def __init__(self, using: str | None, savepoint: bool, durable: bool) -> None:
        self.using = using
        self.savepoint = savepoint
        self.durable = durable

    def __call__(self, func: F) -> F:
        if not (
            inspect.iscoroutinefunction(func)
            # An instance whose __call__ is async.
            or (callable(func) and inspect.iscoroutinefunction(type(func).__call__))
        ):
            raise TypeError(
                f"async_atomic can only decorate async functions, not {func!r}; "
                "use django.db.transaction.atomic for sync code."
            )

        @functools.wraps(func)
        async def inner(*args: Any, **kwargs: Any) -> Any:
            async with self:
                return await func(*args, **kwargs)

        return inner  # type: ignore[return-value]

    async def __aenter__(self) -> AsyncAtomic:
        connection = async_connections[self.using or DEFAULT_DB_ALIAS]
        await _run(atomic.enter(connection, self))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        connection = async_connections[self.using or DEFAULT_DB_ALIAS]
        await _run(atomic.exit(connection, self, exc_type is not None))

    def __enter__(self) -> NoReturn:
        raise TypeError(
            "async_atomic() is an async context manager: write `async with "
            "async_atomic():` in async code, or use django.db.transaction.atomic "
            "with a plain `with` in sync code."
        )

    def __exit__(self, *exc_info: object) -> None:
        """Never reached: see __enter__."""


async def _run(plan: atomic.Plan) -> None:
    """Await each connection coroutine ``plan`` yields; hand back the outcome."""
    result: Any = None
    error: BaseException | None = None
    try:
        while True:
            try:
                step = plan.send(result) if error is None else plan.throw(error)
            except StopIteration:
                return
            try:
                result, error = await step, None
            except BaseException as exc:
                result, error = None, exc
    finally:
        del error  # no reference cycle through the traceback


@overload
def async_atomic(using: F) -> F: ...


@overload
def async_atomic(
    using: str | None = None, savepoint: bool = True, durable: bool = False
) -> AsyncAtomic: ...


def async_atomic(
    using: Any = None, savepoint: bool = True, durable: bool = False
) -> Any:
    """Run a block or an async function atomically, like Django's ``atomic``.

    Use as ``async with async_atomic():``, ``@async_atomic`` or
    ``@async_atomic(using="other", savepoint=False, durable=True)``.
    """
    # Bare decorator: @async_atomic -- although the first argument is called
    # `using`, it's actually the function being decorated.
    if callable(using):
        return AsyncAtomic(DEFAULT_DB_ALIAS, savepoint, durable)(using)
    return AsyncAtomic(using, savepoint, durable)
