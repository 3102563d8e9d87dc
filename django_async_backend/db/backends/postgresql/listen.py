"""``async with connection.listen("orders") as notifications:``, a listen() block.

The block subscribes to channels of the listener connection that every
block on its alias and event loop shares (``listener.py``), never the
task's own connection: a listener waits for ever, which must not hold a
transaction open or a pool slot. Its notifications wait in a queue of its
own until read; the block leaves when it exits, when its task ends, and when
the connection is lost (``reconnect=False``) or the loop shuts down.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from django.db import OperationalError
from django.db.transaction import TransactionManagementError

from django_async_backend.db.backends.postgresql.listener import (
    ListenerConnection,
    Notification,
)
from django_async_backend.utils.loops import loop_state

if TYPE_CHECKING:
    from django_async_backend.db.backends.postgresql.base import AsyncDatabaseWrapper

__all__ = ["Notification", "Notifications", "check_channel", "check_payload"]

CHANNEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_CHANNEL = 63  # NAMEDATALEN - 1: LISTEN silently truncates longer names
MAX_PAYLOAD = 7999  # bytes: PostgreSQL refuses a payload of 8000 or more


def check_channel(channel: object) -> str:
    """Return ``channel`` if it is a channel name this backend accepts."""
    if (
        not isinstance(channel, str)
        or len(channel) > MAX_CHANNEL
        or not CHANNEL.fullmatch(channel)
    ):
        raise ValueError(
            f"{channel!r} is not a channel name: use an identifier (ASCII "
            f"letters, digits and _, not starting with a digit, at most "
            f"{MAX_CHANNEL} characters), such as 'bank_transfers'. Names are "
            "case-sensitive (always quoted) on both listen() and notify()."
        )
    return channel


def check_payload(payload: object) -> str:
    """Return ``payload`` if PostgreSQL can carry it in a notification."""
    if not isinstance(payload, str):
        raise TypeError(
            f"A notification payload is a str, not {type(payload).__name__}: "
            "serialize it first (json.dumps)."
        )
    size = len(payload.encode("utf-8", "surrogatepass"))
    if size > MAX_PAYLOAD:
        raise ValueError(
            f"The payload is {size:,} bytes; PostgreSQL carries at most "
            f"{MAX_PAYLOAD:,}. Store the data in a table and notify its key."
        )
    if "\x00" in payload:
        raise ValueError("A payload cannot contain NUL characters ('\\x00').")
    return payload


class Notifications:
    """``async with connection.listen(*channels) as notifications:`` (a block).

    ``async for n in notifications`` yields :class:`Notification` objects
    until ``timeout`` seconds have passed (None: no limit) or ``stop_after``
    have come; ``await notifications.get(timeout)`` returns the next one, or
    None after ``timeout`` seconds.
    """

    def __init__(
        self,
        db: AsyncDatabaseWrapper,
        channels: Iterable[str],
        *,
        timeout: float | None = None,
        stop_after: int | None = None,
        reconnect: bool = False,
        max_pending: int = 10_000,
    ) -> None:
        self.db = db
        self.channels = frozenset(check_channel(channel) for channel in channels)
        if not self.channels:
            raise TypeError("listen() needs at least one channel name.")
        self.timeout = timeout
        self.stop_after = stop_after
        self.reconnect = reconnect
        self.max_pending = max_pending
        # How many times the connection was lost and LISTENed again.
        self.reconnects = 0
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue: asyncio.Queue[Notification] = asyncio.Queue()
        self._failure: Exception | None = None
        self._listener: ListenerConnection | None = None
        self._task: asyncio.Task[Any] | None = None

    @property
    def backend_pid(self) -> int | None:
        """The server pid of the listener connection (None while it is down)."""
        listener = self._listener
        if listener is None or listener.connection is None:
            return None
        return int(listener.connection.info.backend_pid)

    async def __aenter__(self) -> Notifications:
        db = self.db
        if db.in_atomic_block:
            raise TransactionManagementError(
                f"listen() cannot run inside async_atomic() on {db.alias!r}: it "
                "would keep the transaction open for as long as it listens, and "
                "a NOTIFY sent in that transaction arrives only after COMMIT. "
                "Open the listen() block before the async_atomic() block."
            )
        state = loop_state()
        if not state.hook_installed:
            await state.install_shutdown_hook()
        listener = state.listeners.get(db.alias)
        if listener is None:
            params = db.get_connection_params()
            listener = state.listeners[db.alias] = ListenerConnection(db.alias, params)
        self._listener = listener
        # The block ends with its task, even one that never exits it.
        self._task = asyncio.current_task()
        if self._task is not None:
            self._task.add_done_callback(self._task_done)
        try:
            await listener.join(self)
        except BaseException:
            self._leave()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._leave()

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._leave()

    def _leave(self) -> None:
        listener, self._listener = self._listener, None
        if self._failure is None:
            self._failure = RuntimeError("This listen() block has ended.")
        if self._task is not None:
            self._task.remove_done_callback(self._task_done)
            self._task = None
        if listener is not None:
            listener.leave(self)
        if not self.ready.done():
            self.ready.cancel()

    # ##### Called by the driver #####

    def deliver(self, item: Notification) -> None:
        if self._queue.qsize() >= self.max_pending:
            self.fail(
                OperationalError(
                    f"{self.max_pending:,} notifications were waiting in this "
                    "listen() block: it fell behind and the next ones are lost. "
                    "Consume them faster, or raise max_pending."
                )
            )
            return
        self._queue.put_nowait(item)

    def fail(self, error: Exception | None) -> None:
        """End the block with ``error``, raised to its reader after the queue."""
        if self._failure is None:
            self._failure = error or OperationalError("The listener stopped.")
        if not self.ready.done():
            self.ready.set_exception(self._failure)
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.leave(self)
        self._queue.put_nowait(_END)  # wakes a waiting reader

    # ##### Reading #####

    # A timeout parameter, as psycopg's notifies() and asyncio.Queue users expect.
    async def get(self, timeout: float | None = None) -> Notification | None:  # noqa: ASYNC109
        """Return the next notification; None after ``timeout`` seconds."""
        if self._queue.empty() and self._failure is not None:
            raise self._failure
        try:
            async with asyncio.timeout(timeout):
                item = await self._queue.get()
        except TimeoutError:
            return None
        if item is _END:
            assert self._failure is not None
            raise self._failure
        return item

    async def __aiter__(self) -> AsyncIterator[Notification]:
        loop = asyncio.get_running_loop()
        deadline = None if self.timeout is None else loop.time() + self.timeout
        received = 0
        while self.stop_after is None or received < self.stop_after:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return
            item = await self.get(remaining)
            if item is None:
                return
            received += 1
            yield item


# Put in a block's queue when it ends, to wake its reader.
_END = Notification("", "", 0)
