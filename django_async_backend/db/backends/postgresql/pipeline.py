"""``connection.pipeline()``: psycopg's pipeline mode on the task's connection.

Inside the block, ``cursor.execute()`` queues its statement and returns
without waiting for the server: the statements go out together and their
results come back together, in one round trip, when something needs a
result (a fetch, ``await pipeline.sync()``, COMMIT) or when the block ends.
A statement's error therefore surfaces where psycopg reports it, as
Django's error: at a later ``execute()``, a fetch, ``sync()`` or the end of
the block. The statements after a failed one, up to the next sync, are not
run (PostgreSQL skips them); outside a transaction the statements between
two syncs form one implicit transaction, so a failure undoes the earlier
ones of the batch too.

Django's ORM, run natively, reads each statement's result at once (the
rowcount of an UPDATE decides whether ``save()`` INSERTs): inside the block
each of its statements is synced at once, so the ORM stays correct and
simply gains nothing from the pipeline. A nested ``async_atomic()`` block
that fails rolls back to its savepoint after a sync, so that it recovers as
outside a pipeline.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any

import psycopg

from django_async_backend.db.backends.utils import reraise
from django_async_backend.utils.bridge import in_bridge

if TYPE_CHECKING:
    from django_async_backend.db.backends.postgresql.base import AsyncDatabaseWrapper

__all__ = ["Pipeline"]


class Pipeline:
    """The pipeline block of one wrapper (``connection.pipeline()``)."""

    def __init__(self, db: AsyncDatabaseWrapper) -> None:
        self.db = db
        self._block: AbstractAsyncContextManager[psycopg.AsyncPipeline] | None = None
        self._pipeline: psycopg.AsyncPipeline | None = None

    async def __aenter__(self) -> Pipeline:
        db = self.db
        if self._block is not None:
            raise RuntimeError("This pipeline block is already open.")
        # The connection is in use for the whole block: a pooled one must
        # not go back between its statements (they are one batch).
        db.uses += 1
        try:
            await db.ensure_connection()
            db.validate_no_broken_transaction()
            block = db.connection.pipeline()
            try:
                self._pipeline = await block.__aenter__()
            except psycopg.Error as error:
                reraise(db, error)
        except BaseException:
            self._release()
            raise
        self._block = block
        db.execute_wrappers.append(self._settle)
        return self

    async def sync(self) -> None:
        """Send the queued statements and wait for all their results."""
        pipeline = self._pipeline
        if pipeline is None:
            raise RuntimeError("The pipeline block is not open.")
        self.db.validate_task_sharing()
        try:
            await pipeline.sync()
        except psycopg.Error as error:
            reraise(self.db, error)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        db, block, pipeline = self.db, self._block, self._pipeline
        self._block = self._pipeline = None
        if block is None or pipeline is None:
            return
        try:
            db.execute_wrappers.remove(self._settle)
            connection = db.connection
            if exc is not None and connection is not None and not connection.closed:
                # The block's own error comes first: collect what the queued
                # statements left (the ones skipped after it) quietly, rather
                # than have psycopg log them while it leaves pipeline mode.
                with contextlib.suppress(psycopg.Error):
                    await pipeline.sync()
            try:
                await block.__aexit__(exc_type, exc, tb)
            except psycopg.Error as error:
                reraise(db, error)
        finally:
            self._release()

    def _release(self) -> None:
        db = self.db
        db.uses -= 1
        if not db.uses:
            db.became_unused()

    async def _settle(
        self,
        execute: Callable[..., Any],
        sql: Any,
        params: Any,
        many: bool,
        context: dict[str, Any],
    ) -> Any:
        """An execute wrapper: the syncs that some statements need.

        A rollback to a savepoint (a nested ``async_atomic()`` leaving by an
        error) comes after a sync, or PostgreSQL would skip it with the rest
        of the failed batch; a statement of the native ORM is followed by
        one, since Django reads its result at once.
        """
        pipeline = self._pipeline
        if (
            pipeline is not None
            and isinstance(sql, str)
            and sql.startswith("ROLLBACK TO SAVEPOINT")
        ):
            with contextlib.suppress(psycopg.Error):  # (reported already)
                await pipeline.sync()
        result = execute(sql, params, many, context)
        while inspect.isawaitable(result):
            result = await result
        if in_bridge() and self._pipeline is not None:
            await self.sync()
        return result
