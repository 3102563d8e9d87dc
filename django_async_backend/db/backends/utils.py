"""Async cursor wrappers: the twins of ``django.db.backends.utils``.

``AsyncCursorWrapper`` maps driver errors to Django's, refuses to run in a
broken transaction or from a task that does not own the connection, and runs
``execute``/``executemany`` through the connection's ``execute_wrappers``
(sync or async). ``AsyncCursorDebugWrapper`` records queries in
``connection.queries`` and the ``django.db.backends`` logger with Django's
own ``debug_sql``. :func:`task_bound` marks the wrapper's entry points.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

from asgiref.sync import markcoroutinefunction
from django.db.backends.utils import CursorDebugWrapper

from django_async_backend.utils.compat import running_loop, task_of

if TYPE_CHECKING:
    from django_async_backend.db.backends.base.base import BaseAsyncDatabaseWrapper
    from django_async_backend.db.backends.postgresql.copy import Copy

Params = Sequence[Any] | dict[str, Any] | None
F = TypeVar("F", bound=Callable[..., Any])


def task_bound(method: F, name: str | None = None) -> F:
    """Make ``method`` an entry point of the wrapper: its owner task only.

    The check (``validate_task_sharing``) runs when the method is called,
    before the coroutine it returns does anything, so that no other task
    ever opens, drives or closes the connection. ``name``: the entry point's
    name, when ``method`` is its private twin (see the wrapper).
    """

    @functools.wraps(method)
    def checked(self: Any, /, *args: Any, **kwargs: Any) -> Any:
        owner = self.owner
        if owner is None or owner is not task_of(running_loop()):
            self.validate_task_sharing()
        return method(self, *args, **kwargs)

    if name is not None:
        checked.__name__ = name
        checked.__qualname__ = f"{method.__qualname__.rpartition('.')[0]}.{name}"
    if inspect.iscoroutinefunction(method):
        markcoroutinefunction(checked)
    checked.task_bound = True  # type: ignore[attr-defined]
    return cast(F, checked)


def reraise(db: Any, error: BaseException) -> NoReturn:
    """Raise a driver error as Django's (``db.wrap_database_errors``), chained.

    Called from an ``except`` clause: the same mapping as ``with
    db.wrap_database_errors:``, without its cost on the path that does not
    fail.
    """
    db.wrap_database_errors.__exit__(type(error), error, error.__traceback__)
    raise error


class AsyncCursorWrapper:
    """A database cursor for async code; use it with ``async with``.

    ``async with connection.cursor() as cursor:`` opens it and closes it at
    the end of the block. ``await connection.cursor()`` opens it too (the
    spelling of other async backends: ``async with await
    connection.cursor() as cursor:`` works, and so does a cursor awaited and
    closed by hand with ``await cursor.close()``).
    """

    def __init__(self, db: BaseAsyncDatabaseWrapper, name: str | None = None) -> None:
        self.db = db
        self.name = name
        # The driver cursor, opened by __aenter__.
        self.cursor: Any = None
        self._closed = False

    async def __aenter__(self) -> AsyncCursorWrapper:
        if self.cursor is None:  # (not when opened by `await` already)
            self.cursor = await self.db.open_cursor(self.name)
        return self

    def __await__(self) -> Generator[Any, None, AsyncCursorWrapper]:
        return self.__aenter__().__await__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Errors while closing are not useful to the caller (#17671).
        with contextlib.suppress(self.db.Database.Error):
            await self.close()

    def _require_open(self) -> Any:
        """The driver cursor, if open and driven by the connection's owner."""
        cursor = self.cursor
        if cursor is None or self.db.owner is not task_of(running_loop()):
            self.db.validate_task_sharing()
            if cursor is None:
                raise RuntimeError(
                    "This cursor is not open: use `async with "
                    "connection.cursor() as cursor:` before executing queries."
                )
        return cursor

    @property
    def rowcount(self) -> int:
        return int(self._require_open().rowcount)

    @property
    def description(self) -> Any:
        return self._require_open().description

    @property
    def closed(self) -> bool:
        return self.cursor is None or self._closed or bool(self.cursor.closed)

    async def close(self) -> None:
        """Close the cursor; from a task that does not own it, later.

        An async generator's finalizer (after a ``break`` out of
        ``async for``) closes its cursor from a task of its own: the
        connection's owner closes it instead, at its next use or when it
        releases the connection, so that two tasks never drive one.
        """
        cursor = self.cursor
        if cursor is None or self._closed:
            return
        self._closed = True
        db = self.db
        if db.owner is not task_of(running_loop()) and not db.owned_by_current_task():
            db.close_cursor_later(cursor)
            return
        db.cursor_closed(cursor)
        try:
            await cursor.close()
        except self.db.Database.Error as error:
            reraise(self.db, error)

    async def execute(self, sql: Any, params: Params = None) -> AsyncCursorWrapper:
        db = self.db
        if db.execute_wrappers:
            await self._execute_with_wrappers(sql, params, False, self._execute)
            return self
        # The usual case, without wrappers: _execute() inlined (it is hot).
        cursor = self.cursor
        if cursor is None or db.owner is not task_of(running_loop()):
            cursor = self._require_open()
        db.validate_no_broken_transaction()
        try:
            if params is None:
                await cursor.execute(sql)
            else:
                await cursor.execute(sql, params)
        except db.Database.Error as error:
            reraise(db, error)
        return self

    async def executemany(
        self, sql: Any, param_list: Sequence[Params]
    ) -> AsyncCursorWrapper:
        await self._execute_with_wrappers(sql, param_list, True, self._executemany)
        return self

    async def _execute_with_wrappers(
        self, sql: Any, params: Any, many: bool, executor: Any
    ) -> Any:
        if not self.db.execute_wrappers:
            return await executor(sql, params, many)
        context = {"connection": self.db, "cursor": self}
        for wrapper in reversed(self.db.execute_wrappers):
            executor = functools.partial(wrapper, executor)
        result = executor(sql, params, many, context)
        # A sync wrapper hands back the coroutine of the next layer.
        while inspect.isawaitable(result):
            result = await result
        return result

    async def _execute(self, sql: Any, params: Params, *ignored: Any) -> None:
        cursor = self._require_open()
        self.db.validate_no_broken_transaction()
        try:
            if params is None:
                await cursor.execute(sql)
            else:
                await cursor.execute(sql, params)
        except self.db.Database.Error as error:
            reraise(self.db, error)

    async def _executemany(
        self, sql: Any, param_list: Sequence[Params], *ignored: Any
    ) -> None:
        cursor = self._require_open()
        self.db.validate_no_broken_transaction()
        try:
            await cursor.executemany(sql, param_list)
        except self.db.Database.Error as error:
            reraise(self.db, error)

    async def fetchone(self) -> Any:
        cursor = self.cursor
        if cursor is None or self.db.owner is not task_of(running_loop()):
            cursor = self._require_open()
        try:
            return await cursor.fetchone()
        except self.db.Database.Error as error:
            reraise(self.db, error)

    async def fetchmany(self, size: int = 0) -> list[Any]:
        try:
            return cast(list[Any], await self._require_open().fetchmany(size))
        except self.db.Database.Error as error:
            reraise(self.db, error)

    async def fetchall(self) -> list[Any]:
        try:
            return cast(list[Any], await self._require_open().fetchall())
        except self.db.Database.Error as error:
            reraise(self.db, error)

    async def __aiter__(self) -> AsyncIterator[Any]:
        cursor = self._require_open()
        validate = self.db.validate_task_sharing
        with self.db.wrap_database_errors:
            async for row in cursor:
                yield row
                validate()  # the iterator may have been handed to another task

    def copy(self, sql: Any, params: Params = None) -> Copy:
        """COPY: ``async with cursor.copy("COPY t FROM STDIN") as copy:``.

        See db/backends/postgresql/copy.py and docs/copy.md.
        """
        from django_async_backend.db.backends.postgresql.copy import Copy

        return Copy(self, sql, params)


class AsyncCursorDebugWrapper(AsyncCursorWrapper):
    """Record each query in ``connection.queries`` and the SQL logger."""

    # Django's context manager: times the block, logs and appends to
    # connection.queries_log. It only reads self.db and self.cursor.
    debug_sql = cast(Any, CursorDebugWrapper).debug_sql

    async def execute(self, sql: Any, params: Params = None) -> AsyncCursorWrapper:
        with self.debug_sql(sql, params, use_last_executed_query=True):
            return await super().execute(sql, params)

    async def executemany(
        self, sql: Any, param_list: Sequence[Params]
    ) -> AsyncCursorWrapper:
        with self.debug_sql(sql, param_list, many=True):
            return await super().executemany(sql, param_list)
