"""A connection's life between uses: the async wrapper's lifecycle rules.

* while its task is not using it (no cursor, no transaction, no ``hold()``),
  a pooled connection may go back to its pool (``unused``, ``became_unused``:
  the backend's pool gives it back when another task waits);
* the part of Django's ``BaseDatabaseWrapper`` that decides whether a
  connection lives on (``close_if_unusable_or_obsolete``,
  CONN_HEALTH_CHECKS, CONN_MAX_AGE), with the same names;
* when its task ends: parked on the event loop for the next task (no I/O,
  :meth:`LifecycleMixin.park`), or closed (a pooled one returned).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from django_async_backend.db.backends.utils import task_bound
from django_async_backend.utils.loops import loop_state

logger = logging.getLogger("django.db.backends.base")


class LifecycleMixin:
    """Connection lifecycle for ``BaseAsyncDatabaseWrapper``."""

    connection: Any
    alias: str
    settings_dict: dict[str, Any]
    autocommit: bool
    in_atomic_block: bool
    errors_occurred: bool
    close_at: float | None
    named_cursors: set[Any]
    health_check_enabled: bool
    health_check_done: bool
    # What uses the connection right now (cursors, hold() blocks, a connect).
    uses: int

    if TYPE_CHECKING:

        async def _close_connection(self) -> None: ...
        async def close(self) -> None: ...
        async def is_usable(self) -> bool: ...
        async def _close_named_cursors(self) -> None: ...
        async def ensure_connection(self) -> None: ...
        def transaction_is_open(self) -> bool: ...

    # ##### Pooled connections go back when another task needs them #####

    def unused(self) -> bool:
        """Tell whether nothing uses the connection now (no cursor, no transaction)."""
        connection = self.connection
        return bool(
            connection is not None
            and not self.uses
            and not self.in_atomic_block
            and self.autocommit
            and connection.autocommit
            and not connection.closed
            and not self.transaction_is_open()
        )

    def became_unused(self) -> None:
        """Hook: the last use of the connection has just ended (a pool's cue)."""

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Keep this task's connection, one session, for the whole block.

        A pooled connection otherwise goes back to its pool whenever the task
        stops using it (outside transactions and cursors): session state
        such as ``SET``, temporary tables, session-level advisory locks or
        ``LISTEN`` needs one session. Plain connections stay with their task
        anyway.
        """
        self.uses += 1
        try:
            await self.ensure_connection()  # (checks the task)
            yield
        finally:
            self.uses -= 1
            if not self.uses:
                self.became_unused()

    # ##### Health checks and persistent connections #####

    @task_bound
    async def close_if_unusable_or_obsolete(self) -> None:
        """Close the connection if errors made it unusable or it is too old.

        Django's ``close_if_unusable_or_obsolete()`` (what its
        ``close_old_connections`` runs around each request), awaited: a
        connection whose autocommit mode was not restored, one that failed
        since its last commit and does not answer, or one past
        ``CONN_MAX_AGE`` is closed (a pooled one returned).
        """
        if self.connection is None:
            return
        self.health_check_done = False
        # If the application didn't restore the original autocommit
        # setting, don't take chances, drop the connection.
        if self.autocommit != self.settings_dict["AUTOCOMMIT"]:
            await self._close_connection()
            return
        # If an exception other than DataError or IntegrityError occurred
        # since the last commit / rollback, check if the connection works.
        if self.errors_occurred:
            if await self.is_usable():
                self.errors_occurred = False
                self.health_check_done = True
            else:
                await self._close_connection()
                return
        if self.close_at is not None and time.monotonic() >= self.close_at:
            await self._close_connection()

    @task_bound
    async def close_if_health_check_failed(self) -> None:
        """Close the connection if it fails a health check (CONN_HEALTH_CHECKS)."""
        if (
            self.connection is None
            or not self.health_check_enabled
            or self.health_check_done
        ):
            return
        if not await self.is_usable():
            await self.close()
        self.health_check_done = True

    def is_reusable(self) -> bool:
        """Tell whether the connection may outlive its task (CONN_MAX_AGE)."""
        return (
            self.connection is not None
            and not self.in_atomic_block
            and not self.errors_occurred
            and self.autocommit == self.settings_dict["AUTOCOMMIT"]
            and self.settings_dict["CONN_MAX_AGE"] != 0
            and (self.close_at is None or time.monotonic() < self.close_at)
            and not self.connection.closed
            and not self.named_cursors  # to close first (I/O): see release()
        )

    def park(self) -> bool:
        """Keep the connection for a later task if CONN_MAX_AGE allows it.

        No I/O: it runs in the done-callback of the task that used it, so the
        very next task on the loop can take it over. Return whether it did.
        """
        if not self.is_reusable():
            return False
        idle = loop_state().idle.setdefault(self.alias, [])
        idle.append((self.connection, self.close_at))
        self.connection = None
        return True

    async def _release(self) -> None:
        """Give the connection up at the end of its task.

        A connection that CONN_MAX_AGE lets live on is parked for the next
        task on this event loop; anything else is closed (or returned to the
        pool). Never raises: this runs after its task is gone.
        """
        try:
            if self.named_cursors and self.connection is not None:
                try:
                    await self._close_named_cursors()
                except Exception:
                    self.errors_occurred = True  # so closed, not reused
            if not self.park():
                await self._close_connection()
        except Exception:  # nobody is left to handle it
            logger.debug("Error releasing connection %r", self.alias, exc_info=True)
            self.connection = None

    release = task_bound(_release, "release")

    async def _adopt_idle_connection(self) -> bool:
        """Take over a connection parked by a finished task, if one is left.

        Parked connections that outlived CONN_MAX_AGE meanwhile are closed.
        """
        idle = loop_state().idle.get(self.alias)
        while idle:
            connection, close_at = idle.pop()
            if close_at is not None and time.monotonic() >= close_at:
                await connection.close()
                continue
            if connection.closed:
                continue
            self.connection, self.close_at = connection, close_at
            self.autocommit = self.settings_dict["AUTOCOMMIT"]
            return True
        return False

    async def _idle_connection_works(self) -> bool:
        """Check a parked connection before reuse (CONN_HEALTH_CHECKS)."""
        return not self.health_check_enabled or await self.is_usable()
