"""PostgreSQL ENGINE with native async connections.

``DatabaseWrapper`` is Django's stock postgresql wrapper, unchanged: the sync
side (migrate, admin, the sync ORM, ``OPTIONS["pool"]``) behaves exactly as
with ``django.db.backends.postgresql``. ``AsyncDatabaseWrapper`` is its async
twin on ``psycopg.AsyncConnection``; it reads the same settings, reuses
Django's operations and features, and never runs database work in a thread.
"""

from __future__ import annotations

import contextlib
from typing import Any, cast

import psycopg
from django.core.exceptions import ImproperlyConfigured
from django.db import NotSupportedError
from django.db.backends.base.base import RAN_DB_VERSION_CHECK
from django.db.backends.postgresql.base import DatabaseWrapper as StockDatabaseWrapper
from django.db.backends.postgresql.features import DatabaseFeatures
from django.db.backends.postgresql.operations import DatabaseOperations
from django.db.backends.postgresql.psycopg_any import IsolationLevel, register_tzloader
from psycopg import AsyncClientCursor, AsyncCursor, AsyncServerCursor
from psycopg.client_cursor import ClientCursorMixin
from psycopg.pq import Format, TransactionStatus

from django_async_backend.db.backends.base.base import BaseAsyncDatabaseWrapper
from django_async_backend.db.backends.postgresql.guard import (
    GuardedCursorDebugWrapper,
    GuardedCursorWrapper,
)
from django_async_backend.db.backends.postgresql.listen import Notifications
from django_async_backend.db.backends.postgresql.pipeline import Pipeline
from django_async_backend.db.backends.postgresql.pool import (
    PooledMixin,
    get_pool,
    opened,
)
from django_async_backend.db.backends.postgresql.session import configure_session
from django_async_backend.db.backends.utils import reraise, task_bound
from django_async_backend.utils.bridge import await_, in_bridge
from django_async_backend.utils.loops import loop_state, open_shielded

TIMESTAMPTZ_OID = psycopg.adapters.types["timestamptz"].oid

IDLE = TransactionStatus.IDLE

# alias -> the server version seen by its last connection (see pg_version).
SERVER_VERSIONS: dict[str, int] = {}

_stock = cast(Any, StockDatabaseWrapper)


class DatabaseWrapper(StockDatabaseWrapper):
    """Django's postgresql wrapper: the sync side of this ENGINE.

    Unchanged but for one check before each statement (``guard.py``): a
    write from a thread that async code started while its task has an
    ``async_atomic()`` block open on the alias would escape that block.
    """

    def make_cursor(self, cursor: Any) -> Any:
        return GuardedCursorWrapper(cursor, self)

    def make_debug_cursor(self, cursor: Any) -> Any:
        return GuardedCursorDebugWrapper(cursor, self)


class AsyncServerSideCursor(
    ClientCursorMixin[psycopg.AsyncConnection[Any], Any], AsyncServerCursor[Any]
):
    """A named (server-side) cursor that binds parameters client-side.

    psycopg binds parameters server-side in named cursors, which the ORM's
    SQL does not support (#20516); Django's sync backend mixes the client
    binding in the same way.
    """


class AsyncDatabaseOperations(DatabaseOperations):
    """Django's postgresql operations, with SQL composed without I/O."""

    def compose_sql(self, sql: str, params: Any) -> str:
        # Django opens a (sync) cursor for this; mogrify itself needs no I/O.
        return AsyncClientCursor(self.connection.connection).mogrify(sql, params)


class AsyncDatabaseWrapper(PooledMixin, BaseAsyncDatabaseWrapper):
    """An async PostgreSQL connection on ``psycopg.AsyncConnection``."""

    __slots__ = ("_control_cursor", "_pool", "_tz_checked", "isolation_level")

    vendor = "postgresql"
    display_name = "PostgreSQL"
    Database = psycopg
    ops_class = AsyncDatabaseOperations
    features_class = DatabaseFeatures
    sync_wrapper_class = DatabaseWrapper

    # Django's own settings handling: NAME/USER/PASSWORD/HOST/PORT, OPTIONS,
    # time zone adapters and prepare_threshold, exactly as the sync side.
    _stock_connection_params = _stock.get_connection_params

    def __init__(self, settings_dict: dict[str, Any], alias: str = "default") -> None:
        super().__init__(settings_dict, alias)
        self.isolation_level = IsolationLevel.READ_COMMITTED
        # The pool the current connection came from, if any.
        self._pool: Any = None
        # A driver cursor kept for savepoint statements (see _execute_control).
        self._control_cursor: Any = None
        # (connection, time zone) whose timestamptz loader already agrees.
        self._tz_checked: tuple[Any, Any] | None = None

    @property
    def pg_version(self) -> int:
        """The server's version number; known once the alias has connected.

        Django's sync wrapper opens a connection to read it; here the version
        is kept per alias from the last connection (no I/O), and inside the
        native bridge a wrapper that never connected connects first.
        """
        connection = self.connection
        if connection is not None and not connection.closed:
            version = SERVER_VERSIONS[self.alias] = int(connection.info.server_version)
            return version
        if self.alias in SERVER_VERSIONS:
            return SERVER_VERSIONS[self.alias]
        if in_bridge():
            await_(self.ensure_connection())
            return self.pg_version
        raise RuntimeError(
            f"The server version of {self.alias!r} is known once connected: "
            "await connection.ensure_connection() first."
        )

    def new_connection_params(self) -> dict[str, Any]:
        # The pool was built with the parameters; a checkout needs none.
        if self.pool_options is not None:
            return {}
        return self.get_connection_params()

    def get_connection_params(self) -> dict[str, Any]:
        params = self._stock_connection_params()
        factory = self.settings_dict["OPTIONS"].get("cursor_factory")
        if not (isinstance(factory, type) and issubclass(factory, AsyncCursor)):
            # Django's default (or a sync class, for the sync side): pick the
            # async cursor with the same binding.
            binding = self.settings_dict["OPTIONS"].get("server_side_binding")
            factory = AsyncCursor if binding is True else AsyncClientCursor
        params["cursor_factory"] = factory
        return cast(dict[str, Any], params)

    def _isolation_level_option(self) -> IsolationLevel | None:
        try:
            value = self.settings_dict["OPTIONS"]["isolation_level"]
        except KeyError:
            return None
        try:
            return IsolationLevel(value)
        except ValueError:
            raise ImproperlyConfigured(
                f"Invalid transaction isolation level {value} specified. Use "
                "one of the psycopg.IsolationLevel values."
            ) from None

    async def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        level = self._isolation_level_option()
        self.isolation_level = level or IsolationLevel.READ_COMMITTED
        self._pool = None
        if self.settings_dict["OPTIONS"].get("pool"):
            while True:
                pool = opened(loop_state().pools.get(self.alias))
                if pool is None:  # ImproperlyConfigured, no psycopg_pool
                    pool = await get_pool(self)
                try:
                    connection = await pool.getconn()
                except pool.Closed:
                    if pool.retired:
                        # close_pool() retired it while the checkout waited:
                        # take the connection from the pool that replaced it.
                        continue
                    raise
                break
            pool.holders.add(self)
            self._pool = pool
        else:
            # Shielded: a cancellation must not leave a half-open session behind.
            connection = await open_shielded(
                psycopg.AsyncConnection.connect(**conn_params), _close
            )
        if level is not None:
            try:
                await connection.set_isolation_level(level)
            except BaseException:
                await self._give_back(connection)
                raise
        return connection

    async def configure_connection(self, connection: Any) -> bool:
        """Set the time zone and role; tell whether a commit is needed."""
        return await configure_session(
            connection,
            self.alias,
            self.timezone_name,
            self.settings_dict["OPTIONS"].get("assume_role"),
            self.ops.set_time_zone_sql(),
        )

    @task_bound
    async def get_database_version(self) -> tuple[int, int]:
        """The server's version, e.g. (18, 1); connects if needed (Django's)."""
        if self.connection is None:
            await self._ensure_connection()
        return divmod(self.pg_version, 10000)

    @task_bound
    async def check_database_version_supported(self) -> None:
        """Raise NotSupportedError if Django does not support the server version."""
        minimum = self.features.minimum_database_version
        if minimum is not None and await self.get_database_version() < minimum:
            found = ".".join(map(str, await self.get_database_version()))
            raise NotSupportedError(
                f"{self.display_name} {'.'.join(map(str, minimum))} or later is "
                f"required (found {found})."
            )

    async def init_connection_state(self) -> None:
        """Check the server version; set up a new connection (not a checkout).

        A hook of connect(), which checks the task. The version is checked
        once per alias and process, as Django does (the same record: an alias
        that Django's sync side has checked is not checked again).
        """
        if self.alias not in RAN_DB_VERSION_CHECK:
            await self.check_database_version_supported()
            RAN_DB_VERSION_CHECK.add(self.alias)
        if self.connection is not None and self._pool is None:
            commit = await self.configure_connection(self.connection)
            if commit and not self.autocommit:
                await self.connection.commit()

    def create_cursor(self, name: str | None = None) -> Any:
        connection = self.connection
        if name:
            options = self.settings_dict["OPTIONS"]
            # In autocommit mode the cursor outlives the implicit transaction.
            withhold = connection.autocommit
            if options.get("server_side_binding") is True:
                cursor = connection.cursor(name, scrollable=False, withhold=withhold)
            else:
                cursor = AsyncServerSideCursor(
                    connection, name=name, scrollable=False, withhold=withhold
                )
        else:
            cursor = connection.cursor()
        # Register the cursor time zone only if the connection disagrees
        # (checked once per connection and time zone, as it rarely changes).
        timezone = self.timezone
        if self._tz_checked != (connection, timezone):
            tzloader = connection.adapters.get_loader(TIMESTAMPTZ_OID, Format.TEXT)
            if timezone != tzloader.timezone:
                register_tzloader(timezone, cursor)
                return cursor
            self._tz_checked = (connection, timezone)
        return cursor

    async def _execute_control(self, sql: str) -> None:
        """Run a savepoint statement on a driver cursor kept for them.

        Django opens a cursor per savepoint statement; that is what happens
        here too while queries are logged or execute wrappers are installed,
        so that they see these statements. Otherwise a kept cursor saves the
        cost of a new one, twice per nested block.
        """
        connection = self.connection
        if connection is None or self.queries_logged or self.execute_wrappers:
            return await super()._execute_control(sql)
        self.validate_no_broken_transaction()
        cursor = self._control_cursor
        if cursor is None or cursor.connection is not connection:
            cursor = self._control_cursor = connection.cursor()
        try:
            await cursor.execute(sql)
        except psycopg.Error as error:
            reraise(self, error)

    async def _set_autocommit(self, autocommit: bool) -> None:
        connection = self.connection
        if connection.autocommit != autocommit:  # e.g. not for a pool checkout
            try:
                await connection.set_autocommit(autocommit)
            except psycopg.Error as error:
                reraise(self, error)

    def transaction_is_open(self) -> bool:
        connection = self.connection
        if connection is None or connection.closed:
            return False
        # (pgconn's status, an int: cheaper than connection.info's enum.)
        return bool(connection.pgconn.transaction_status != IDLE)

    async def _close(self) -> None:
        self._control_cursor = self._tz_checked = None
        if self.connection is not None:
            pooled = self._pool is not None
            if pooled and self.named_cursors and not self.connection.closed:
                # WITH HOLD cursors would outlive the checkout in the pool.
                with contextlib.suppress(Exception):
                    await self._close_named_cursors()
            try:
                await self._give_back(self.connection)
            except Exception as error:
                reraise(self, error)
            finally:
                if pooled:
                    # It belongs to the pool now: never touch it again.
                    self.connection = None

    @task_bound
    async def is_usable(self) -> bool:
        if self.connection is None:
            return False
        try:
            await self.connection.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    @task_bound
    async def check_constraints(self, table_names: Any = None) -> None:
        """Check deferred constraints now by making them immediate."""
        async with self.cursor() as cursor:
            await cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            await cursor.execute("SET CONSTRAINTS ALL DEFERRED")

    # ##### LISTEN and pipelines (listen.py, pipeline.py) #####

    @task_bound
    def listen(
        self,
        *channels: str,
        timeout: float | None = None,
        stop_after: int | None = None,
        reconnect: bool = False,
        max_pending: int = 10_000,
    ) -> Notifications:
        """Listen: ``async with connection.listen("jobs") as notifications:``.

        On the listener connection this loop's listeners of the alias share,
        never this one (docs/listen-notify.md).
        """
        return Notifications(
            self,
            channels,
            timeout=timeout,
            stop_after=stop_after,
            reconnect=reconnect,
            max_pending=max_pending,
        )

    @task_bound
    def pipeline(self) -> Pipeline:
        """Batch statements: ``async with connection.pipeline():``."""
        return Pipeline(self)


async def _close(connection: Any) -> None:
    await connection.close()
