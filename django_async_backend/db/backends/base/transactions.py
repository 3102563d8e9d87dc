"""Transaction state and primitives of the async wrapper.

This is the part of Django's ``BaseDatabaseWrapper`` that manages
transactions, with the same attribute names and algorithm; only the methods
that send SQL are coroutines. Django's pure helpers (``get_rollback``,
``set_rollback``, ``validate_no_atomic_block``,
``validate_no_broken_transaction``, ``clean_savepoints``) are used as they are.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any, cast

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import debug_transaction
from django.db.transaction import TransactionManagementError

logger = logging.getLogger("django.db.backends.base")

_django = cast(Any, BaseDatabaseWrapper)

# (ids of the savepoints active at registration, callback, robust)
CommitHook = tuple[set[str], Callable[[], Any], bool]


class TransactionMixin:
    """Transaction management for ``BaseAsyncDatabaseWrapper``."""

    connection: Any
    features: Any
    ops: Any
    alias: str
    settings_dict: dict[str, Any]
    errors_occurred: bool

    get_rollback = _django.get_rollback
    set_rollback = _django.set_rollback
    validate_no_atomic_block = _django.validate_no_atomic_block
    validate_no_broken_transaction = _django.validate_no_broken_transaction

    def init_transaction_state(self) -> None:
        # Tracks if the connection is in autocommit mode. Per PEP 249, by
        # default, it isn't.
        self.autocommit = False
        # Increment to generate unique savepoint ids.
        self.savepoint_state = 0
        # Tracks if the outermost 'atomic' block should commit on exit,
        # ie. if autocommit was active on entry.
        self.commit_on_exit = True
        # Callbacks to run when the transaction commits, in order.
        self.run_on_commit: list[CommitHook] = []
        # Should we run the on-commit hooks the next time set_autocommit(True)
        # is called?
        self.run_commit_hooks_on_set_autocommit_on = False
        self.rollback_exc: BaseException | None = None
        # Undoes the outermost block's mark in the context (atomic_aliases).
        self.atomic_token: Any = None
        self.reset_transaction_state()

    def reset_transaction_state(self) -> None:
        """Forget any atomic block (a new connection starts outside them)."""
        # Tracks if the connection is in a transaction managed by 'atomic'.
        self.in_atomic_block = False
        # List of savepoints created by 'atomic' (None: no savepoint).
        self.savepoint_ids: list[str | None] = []
        # Stack of active 'atomic' blocks.
        self.atomic_blocks: list[Any] = []
        # Tracks if the transaction should be rolled back to the next
        # available savepoint because of an exception in an inner block.
        self.needs_rollback = False

    # Implemented by the wrapper.
    async def ensure_connection(self) -> None:
        raise NotImplementedError

    async def close_if_health_check_failed(self) -> None:
        raise NotImplementedError

    def validate_task_sharing(self) -> None:
        raise NotImplementedError

    # ##### Backend-specific hooks #####

    async def _commit(self) -> None:
        if self.connection is not None:
            with debug_transaction(self, "COMMIT"), self.wrap_database_errors:
                await self.connection.commit()

    async def _rollback(self) -> None:
        if self.connection is not None:
            with debug_transaction(self, "ROLLBACK"), self.wrap_database_errors:
                await self.connection.rollback()

    async def _set_autocommit(self, autocommit: bool) -> None:
        raise NotImplementedError

    async def _execute_control(self, sql: str) -> None:
        """Run a savepoint statement; like Django, through a (logged) cursor."""
        async with self.cursor() as cursor:
            await cursor.execute(sql)

    def cursor(self) -> Any:
        raise NotImplementedError

    def transaction_is_open(self) -> bool:
        """Tell whether the server session is inside a transaction."""
        raise NotImplementedError

    async def _savepoint(self, sid: str) -> None:
        await self._execute_control(self.ops.savepoint_create_sql(sid))

    async def _savepoint_rollback(self, sid: str) -> None:
        await self._execute_control(self.ops.savepoint_rollback_sql(sid))

    async def _savepoint_commit(self, sid: str) -> None:
        await self._execute_control(self.ops.savepoint_commit_sql(sid))

    wrap_database_errors: Any  # set by the wrapper

    # ##### Generic transaction management methods #####

    async def get_autocommit(self) -> bool:
        """Get the autocommit state."""
        await self.ensure_connection()
        return self.autocommit

    async def set_autocommit(
        self,
        autocommit: bool,
        force_begin_transaction_with_broken_autocommit: bool = False,
    ) -> None:
        """Enable or disable autocommit (disabling it begins a transaction)."""
        self.validate_no_atomic_block()
        await self.close_if_health_check_failed()
        await self.ensure_connection()
        try:
            if autocommit:
                await self._set_autocommit(autocommit)
            else:
                with debug_transaction(self, "BEGIN"):
                    await self._set_autocommit(autocommit)
        except BaseException:
            # psycopg can be cancelled after it switched (it yields to the
            # loop once done): keep the flag in step with the driver, so that
            # a connection is never parked or reused in the wrong mode.
            if self.connection is not None:
                self.autocommit = bool(self.connection.autocommit)
            raise
        self.autocommit = autocommit
        if autocommit and self.run_commit_hooks_on_set_autocommit_on:
            self.run_commit_hooks_on_set_autocommit_on = False
            await self.run_and_clear_commit_hooks()

    async def commit(self) -> None:
        """Commit a transaction and reset the dirty flag."""
        self.validate_task_sharing()
        self.validate_no_atomic_block()
        await self._commit()
        # A successful commit means that the database connection works.
        self.errors_occurred = False
        self.run_commit_hooks_on_set_autocommit_on = True

    async def rollback(self) -> None:
        """Roll back a transaction and reset the dirty flag."""
        self.validate_task_sharing()
        self.validate_no_atomic_block()
        await self._rollback()
        # A successful rollback means that the database connection works.
        self.errors_occurred = False
        self.needs_rollback = False
        self.run_on_commit = []

    def clean_savepoints(self) -> None:
        """Reset the counter used to generate unique savepoint ids."""
        self.savepoint_state = 0

    def _savepoint_allowed(self) -> bool:
        # Savepoints make sense only inside a transaction.
        return bool(self.features.uses_savepoints) and not self.autocommit

    def next_savepoint_id(self) -> str:
        """Return a new savepoint name, unique on this connection."""
        self.savepoint_state += 1
        return f"s_async_x{self.savepoint_state}"

    async def savepoint(self) -> str | None:
        """Create a savepoint inside the current transaction; return its ID.

        Return None if savepoints are not supported or in autocommit mode.
        """
        await self.ensure_connection()
        if not self._savepoint_allowed():
            return None
        sid = self.next_savepoint_id()
        self.validate_task_sharing()
        await self._savepoint(sid)
        return sid

    async def savepoint_rollback(self, sid: str) -> None:
        """Roll back to a savepoint; drop the on_commit hooks registered since."""
        if not self._savepoint_allowed():
            return
        self.validate_task_sharing()
        await self._savepoint_rollback(sid)
        self.run_on_commit = [hook for hook in self.run_on_commit if sid not in hook[0]]

    async def savepoint_commit(self, sid: str) -> None:
        """Release a savepoint."""
        if not self._savepoint_allowed():
            return
        self.validate_task_sharing()
        await self._savepoint_commit(sid)

    # ##### on_commit hooks #####

    async def on_commit(self, func: Callable[[], Any], robust: bool = False) -> None:
        """Run ``func`` (sync or async) once the current transaction commits.

        Outside a transaction it runs at once. A rollback drops it; a savepoint
        rollback drops the callbacks registered inside that savepoint.
        """
        if not callable(func):
            raise TypeError("on_commit()'s callback must be a callable.")
        if self.in_atomic_block:
            # Transaction in progress; save for execution on commit.
            self.run_on_commit.append(
                ({sid for sid in self.savepoint_ids if sid}, func, robust)
            )
        elif not await self.get_autocommit():
            raise TransactionManagementError(
                "on_commit() cannot be used in manual transaction management"
            )
        else:
            # No transaction in progress and in autocommit mode: run it now.
            await run_commit_hook(func, robust)

    async def run_and_clear_commit_hooks(self) -> None:
        """Run the registered on_commit callbacks in registration order."""
        self.validate_no_atomic_block()
        current_run_on_commit = self.run_on_commit
        self.run_on_commit = []
        while current_run_on_commit:
            _, func, robust = current_run_on_commit.pop(0)
            await run_commit_hook(func, robust, during=" during transaction")


async def run_commit_hook(
    func: Callable[[], Any], robust: bool, during: str = ""
) -> None:
    """Call an on_commit callback, awaiting it if async; log it if robust."""
    try:
        result = func()
        if inspect.isawaitable(result):
            await result
    except Exception as exc:
        if not robust:
            raise
        name = getattr(func, "__qualname__", func)
        logger.error(
            "Error calling %s in on_commit()%s (%s).", name, during, exc, exc_info=True
        )
