"""``async with cursor.copy(sql) as copy:``, PostgreSQL's COPY on the task's cursor.

``COPY ... FROM STDIN`` takes rows with ``await copy.write_row(row)`` (or
raw data with ``write()``); ``COPY ... TO STDOUT`` gives them with ``async
for row in copy.rows()`` (or ``read_row()``, ``read()``). It runs on the
cursor's connection, so inside ``async_atomic()`` it is part of the
transaction. Driver errors become Django's (a bad row: ``DataError`` with
PostgreSQL's message, usually when the block ends, since the server
reports it once it has read the row), and the statement is recorded in
``connection.queries`` when queries are logged, timed over the whole block.

Leaving a ``COPY ... TO STDOUT`` block early reads and drops the rest of
the data, so the connection (and its transaction) is usable after it; an
exception or a cancellation leaving it makes psycopg cancel the statement
instead, and a ``COPY ... FROM STDIN`` left by an exception is aborted by
the server: nothing of it is stored.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

import psycopg
from django.db.backends.utils import CursorDebugWrapper
from psycopg import pq

from django_async_backend.db.backends.utils import reraise
from django_async_backend.utils.compat import running_loop, task_of

if TYPE_CHECKING:
    from django_async_backend.db.backends.utils import AsyncCursorWrapper, Params

__all__ = ["Copy"]

COPY_IN, COPY_OUT = pq.ExecStatus.COPY_IN, pq.ExecStatus.COPY_OUT
ACTIVE = pq.TransactionStatus.ACTIVE
# Django's context manager: times the block, logs it, appends it to
# connection.queries. It reads only ``.db`` and ``.cursor`` of its argument.
debug_sql = cast(Any, CursorDebugWrapper).debug_sql


class Copy:
    """One COPY statement on a cursor wrapper, for the duration of a block."""

    def __init__(self, cursor: AsyncCursorWrapper, sql: Any, params: Params) -> None:
        self.cursor = cursor
        self.db = cursor.db
        self.sql, self.params = sql, params
        self._block: AbstractAsyncContextManager[psycopg.AsyncCopy] | None = None
        self._copy: psycopg.AsyncCopy | None = None
        self._logged: contextlib.ExitStack | None = None

    async def __aenter__(self) -> Copy:
        if self._block is not None:
            raise RuntimeError("This COPY block is already open.")
        db = self.db
        driver_cursor = self.cursor._require_open()  # (checks the task)
        db.validate_no_broken_transaction()
        logged = contextlib.ExitStack()
        if db.queries_logged:
            logged.enter_context(self._debug_sql())
        block = driver_cursor.copy(self.sql, self.params)
        try:
            self._copy = await block.__aenter__()
        except BaseException as error:
            logged.close()
            await _end_interrupted(driver_cursor, error)
            if isinstance(error, psycopg.Error):
                reraise(db, error)
            raise
        self._block, self._logged = block, logged
        return self

    def _debug_sql(self) -> AbstractContextManager[None]:
        return cast(
            AbstractContextManager[None], debug_sql(self.cursor, self.sql, self.params)
        )

    def _open(self) -> psycopg.AsyncCopy:
        copy = self._copy
        if copy is None or self.db.owner is not task_of(running_loop()):
            self.db.validate_task_sharing()
            if copy is None:
                raise RuntimeError(
                    "This COPY is not open: use `async with cursor.copy(sql) as "
                    "copy:` and write or read inside the block."
                )
        return copy

    # ##### COPY ... FROM STDIN #####

    async def write_row(self, row: Sequence[Any]) -> None:
        """Send one row (a sequence of Python values)."""
        copy = self._open()
        try:
            await copy.write_row(row)
        except psycopg.Error as error:
            reraise(self.db, error)

    async def write(self, data: bytes | bytearray | memoryview | str) -> None:
        """Send data already in the COPY format (text, CSV or binary)."""
        copy = self._open()
        try:
            await copy.write(data)
        except psycopg.Error as error:
            reraise(self.db, error)

    # ##### COPY ... TO STDOUT #####

    def set_types(self, types: Sequence[int | str]) -> None:
        """Parse the columns as these types (names or oids), not as text."""
        self._open().set_types(types)

    async def read_row(self) -> tuple[Any, ...] | None:
        """Return the next row (a tuple of str unless set_types()), or None."""
        copy = self._open()
        try:
            return await copy.read_row()
        except psycopg.Error as error:
            reraise(self.db, error)

    async def rows(self) -> AsyncIterator[tuple[Any, ...]]:
        """Yield the rows, one by one, until the data ends."""
        while (row := await self.read_row()) is not None:
            yield row

    async def read(self) -> memoryview:
        """Return the next block of raw data; an empty one at the end."""
        copy = self._open()
        try:
            return memoryview(await copy.read())
        except psycopg.Error as error:
            reraise(self.db, error)

    # ##### The end #####

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        block, copy, logged = self._block, self._copy, self._logged
        self._block = self._copy = self._logged = None
        if block is None or copy is None or logged is None:
            return
        drained: BaseException | None = None
        with logged:
            if exc is None and self._copying_out():
                try:
                    # Read the rest: the connection is usable only after it.
                    while await copy.read():
                        pass
                except BaseException as error:
                    drained = error
                    exc_type, exc, tb = type(error), error, error.__traceback__
            try:
                await block.__aexit__(exc_type, exc, tb)
            except psycopg.Error as error:
                reraise(self.db, error)
            if drained is not None:  # (the block's own error propagates anyway)
                if isinstance(drained, psycopg.Error):
                    reraise(self.db, drained)
                raise drained

    def _copying_out(self) -> bool:
        result = self.cursor.cursor.pgresult
        return result is not None and result.status == COPY_OUT


async def _end_interrupted(
    cursor: psycopg.AsyncCursor[Any], error: BaseException
) -> None:
    """End a COPY that a cancellation interrupted while it started.

    psycopg lets the statement finish starting, then raises the
    cancellation without ending the COPY: the connection would stay busy
    ("another command is already in progress"). Ending it as psycopg ends
    an interrupted COPY (an abort sent, or the data drained) makes it usable.
    """
    connection, result = cursor.connection, cursor.pgresult
    if (
        connection.closed
        or connection.pgconn.transaction_status != ACTIVE
        or result is None
        or result.status not in (COPY_IN, COPY_OUT)
    ):
        return
    with contextlib.suppress(Exception):
        await psycopg.AsyncCopy(cursor).finish(error)
