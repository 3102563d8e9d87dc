"""The async twin of ``django.db.transaction``.

``async_atomic`` follows the algorithm of Django's ``Atomic`` (see its
docstring in ``django/db/transaction.py``) on the current task's async
connection. The decisions (what to send when a block is entered or left, and
how the connection state changes) are plain functions, ``plan_enter`` and
``plan_exit``, that do no I/O; ``AsyncAtomic`` only awaits the SQL they ask
for, climbing Django's ladder when it fails: a failed commit rolls back, a
failed rollback closes the connection, and the user's exception is never
shadowed.

Cancellation: a ``CancelledError`` in the block is an exception like any
other (the block rolls back, then it propagates). One that lands while the
block itself talks to the server is handled too: psycopg cancels the
statement on the server and waits for the connection to settle, then the
block makes sure the transaction is over (rolling back, or closing the
connection as a last resort) before letting the cancellation propagate. The
outcome of a COMMIT interrupted that way is unknown, as with a network
failure, so its on_commit callbacks are dropped.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, TypeVar, overload

from django.db import DEFAULT_DB_ALIAS, DatabaseError, Error
from django.db.transaction import TransactionManagementError

from django_async_backend.db import async_connections
from django_async_backend.db.backends.base.atomic import (
    Step,
    atomic_aliases,
    leaving_manual_transaction,
    leaving_transaction,
    plan_enter,
    plan_exit,
)
from django_async_backend.db.backends.base.base import BaseAsyncDatabaseWrapper
from django_async_backend.utils.loops import shielded

__all__ = [
    "AsyncAtomic",
    "TransactionManagementError",
    "async_atomic",
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
        connection = get_connection(self.using)
        connection.validate_task_sharing()
        if (
            self.durable
            and connection.atomic_blocks
            and not connection.atomic_blocks[-1]._from_testcase
        ):
            raise RuntimeError(
                "A durable atomic block cannot be nested within another atomic block."
            )
        await connection.ensure_connection()
        step = plan_enter(connection, self.savepoint)
        try:
            if step is Step.BEGIN:
                await connection.set_autocommit(
                    False, force_begin_transaction_with_broken_autocommit=True
                )
                connection.in_atomic_block = True
            elif step is Step.SAVEPOINT:
                connection.savepoint_ids.append(await connection.savepoint())
        except BaseException:
            if step is Step.SAVEPOINT:
                # A failed or interrupted SAVEPOINT may have broken the
                # transaction: the enclosing block must roll back.
                connection.needs_rollback = True
            elif (
                step is Step.BEGIN
                and connection.connection is not None
                and not connection.autocommit
            ):
                # Cancelled after autocommit went off: turn it back on, or
                # the task's next block would be a manual transaction.
                with contextlib.suppress(Exception):  # then it is not reused
                    await shielded(connection.set_autocommit(True))
            raise
        if connection.in_atomic_block:
            connection.atomic_blocks.append(self)
            if len(connection.atomic_blocks) == 1:
                connection.atomic_token = atomic_aliases.set(
                    atomic_aliases.get() | {connection.alias}
                )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        connection = get_connection(self.using)
        step, sid = plan_exit(connection, exc_type is not None)
        if not connection.atomic_blocks:
            _forget_atomic(connection)
        try:
            await _send_exit_step(connection, step, sid)
        finally:
            await _restore_after_exit(connection)


def _forget_atomic(connection: Any) -> None:
    """Undo the outermost block's mark in the context (see atomic_aliases)."""
    token, connection.atomic_token = connection.atomic_token, None
    if token is None:
        return
    try:
        atomic_aliases.reset(token)
    except ValueError:  # set in another context (a test case's class set-up)
        atomic_aliases.set(atomic_aliases.get() - {connection.alias})


async def _send_exit_step(connection: Any, step: Step, sid: str | None) -> None:
    """Send what leaving the block needs, following Django's error ladder."""
    if step is Step.RELEASE:
        assert sid is not None
        try:
            await connection.savepoint_commit(sid)
        except DatabaseError:
            try:
                await connection.savepoint_rollback(sid)
                # The savepoint won't be reused: release it.
                await connection.savepoint_commit(sid)
            except Error:
                # Mark for rollback at a higher level; don't shadow the error.
                connection.needs_rollback = True
            raise
        except BaseException:
            # Interrupted: the savepoint's fate is unknown, give up the block.
            connection.needs_rollback = True
            raise
    elif step is Step.COMMIT:
        try:
            await connection.commit()
        except DatabaseError:
            try:
                await connection.rollback()
            except Error:
                # Something went wrong with the connection: drop it.
                await connection.close()
            raise
        except BaseException:
            # Interrupted: the outcome is unknown; run no callback.
            connection.run_on_commit = []
            await _settle(connection)
            raise
    elif step is Step.ROLLBACK_TO:
        assert sid is not None
        try:
            await connection.savepoint_rollback(sid)
            await connection.savepoint_commit(sid)
        except Error:
            connection.needs_rollback = True
        except BaseException:
            connection.needs_rollback = True
            raise
    elif step is Step.ROLLBACK:
        try:
            await connection.rollback()
        except Error:
            await connection.close()
        except BaseException:
            await _settle(connection)
            raise


async def _settle(connection: Any) -> None:
    """End a transaction whose COMMIT or ROLLBACK was interrupted.

    psycopg has already cancelled the statement and let the connection
    settle; roll back if a transaction is still open, and drop the connection
    if even that is interrupted.
    """
    connection.needs_rollback = False
    if not connection.transaction_is_open():
        return
    try:
        await connection.rollback()
    except BaseException:
        await connection.close()
        raise


async def _restore_after_exit(connection: Any) -> None:
    """Restore autocommit (and run on_commit hooks) when the last block ends."""
    if leaving_transaction(connection):
        if connection.closed_in_transaction:
            connection.connection = None
        elif connection.connection is not None:
            await connection.set_autocommit(True)
    elif leaving_manual_transaction(connection):
        if connection.closed_in_transaction:
            connection.connection = None
        else:
            connection.in_atomic_block = False


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
