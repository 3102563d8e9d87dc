"""One ``psycopg_pool.AsyncConnectionPool`` per alias and per event loop.

A pool cannot cross event loops (its workers and locks belong to one), so
pools live in the loop's state and close when the loop shuts down, or when
``close_pool()`` retires one (the next use opens a new one, and a checkout
waiting on the retired one is served by the new one). Nothing else closes a
pool: a task's tidy-up (``close_all()``) never breaks another task.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from typing import TYPE_CHECKING, Any

import psycopg
from django.core.exceptions import ImproperlyConfigured
from psycopg import sql as pgsql
from psycopg.pq import TransactionStatus

from django_async_backend.db.backends.postgresql.session import configure_session
from django_async_backend.db.backends.utils import task_bound
from django_async_backend.utils.loops import loop_state, shielded, start_eagerly

IDLE = TransactionStatus.IDLE

if TYPE_CHECKING:
    from django_async_backend.db.backends.postgresql.base import AsyncDatabaseWrapper


def opened(opening: asyncio.Future[Any] | None) -> Any:
    """The pool of an opening (a LoopState.pools entry) if open, else None."""
    if (
        opening is not None
        and opening.done()
        and not opening.cancelled()
        and opening.exception() is None
    ):
        return opening.result()
    return None


async def get_pool(db: AsyncDatabaseWrapper) -> Any:
    """Open the pool of ``db.alias`` on the running loop, or wait for it.

    (The usual case, an open pool, is ``opened(loop_state().pools.get(alias))``,
    with no await: see AsyncDatabaseWrapper.get_new_connection.)
    """
    state = loop_state()
    opening = state.pools.get(db.alias)
    pool = opened(opening)
    if pool is not None:
        return pool
    if opening is None:
        # Created once per loop; concurrent callers wait for the same opening,
        # and a caller being cancelled does not cancel it for the others.
        opening = state.pools[db.alias] = asyncio.ensure_future(_open_pool(db))
        await state.install_shutdown_hook()
        state.keep_pools_closable()
    try:
        return await asyncio.shield(opening)
    except BaseException:
        if opening.done() and opening.exception() is not None:
            # Let the next caller try again (the settings may be fixed).
            state.pools.pop(db.alias, None)
        raise


async def _open_pool(db: AsyncDatabaseWrapper) -> Any:
    if db.settings_dict.get("CONN_MAX_AGE", 0) != 0:
        raise ImproperlyConfigured("Pooling doesn't support persistent connections.")
    try:
        from psycopg_pool import AsyncConnectionPool
    except ImportError as err:
        raise ImproperlyConfigured(
            f"DATABASES[{db.alias!r}]['OPTIONS']['pool'] needs psycopg_pool. "
            "Install it with: pip install 'django-async-backend[pool]'"
        ) from err
    kwargs = db.get_connection_params()
    # Pool connections start in autocommit; the wrapper sets AUTOCOMMIT later.
    kwargs["autocommit"] = True
    health_checks = db.settings_dict["CONN_HEALTH_CHECKS"]
    role = db.settings_dict["OPTIONS"].get("assume_role")
    pool = _pool_class()(
        kwargs=kwargs,
        open=False,
        configure=_configure(db),
        reset=_reset(role) if role else None,
        check=AsyncConnectionPool.check_connection if health_checks else None,
        **(db.pool_options or {}),
    )
    pool.alias = db.alias
    await pool.open()
    return pool


@functools.cache
def _pool_class() -> Any:
    """``AsyncConnectionPool`` with a timeout error that says what to change."""
    from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

    class Pool(AsyncConnectionPool):
        """The pool of one alias on one loop; it knows who holds what.

        A task keeps its connection between uses, and gives it back when
        another task needs one while it is not using it and waits for
        something else (see PooledMixin.became_unused): queries do not pay
        for a checkout each, and idle tasks never starve the pool.
        """

        alias = "?"
        # Set by close_pool() (LoopState.retire_pool): a replacement exists.
        retired = False
        Closed = PoolClosed

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # Checkouts under way (waiting, or about to be served).
            self.waiting = 0
            # The wrappers holding one of its connections (checked out).
            self.holders: set[Any] = set()

        # psycopg_pool's signature, which the pool's callers use.
        async def getconn(self, timeout: float | None = None) -> Any:  # noqa: ASYNC109
            """psycopg_pool's getconn(), safe to cancel: no slot is ever lost.

            Awaited in the caller's task, without a shield (which would cost
            a task whenever the checkout waits): psycopg_pool's async
            getconn() is itself safe to cancel (a waiting client cancelled
            once a connection was handed to it gives the connection back),
            and the connection is the caller's the moment it returns.
            """
            task = asyncio.current_task()
            requested = task.cancelling() if task is not None else 0
            self.waiting += 1
            try:
                if len(self.holders) >= self.max_size:
                    self.reclaim()
                connection = await super().getconn(timeout)
            except PoolTimeout as error:
                waited = self.timeout if timeout is None else timeout
                raise PoolTimeout(
                    f"DATABASES[{self.alias!r}]: no pooled connection came free "
                    f"within {waited:g} s (OPTIONS['pool'] max_size="
                    f"{self.max_size}, timeout={self.timeout:g}; {error}). A "
                    "task holds a pooled connection while it uses it (in a "
                    "transaction, with a cursor open, or in hold()): raise "
                    "max_size or timeout, or keep transactions shorter."
                ) from error
            finally:
                self.waiting -= 1
            if task is not None and task.cancelling() > requested:
                # Python 3.11's asyncio.wait_for, which getconn() waits with,
                # swallows a cancellation that lands as the connection is
                # handed over (CPython gh-86296): deliver it, the connection
                # back in the pool first.
                await shielded(self.putconn(connection))
                raise asyncio.CancelledError
            return connection

        def reclaim(self) -> None:
            """Take back the connections that their holders are not using."""
            for wrapper in list(self.holders):
                wrapper.give_back_if_unused()

    return Pool


def _not_a_cancellation(record: logging.LogRecord) -> bool:
    """Drop psycopg_pool's warnings about a cancelled worker.

    When asyncio cancels every task at loop shutdown, a pool worker that was
    opening a connection swallows the cancellation and logs it as an error
    ("error connecting in 'pool-1': ", the empty message of a
    CancelledError). It is the shutdown, not an error; the pool is closed.
    """
    args = record.args if isinstance(record.args, tuple) else ()
    return not any(isinstance(arg, asyncio.CancelledError) for arg in args)


logging.getLogger("psycopg.pool").addFilter(_not_a_cancellation)


def _configure(db: AsyncDatabaseWrapper) -> Any:
    """Build the pool's ``configure`` callback (time zone, role, types)."""
    # What the session set-up needs, read now: the pool keeps no wrapper.
    session = (
        db.alias,
        db.timezone_name,
        db.settings_dict["OPTIONS"].get("assume_role"),
        db.ops.set_time_zone_sql(),
    )

    async def configure(connection: Any) -> None:
        await configure_session(connection, *session)

    return configure


def _reset(role: str) -> Any:
    """Build the pool's ``reset`` callback: back to ``assume_role``.

    A connection that the application switched to another role (a plain
    ``SET ROLE``) must not reach the next task with that role.
    """

    async def reset(connection: Any) -> None:
        await connection.execute(pgsql.SQL("SET ROLE {}").format(pgsql.Literal(role)))
        if not connection.autocommit:
            await connection.commit()

    return reset


class PooledMixin:
    """The pooled side of the PostgreSQL async wrapper.

    A task keeps its pooled connection between uses and gives it back when
    another task waits for one while it is not using it and waits for
    something else (``became_unused``, ``give_back_if_unused``); ``pool`` and
    ``close_pool()`` are Django's API.
    """

    alias: str
    settings_dict: dict[str, Any]
    connection: Any
    _pool: Any
    _control_cursor: Any
    _tz_checked: Any
    # A give-back check is due at the loop's next turn (see became_unused).
    _give_back_pending = False

    if TYPE_CHECKING:

        def unused(self) -> bool: ...
        @property
        def owner_done(self) -> bool: ...

    @property
    def pool_options(self) -> dict[str, Any] | None:
        """The psycopg_pool arguments of OPTIONS["pool"], or None."""
        options = self.settings_dict["OPTIONS"].get("pool")
        if not options:
            return None
        return {} if options is True else dict(options)

    def became_unused(self) -> None:
        """Give the connection back if another task waits for one, once this
        task waits for something else.

        (Or if its pool was retired by close_pool(): it is then closed.) The
        check runs at the loop's next turn, which comes before this task
        runs again if it suspends now: a task that goes straight on to its
        next query (a view running ORM queries) keeps its connection, as it
        is using it; one that waits for anything not ready gives it back for
        that time. (Which session serves the next query is no guarantee
        outside a transaction or hold(); who may drive it is not affected.)
        """
        pool = self._pool
        if (
            pool is not None
            and (pool.waiting or pool.retired)
            and not self._give_back_pending
        ):
            self._give_back_pending = True
            asyncio.get_running_loop().call_soon(self._give_back_at_next_turn)

    def _give_back_at_next_turn(self) -> None:
        self._give_back_pending = False
        self.give_back_if_unused()

    def give_back_if_unused(self) -> None:
        """Return the pooled connection if nothing uses it; next use checks out.

        Called by the pool when another task needs a connection: the owner
        task may be elsewhere (waiting for a websocket message, say), but a
        connection it is not using is not its to keep.
        """
        pool = self._pool
        if pool is None or not self.unused() or self.owner_done:
            return
        connection = self.connection
        self.connection = self._pool = None
        self._control_cursor = self._tz_checked = None
        pool.holders.discard(self)
        start_eagerly(_return_to_pool(pool, connection))

    @property
    def pool(self) -> Any:
        """The running loop's psycopg_pool pool of this alias, or None.

        None also while it has not been opened yet: unlike Django's sync
        ``pool``, reading it does not create one (that needs I/O); the first
        connection does.
        """
        if self.pool_options is None:
            return None
        return opened(loop_state().pools.get(self.alias))

    @task_bound
    async def close_pool(self) -> None:
        """Close the running loop's pool of this alias (Django's close_pool()).

        The next use opens a new pool; a checkout waiting on this one gets its
        connection from the new one, and connections in use are closed when
        given back. Other event loops' pools are not touched.
        """
        await loop_state().retire_pool(self.alias)

    async def _give_back(self, connection: Any) -> None:
        """Return ``connection`` to its pool, or close it."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.holders.discard(self)
            # Shielded: an interrupted putconn() would strand a pool slot.
            if connection.pgconn.transaction_status == IDLE:
                await shielded(pool.putconn(connection))
            else:
                await shielded(_return_to_pool(pool, connection))
        else:
            # Never suspends: it only closes the socket.
            await connection.close()


async def _return_to_pool(pool: Any, connection: Any) -> None:
    """Give ``connection`` back, its transaction (if any) rolled back first.

    A connection closed inside a block (Django's close() there) still has
    the transaction open: roll it back here rather than make the pool clean
    up after us (it would warn about it).
    """
    status = connection.pgconn.transaction_status
    if status == TransactionStatus.INTRANS or status == TransactionStatus.INERROR:
        with contextlib.suppress(psycopg.Error):
            await connection.rollback()
    await pool.putconn(connection)
