"""The listener connection of an alias on an event loop, and its driver task.

Every ``listen()`` block on an alias on one event loop shares this
connection, a psycopg connection of its own (never a task's, never pooled).
Its driver task is the only one that uses it: it sends LISTEN/UNLISTEN as
blocks come and go, then waits for notifications and hands each one to the
queues of the blocks that listen to its channel. The connection closes when
the last block leaves, and at loop shutdown (``LoopState.close_listeners``).

A lost connection (a killed session, a server restart) ends the blocks that
asked for ``reconnect=False`` with ``OperationalError``; for the others the
driver reconnects, with a growing delay, and LISTENs again. PostgreSQL keeps
no queue: notifications sent meanwhile are lost either way.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import TYPE_CHECKING, Any, NamedTuple

import psycopg
from django.db import NotSupportedError, OperationalError
from django.db import utils as db_utils
from psycopg import sql as pgsql

from django_async_backend.utils.loops import loop_state, open_shielded

if TYPE_CHECKING:
    from django_async_backend.db.backends.postgresql.listen import Notifications

__all__ = ["ListenerConnection", "Notification", "as_django"]

RETRY_FIRST, RETRY_MAX = 0.05, 2.0  # seconds between reconnection attempts


class Notification(NamedTuple):
    """One notification: its channel, its payload and the sender's server pid."""

    channel: str
    payload: str
    pid: int


def as_django(error: BaseException, message: str | None = None) -> Exception:
    """A new ``django.db`` error for a driver error, chained to it."""
    django_class: type[Exception] = OperationalError
    if isinstance(error, db_utils.Error):
        django_class = type(error)
    else:
        for name in ("DataError", "OperationalError", "IntegrityError",
                     "InternalError", "ProgrammingError", "NotSupportedError",
                     "DatabaseError", "InterfaceError", "Error"):  # fmt: skip
            if isinstance(error, getattr(psycopg, name)):
                django_class = getattr(db_utils, name)
                break
    mapped = django_class(message or str(error))
    mapped.__cause__ = error
    return mapped


class ListenerConnection:
    """The listener connection of one alias on one event loop, and its driver."""

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        self.alias = alias
        self.params = {**params, "autocommit": True}
        self.blocks: set[Notifications] = set()
        self.connection: psycopg.AsyncConnection[Any] | None = None
        self.listening: set[str] = set()  # LISTENed on the current connection
        self.changed = asyncio.Event()  # the blocks' channels changed
        self.resumed = False  # reconnected: count it once re-LISTENed
        self.task: asyncio.Task[None] | None = None

    async def join(self, block: Notifications) -> None:
        """Add ``block``; return once its channels are LISTENed."""
        self.blocks.add(block)
        self.changed.set()
        if self.task is None:
            # A context of its own: nothing of the first listener's task.
            self.task = asyncio.get_running_loop().create_task(
                self._drive(),
                name=f"django_async_backend: listener connection of {self.alias!r}",
                context=contextvars.Context(),
            )
        await block.ready

    def leave(self, block: Notifications) -> None:
        """Remove ``block``; the last one to leave closes the connection."""
        self.blocks.discard(block)
        if self.blocks:
            self.changed.set()
            return
        listeners = loop_state().listeners
        if listeners.get(self.alias) is self:
            del listeners[self.alias]
        if self.task is not None:
            self.task.cancel()  # the driver closes the connection

    async def close(self) -> None:
        """Stop the driver and close the connection (loop shutdown)."""
        for block in list(self.blocks):
            block.fail(OperationalError(f"The event loop of {self.alias!r} ended."))
        if self.task is not None:
            self.task.cancel()
            await asyncio.wait([self.task])
        self._close_connection()

    # ##### The driver: the only user of the connection #####

    async def _drive(self) -> None:
        pump: asyncio.Task[None] | None = None
        try:
            while self.blocks:
                if self.connection is None and not await self._connect():
                    return
                self.changed.clear()
                try:
                    await self._follow_channels()
                except psycopg.Error as error:
                    self._lost(error)
                    continue
                if self.changed.is_set():
                    continue
                pump = asyncio.ensure_future(self._pump())
                changed = asyncio.ensure_future(self.changed.wait())
                await asyncio.wait({pump, changed}, return_when="FIRST_COMPLETED")
                changed.cancel()
                if not pump.done():
                    pump.cancel()  # a clean stop: psycopg was waiting to read
                    await asyncio.wait([pump])
                failure = None if pump.cancelled() else pump.exception()
                pump = None
                if failure is not None:
                    self._lost(failure)
        finally:
            try:
                if pump is not None:
                    # Off the socket before it closes (its number may be reused).
                    pump.cancel()
                    await asyncio.wait([pump])
            finally:
                self._close_connection()

    async def _pump(self) -> None:
        connection = self.connection
        assert connection is not None
        async for notify in connection.notifies():
            item = Notification(notify.channel, notify.payload, notify.pid)
            for block in list(self.blocks):
                if item.channel in block.channels:
                    block.deliver(item)

    async def _connect(self) -> bool:
        """Open the connection; tell whether a block still wants it."""
        delay = RETRY_FIRST
        while self.blocks:
            try:
                connection = await open_shielded(
                    psycopg.AsyncConnection.connect(**self.params), _close
                )
                try:
                    await self._check_direct(connection)
                except BaseException:
                    await connection.close()
                    raise
            except NotSupportedError as error:
                for block in list(self.blocks):
                    block.fail(as_django(error))
                return False
            except psycopg.Error as error:
                # A block that never listened says so at once; the others
                # (reconnect=True) wait for the server to come back.
                for block in list(self.blocks):
                    if not block.ready.done():
                        block.fail(as_django(error))
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            self.connection = connection
            return True
        return False

    async def _check_direct(self, connection: psycopg.AsyncConnection[Any]) -> None:
        """Refuse a pooler: the session's pid is not the one it reported.

        PgBouncer gives its clients a process id of its own invention (their
        cancel key); PostgreSQL gives the session's.
        """
        cursor = await connection.execute("SELECT pg_backend_pid()")
        row = await cursor.fetchone()
        served_by = int(row[0]) if row else 0
        if served_by != connection.info.backend_pid:
            raise NotSupportedError(
                f"listen() cannot work on {self.alias!r}: its connections go "
                "through a connection pooler such as PgBouncer (the server "
                f"session's pid is {served_by}, not the "
                f"{connection.info.backend_pid} the connection was given), "
                "where a notification reaches whichever client holds that "
                "server session at the time, if any. Add a DATABASES alias "
                "that points straight at PostgreSQL (the server's HOST and "
                "PORT) and listen on it; notify() can keep using "
                f"{self.alias!r} (docs/listen-notify.md#pgbouncer)."
            )

    async def _follow_channels(self) -> None:
        """LISTEN what the blocks want, UNLISTEN what none wants any more."""
        connection = self.connection
        assert connection is not None
        wanted = {channel for block in self.blocks for channel in block.channels}
        for verb, channels in (
            ("LISTEN", wanted - self.listening),
            ("UNLISTEN", self.listening - wanted),
        ):
            for channel in sorted(channels):
                statement = pgsql.SQL(verb + " {}").format(pgsql.Identifier(channel))
                await connection.execute(statement)
                if verb == "LISTEN":
                    self.listening.add(channel)
                else:
                    self.listening.discard(channel)
        resumed, self.resumed = self.resumed, False
        for block in self.blocks:
            if not block.ready.done():
                if block.channels <= self.listening:
                    block.ready.set_result(None)
            elif resumed:
                block.reconnects += 1

    def _lost(self, error: BaseException) -> None:
        """The connection broke: end the blocks that do not reconnect."""
        self._close_connection()
        self.resumed = True
        message = (
            f"The listener connection of {self.alias!r} was lost ({error}). "
            "Notifications sent until it is back are lost: listen again and "
            "re-read what you follow, or listen with reconnect=True."
        )
        for block in list(self.blocks):
            if not block.reconnect or not block.ready.done():
                block.fail(as_django(error, message))

    def _close_connection(self) -> None:
        connection, self.connection = self.connection, None
        self.listening = set()
        if connection is not None and not connection.closed:
            # Only closes the socket: it never suspends (safe while cancelled).
            connection.pgconn.finish()


async def _close(connection: psycopg.AsyncConnection[Any]) -> None:
    await connection.close()
