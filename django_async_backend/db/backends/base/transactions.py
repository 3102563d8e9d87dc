"""Transaction state and primitives of the async wrapper.

This is the part of Django's ``BaseDatabaseWrapper`` that manages
transactions, with the same attribute names and algorithm; only the methods
that send SQL are coroutines. Django's pure helpers (``get_rollback``,
``set_rollback``, ``validate_no_atomic_block``,
``validate_no_broken_transaction``, ``clean_savepoints``) are used as they are.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

from django.db import DatabaseError
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import debug_transaction
from django.db.transaction import TransactionManagementError

from django_async_backend.db.backends.base.commit_hooks import (
    run_commit_hook,
    validate_callback,
)
from django_async_backend.db.backends.utils import reraise, task_bound
from django_async_backend.utils.cancellation import RunToEnd

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
    health_check_enabled: bool
    health_check_done: bool

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
        # Undoes the outermost block's mark in the context (see
        # db.backends.base.atomic.held_aliases).
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

    async def close(self) -> None:
        raise NotImplementedError

    async def _ensure_connection(self) -> None:
        raise NotImplementedError

    uses: int

    def became_unused(self) -> None:
        raise NotImplementedError

    # ##### Backend-specific hooks #####

    async def _commit(self) -> None:
        if self.connection is not None:
            await self._send("COMMIT", self.connection.commit)

    async def _rollback(self) -> None:
        if self.connection is not None:
            await self._send("ROLLBACK", self.connection.rollback)

    async def _send(self, sql: str, operation: Callable[[], Awaitable[Any]]) -> None:
        """Run a driver call, logged as ``sql`` when queries are logged."""
        try:
            if self.queries_logged:
                with debug_transaction(self, sql):
                    await operation()
            else:
                await operation()
        except self.Database.Error as error:
            reraise(self, error)

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
    Database: Any
    queries_logged: bool

    # ##### Transaction-control statements #####

    # Seconds a transaction-control statement already sent may take to finish
    # after the task was cancelled; then the connection is closed.
    cancel_grace = 5.0

    def _control(
        self, operation: Coroutine[Any, Any, Any], statement: str
    ) -> Awaitable[asyncio.CancelledError | None]:
        """Run a transaction-control statement to its end, whatever happens.

        The one place that decides what an interrupted COMMIT, ROLLBACK or
        SAVEPOINT leaves behind, for ``async_atomic`` and for Django's
        ``Atomic`` run natively alike (the autocommit switch, which sends no
        statement, settles its own case in ``_switch_autocommit``):

        * a cancellation that arrives while the statement runs is deferred
          until it has finished, so that its outcome is known; awaiting
          returns it, for the caller to record the outcome and then raise it;
        * a statement that does not finish within ``cancel_grace`` seconds of
          the cancellation is given up (:meth:`_give_up`).
        """
        return RunToEnd(operation, self.cancel_grace, self._give_up, statement)

    async def _give_up(self, statement: str, cancelled: BaseException) -> None:
        """Close the connection under a statement that does not finish."""
        if self.connection is not None:
            await self.connection.close()
        await self.close()
        outcome = (
            "the transaction's outcome is unknown (it may have committed), "
            "and its on_commit callbacks were not run"
            if statement == "COMMIT"
            else "the server rolls the transaction back"
        )
        message = (
            f"{statement} on {self.alias!r} did not finish within "
            f"{self.cancel_grace:g} s of the task's cancellation: the "
            f"connection was closed, so {outcome}."
        )
        logger.warning(message)
        cancelled.add_note(message)

    def _lost_during(self, statement: str, error: BaseException) -> None:
        """Say so when the connection broke during a COMMIT (outcome unknown)."""
        if self.connection is not None and not self.connection.closed:
            return
        message = (
            f"The connection to {self.alias!r} broke during {statement}: the "
            "transaction's outcome is unknown (it may have committed), and its "
            "on_commit callbacks were not run."
        )
        logger.warning(message)
        error.add_note(message)

    # ##### Generic transaction management methods #####

    @task_bound
    async def get_autocommit(self) -> bool:
        """Get the autocommit state."""
        if self.connection is None or self.connection.closed:
            await self.ensure_connection()
        return self.autocommit

    @task_bound
    async def set_autocommit(
        self,
        autocommit: bool,
        force_begin_transaction_with_broken_autocommit: bool = False,
    ) -> None:
        """Enable or disable autocommit (disabling it begins a transaction).

        Turning it back on runs the on_commit callbacks of a transaction that
        has just committed, even when the task was cancelled meanwhile (the
        cancellation propagates afterwards).
        """
        self.validate_no_atomic_block()
        if self.connection is None and autocommit == self.settings_dict["AUTOCOMMIT"]:
            # A new connection starts in that mode; don't open one for it.
            self.autocommit = autocommit
            return
        if self.health_check_enabled and not self.health_check_done:
            await self.close_if_health_check_failed()
        if self.connection is None or self.connection.closed:
            await self._ensure_connection()
        await self._switch_autocommit(autocommit)

    async def _switch_autocommit(self, autocommit: bool) -> None:
        cancelled = None
        if self.connection.autocommit != autocommit:  # not for a pool checkout
            try:
                if autocommit or not self.queries_logged:
                    await self._set_autocommit(autocommit)
                else:
                    with debug_transaction(self, "BEGIN"):
                        await self._set_autocommit(autocommit)
            except asyncio.CancelledError as exc:
                # The switch sends nothing to the server: psycopg makes it,
                # then may yield to the loop, where the cancellation lands.
                # Once made, record it (and run the callbacks below) first.
                connection = self.connection
                if connection is None or connection.autocommit != autocommit:
                    raise
                cancelled = exc
        self.autocommit = autocommit
        if autocommit:
            if self.run_commit_hooks_on_set_autocommit_on:
                self.run_commit_hooks_on_set_autocommit_on = False
                await self._run_and_clear_commit_hooks()
            if not self.uses:
                self.became_unused()  # a transaction has ended
        if cancelled is not None:
            raise cancelled

    @task_bound
    async def commit(self) -> None:
        """Commit a transaction and reset the dirty flag."""
        self.validate_no_atomic_block()
        try:
            cancelled = await self._control(self._commit(), "COMMIT")
        except DatabaseError as error:
            self._lost_during("COMMIT", error)
            raise
        # A successful commit means that the database connection works.
        self.errors_occurred = False
        self.run_commit_hooks_on_set_autocommit_on = True
        if cancelled is not None:
            raise cancelled

    @task_bound
    async def rollback(self) -> None:
        """Roll back a transaction and reset the dirty flag."""
        self.validate_no_atomic_block()
        cancelled = await self._control(self._rollback(), "ROLLBACK")
        # A successful rollback means that the database connection works.
        self.errors_occurred = False
        self.needs_rollback = False
        self.run_on_commit = []
        if cancelled is not None:
            raise cancelled

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

    @task_bound
    async def savepoint(self) -> str | None:
        """Create a savepoint inside the current transaction; return its ID.

        Return None if savepoints are not supported or in autocommit mode.
        """
        if self.connection is None or self.connection.closed:
            await self.ensure_connection()
        if not self._savepoint_allowed():
            return None
        sid = self.next_savepoint_id()
        cancelled = await self._control(self._savepoint(sid), "SAVEPOINT")
        if cancelled is not None:
            # The savepoint exists, unused: it ends with the transaction.
            raise cancelled
        return sid

    @task_bound
    async def savepoint_rollback(self, sid: str) -> None:
        """Roll back to a savepoint; drop the on_commit hooks registered since."""
        if not self._savepoint_allowed():
            return
        cancelled = await self._control(
            self._savepoint_rollback(sid), "ROLLBACK TO SAVEPOINT"
        )
        self.run_on_commit = [hook for hook in self.run_on_commit if sid not in hook[0]]
        if cancelled is not None:
            raise cancelled

    @task_bound
    async def savepoint_commit(self, sid: str) -> None:
        """Release a savepoint."""
        if not self._savepoint_allowed():
            return
        cancelled = await self._control(
            self._savepoint_commit(sid), "RELEASE SAVEPOINT"
        )
        if cancelled is not None:
            raise cancelled

    # ##### on_commit hooks #####

    @task_bound
    async def on_commit(self, func: Callable[[], Any], robust: bool = False) -> None:
        """Run ``func`` (sync or async) once the current transaction commits.

        Outside a transaction it runs at once. A rollback drops it; a savepoint
        rollback drops the callbacks registered inside that savepoint.
        """
        validate_callback(func)
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

    @task_bound
    async def run_and_clear_commit_hooks(self) -> None:
        """Run the registered on_commit callbacks in registration order.

        A cancellation of the task while they run is delivered to the
        callback that is running, as to any code; the other callbacks are
        still called (the transaction did commit), then it propagates.
        """
        await self._run_and_clear_commit_hooks()

    async def _run_and_clear_commit_hooks(self) -> None:
        self.validate_no_atomic_block()
        current_run_on_commit = self.run_on_commit
        self.run_on_commit = []
        cancelled: asyncio.CancelledError | None = None
        while current_run_on_commit:
            _, func, robust = current_run_on_commit.pop(0)
            try:
                await run_commit_hook(func, robust, during=" during transaction")
            except asyncio.CancelledError as exc:
                cancelled = cancelled or exc
        if cancelled is not None:
            raise cancelled
