"""The async twin of ``django.db.backends.base.base.BaseDatabaseWrapper``.

The wrapper keeps Django's names and state (``in_atomic_block``,
``savepoint_ids``, ``needs_rollback``, ``run_on_commit`` …) so that Django's
intuition carries over; every method that talks to the server is a coroutine.
Backends override the same small hooks as in Django (``get_new_connection``,
``create_cursor``, ``_commit``, ``_rollback``, ``_savepoint``, ``_close``,
``_set_autocommit``, ``is_usable``).

Pure helpers that do no I/O (query log, time zone, error wrapping, rollback
flags) are Django's own, taken from ``BaseDatabaseWrapper`` unchanged.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from django.db import DEFAULT_DB_ALIAS, ProgrammingError
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created
from django.db.utils import DatabaseErrorWrapper
from django.utils.functional import cached_property

from django_async_backend.db.backends.base.lifecycle import LifecycleMixin
from django_async_backend.db.backends.base.transactions import TransactionMixin
from django_async_backend.db.backends.utils import (
    AsyncCursorDebugWrapper,
    AsyncCursorWrapper,
    reraise,
    task_bound,
)
from django_async_backend.utils import compat
from django_async_backend.utils.compat import running_loop, task_of
from django_async_backend.utils.loops import loop_state

_django = cast(Any, BaseDatabaseWrapper)

# Receivers of ``connection_created`` that run sync I/O on the *sync*
# connection; the async wrapper does their work natively instead.
SKIPPED_RECEIVERS = {"django.contrib.postgres.signals.register_type_handlers"}


class BaseAsyncDatabaseWrapper(LifecycleMixin, TransactionMixin):
    """Represent one async database connection, driven by one task."""

    vendor = "unknown"
    display_name = "unknown"
    Database: Any = None
    ops_class: Any = None
    features_class: Any = None
    queries_limit = 9000

    # The state every wrapper has, in slots: a wrapper is made per task and
    # alias (per independent_connection() block), and its hot attributes are
    # read at every query. (More than 30 attributes in an instance __dict__
    # lose CPython's shared-key layout, which makes each wrapper's creation
    # and each attribute access slower.) A __dict__ remains, for Django's
    # cached properties and the rest.
    __slots__ = (
        "_named_cursor_idx",
        "alias",
        "atomic_blocks",
        "atomic_token",
        "autocommit",
        "close_at",
        "closed_in_transaction",
        "commit_on_exit",
        "connection",
        "cursors_to_close",
        "errors_occurred",
        "execute_wrappers",
        "features",
        "force_debug_cursor",
        "health_check_done",
        "health_check_enabled",
        "in_atomic_block",
        "named_cursors",
        "needs_rollback",
        "ops",
        "owner",
        "queries_log",
        "rollback_exc",
        "run_commit_hooks_on_set_autocommit_on",
        "run_on_commit",
        "savepoint_ids",
        "savepoint_state",
        "settings_dict",
        "uses",
    )

    # Django's own pure helpers: the query log, time zone and error mapping.
    queries_logged = _django.queries_logged
    queries = _django.queries
    timezone = _django.timezone
    timezone_name = _django.timezone_name
    execute_wrapper = _django.execute_wrapper
    check_settings = _django.check_settings
    __repr__ = _django.__repr__

    def __init__(
        self, settings_dict: dict[str, Any], alias: str = DEFAULT_DB_ALIAS
    ) -> None:
        # The underlying driver connection (a psycopg AsyncConnection).
        self.connection: Any = None
        self.settings_dict = settings_dict
        self.alias = alias
        # Query logging in debug mode or when explicitly enabled.
        self.queries_log: deque[dict[str, Any]] = deque(maxlen=self.queries_limit)
        self.force_debug_cursor = False
        # The task allowed to drive this connection (see validate_task_sharing).
        self.owner: asyncio.Task[Any] | None = None
        self.init_transaction_state()
        # Connection termination related attributes.
        self.close_at: float | None = None
        self.closed_in_transaction = False
        self.errors_occurred = False
        self.health_check_enabled = False
        self.health_check_done = False
        # Wrappers around execute()/executemany(), sync or async callables
        # taking (execute, sql, params, many, context).
        self.execute_wrappers: list[Callable[..., Any]] = []
        self._named_cursor_idx = 0
        # Server-side cursors open on the connection, and those of them that
        # a task other than the owner closed (the owner closes them later).
        self.named_cursors: set[Any] = set()
        self.cursors_to_close: list[Any] = []
        # What uses the connection right now (open cursors, hold() blocks, a
        # connect in progress): a pooled one may go back when nothing does.
        self.uses = 0
        self.features = self.features_class(self)
        self.ops = self.ops_class(self)

    @cached_property
    def wrap_database_errors(self) -> DatabaseErrorWrapper:
        """Map driver exceptions to ``django.db`` ones, original chained."""
        return DatabaseErrorWrapper(self)

    # ##### Hooks for backends #####

    def get_connection_params(self) -> dict[str, Any]:
        raise NotImplementedError

    def new_connection_params(self) -> dict[str, Any]:
        """What ``get_new_connection`` needs (a pool may need nothing)."""
        return self.get_connection_params()

    async def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        raise NotImplementedError

    async def init_connection_state(self) -> None:
        """Initialize the database connection settings."""

    def create_cursor(self, name: str | None = None) -> Any:
        raise NotImplementedError

    async def _close(self) -> None:
        raise NotImplementedError

    async def is_usable(self) -> bool:
        raise NotImplementedError

    def make_cursor(self, name: str | None = None) -> AsyncCursorWrapper:
        return AsyncCursorWrapper(self, name)

    def make_debug_cursor(self, name: str | None = None) -> AsyncCursorWrapper:
        return AsyncCursorDebugWrapper(self, name)

    # ##### Connection life #####

    # The entry points (connect, ensure_connection, close) are their private
    # twins with the task check in front (task_bound): internal calls go to
    # the twins directly, and pay for neither the check nor another frame.

    async def _connect(self) -> None:
        """Connect to the database. Assume that the connection is closed."""
        self.uses += 1  # nothing gives it back while it is being set up
        try:
            await self._set_up_connection()
        finally:
            self.uses -= 1

    connect = task_bound(_connect, "connect")

    async def _set_up_connection(self) -> None:
        self.check_settings()
        state = loop_state()
        if not state.hook_installed:
            await state.install_shutdown_hook()
        self.reset_transaction_state()
        self.named_cursors, self.cursors_to_close = set(), []
        self.health_check_enabled = self.settings_dict["CONN_HEALTH_CHECKS"]
        self.closed_in_transaction = False
        self.errors_occurred = False
        # New connections are healthy.
        self.health_check_done = True
        if (
            state.idle.get(self.alias)
            and await self._adopt_idle_connection()
            and not await self._idle_connection_works()
        ):
            await self._close()
            self.connection = None
        if self.connection is None:
            max_age = self.settings_dict["CONN_MAX_AGE"]
            self.close_at = None if max_age is None else time.monotonic() + max_age
            self.connection = await self.get_new_connection(
                self.new_connection_params()
            )
            try:
                await self._switch_autocommit(self.settings_dict["AUTOCOMMIT"])
                await self.init_connection_state()
            except BaseException:
                # Never leave a half-initialized connection for the next use.
                await self._close()
                self.connection = None
                raise
            await self._send_connection_created()
        self.run_on_commit = []

    async def _send_connection_created(self) -> None:
        """Send ``connection_created``; await async receivers, call sync ones.

        Sync receivers run inline on the event loop (never in a thread), so
        they must not block.
        """
        if not connection_created.receivers:
            return  # Django's own shortcut in Signal.send(): the usual case
        sync_receivers, async_receivers = compat.live_receivers(
            connection_created, self.__class__
        )
        for receiver in sync_receivers:
            name = f"{receiver.__module__}.{receiver.__qualname__}"
            if name not in SKIPPED_RECEIVERS:
                receiver(
                    signal=connection_created, sender=self.__class__, connection=self
                )
        for receiver in async_receivers:
            await receiver(
                signal=connection_created, sender=self.__class__, connection=self
            )

    async def _ensure_connection(self) -> None:
        """Guarantee that a connection to the database is established."""
        if self.connection is not None and self.connection.closed:
            # The server or the network dropped it; outside a transaction,
            # replace it silently, as the next request would in Django.
            if self.in_atomic_block:
                return
            await self.close()
        if self.connection is None:
            if self.in_atomic_block and self.closed_in_transaction:
                raise ProgrammingError(
                    "Cannot open a new connection in an atomic block."
                )
            with self.wrap_database_errors:
                await self._connect()

    ensure_connection = task_bound(_ensure_connection, "ensure_connection")

    def cursor(self) -> AsyncCursorWrapper:
        """Return a cursor; use it as ``async with connection.cursor() as c``."""
        return self._cursor()

    def chunked_cursor(self) -> AsyncCursorWrapper:
        """Return a server-side (named) cursor that streams results in chunks.

        With ``DISABLE_SERVER_SIDE_CURSORS`` (for transaction-pooling proxies
        such as PgBouncer) it is a plain cursor, which fetches the whole result.
        """
        if self.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS"):
            return self._cursor()
        self._named_cursor_idx += 1
        name = f"_django_async_curs_{id(self)}_{self._named_cursor_idx}"
        return self._cursor(name=name)

    def _cursor(self, name: str | None = None) -> AsyncCursorWrapper:
        if self.queries_logged:
            return self.make_debug_cursor(name)
        return self.make_cursor(name)

    @task_bound
    async def open_cursor(self, name: str | None = None) -> Any:
        """Connect if needed and return a new driver cursor."""
        if self.cursors_to_close:
            await self._close_cursors_left()
        self.uses += 1  # until the cursor closes (cursor_closed)
        try:
            connection = self.connection
            # The usual case, a healthy open connection, without further awaits.
            if connection is None:
                await self._ensure_connection()
            elif connection.closed or (
                self.health_check_enabled and not self.health_check_done
            ):
                await self.close_if_health_check_failed()
                await self._ensure_connection()
            try:
                cursor = self.create_cursor(name)
            except Exception as error:
                reraise(self, error)
        except BaseException:
            self.cursor_closed(None)
            raise
        if name:
            self.named_cursors.add(cursor)
        return cursor

    def cursor_closed(self, cursor: Any) -> None:
        """Note that the owner has closed ``cursor`` (None: it never opened)."""
        if cursor is not None:
            self.named_cursors.discard(cursor)
        self.uses -= 1
        if not self.uses:
            self.became_unused()

    # ##### Cursors closed by other tasks #####

    def owned_by_current_task(self) -> bool:
        """Tell whether the running task may drive the connection."""
        return self.owner is None or self.owner is task_of(running_loop())

    def close_cursor_later(self, cursor: Any) -> None:
        """Have the owner close ``cursor`` at its next use (or at release)."""
        self.cursors_to_close.append(cursor)

    async def _close_cursors_left(self) -> None:
        cursors, self.cursors_to_close = self.cursors_to_close, []
        for cursor in cursors:
            self.cursor_closed(cursor)
            with self.wrap_database_errors:
                await cursor.close()

    async def _close_named_cursors(self) -> None:
        """Close the server-side cursors still open, before the session is reused.

        Cursors opened in autocommit mode are ``WITH HOLD``: they would outlive
        their task on a parked or pooled session.
        """
        cursors, self.named_cursors = self.named_cursors, set()
        self.cursors_to_close = []
        self.uses -= len(cursors)
        for cursor in cursors:
            with self.wrap_database_errors:
                await cursor.close()

    async def _close_connection(self) -> None:
        """Close the connection to the database (or return it to its pool)."""
        self.run_on_commit = []
        if self.closed_in_transaction or self.connection is None:
            return
        try:
            await self._close()
        finally:
            if self.in_atomic_block:
                self.closed_in_transaction = True
                self.needs_rollback = True
            else:
                self.connection = None

    close = task_bound(_close_connection, "close")

    # ##### Django's wrapper API #####

    def copy(self, alias: str | None = None) -> BaseAsyncDatabaseWrapper:
        """Return a new wrapper with the same settings (Django's ``copy()``).

        For tests that need two connections to one database. It belongs to
        no scope: the task that first uses it owns it, and closes it.
        """
        settings_dict = copy.deepcopy(self.settings_dict)
        return type(self)(settings_dict, self.alias if alias is None else alias)

    # ##### Task safety #####

    @property
    def owner_done(self) -> bool:
        return self.owner is None or self.owner.done()

    @property
    def owner_name(self) -> str:
        return self.owner.get_name() if self.owner else "<none>"

    def validate_task_sharing(self) -> None:
        """Refuse to be driven by a task other than the one that owns us."""
        owner = self.owner
        if owner is not None and owner is task_of(running_loop()):
            return  # the usual case, first
        task = current_task()
        if self.owner is None:
            self.owner = task
        elif self.owner is not task:
            raise RuntimeError(
                f"The async connection {self.alias!r} belongs to task "
                f"{self.owner.get_name()!r} and cannot be used from task "
                f"{task.get_name()!r}: one connection is driven by one task. "
                "Fetch it with async_connections[alias] inside the task "
                "(each task gets its own), or wrap the work in "
                "`async with async_connections.independent_connection():`."
            )


def current_task() -> asyncio.Task[Any]:
    """Return the running task, or explain how async connections are used."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        task = None
    if task is None:
        raise RuntimeError(
            "Async database connections need a running event loop: use them "
            "from async code (an `async def` view, or inside asyncio.run()). "
            "From sync code, use django.db.connections instead."
        )
    return task
