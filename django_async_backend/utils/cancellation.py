"""Let an operation already on the wire finish when its task is cancelled.

A ``COMMIT`` whose answer is on its way decides the fate of a transaction:
interrupting it (psycopg then cancels the statement on the server) leaves
the client unable to tell whether it committed. ``await RunToEnd(...)``
awaits an operation in the current task, but defers a cancellation that
arrives meanwhile until the operation has finished, so that its outcome is
known, and returns that cancellation for the caller to raise once it has
recorded the outcome. If the operation does not finish within ``grace``
seconds of the first cancellation, it is abandoned: the ``on_abandon``
coroutine runs (it closes the connection), then the cancellation is raised.

How: the task is made to wait on a stand-in for each future the operation
waits on. The stand-in forwards everything to the future except
``cancel()``, which it refuses; asyncio then delivers the cancellation to the
task once the future is done, at the very point where the operation would
resume, and :class:`RunToEnd` resumes the operation instead. No extra task,
no extra loop iteration: this is cheap enough for every transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Generator
from types import CoroutineType
from typing import Any

Future = asyncio.Future

__all__ = ["RunToEnd"]

OnAbandon = Callable[[str, asyncio.CancelledError], Awaitable[None]]


class RunToEnd:
    """Await an operation to its end; the result is the deferred cancellation.

    ``await RunToEnd(operation, grace, on_abandon, label)`` returns the
    cancellation that arrived while ``operation`` ran (None if none did);
    the operation's own exception propagates (a deferred cancellation is then
    requested again, for the task's next await, so that it is not lost).
    Past ``grace`` seconds after a cancellation the operation is closed and
    ``await on_abandon(label, cancellation)`` runs, then the cancellation
    is raised.

    The object is also the stand-in that the task waits on instead of each
    future of the operation (one object, no allocation per wait): asyncio's
    Task needs only the flag, ``get_loop``, ``add_done_callback`` (the
    future's own, which calls back with the future itself) and ``cancel``,
    which it refuses.
    """

    # Set only when needed: most operations meet no cancellation at all.
    cancelled: asyncio.CancelledError | None = None
    expired = False
    timer: asyncio.TimerHandle | None = None
    waiting_on: Any = None

    def __init__(
        self, awaitable: Awaitable[Any], grace: float, on_abandon: OnAbandon, label: str
    ) -> None:
        self.awaitable = awaitable
        self.grace = grace
        self.on_abandon = on_abandon
        self.label = label

    def cancel(self, msg: Any = None) -> bool:
        """Refuse the task's cancellation while it waits: defer it."""
        self.cancel_requested()
        return False  # asyncio delivers it to the task once the future is done

    def cancel_requested(self) -> None:
        if self.timer is None:
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(self.grace, self.expire)

    def expire(self) -> None:
        self.expired = True
        if self.waiting_on is not None:
            # Wake the task up: it abandons the operation.
            self.waiting_on.cancel()

    def __await__(self) -> Generator[Any, Any, asyncio.CancelledError | None]:
        awaitable = self.awaitable
        # A coroutine is stepped directly (its __await__() wrapper costs a call).
        it = awaitable if type(awaitable) is CoroutineType else awaitable.__await__()
        value: Any = None
        error: BaseException | None = None
        try:
            while not self.expired:
                try:
                    yielded = it.send(value) if error is None else it.throw(error)
                except StopIteration:
                    return self.cancelled
                except BaseException:
                    self.redeliver()
                    raise
                value = error = None
                if type(yielded) is Future or getattr(
                    yielded, "_asyncio_future_blocking", None
                ):
                    # Stand in for the future (see the class docstring).
                    self.waiting_on = yielded
                    self._asyncio_future_blocking = True
                    self.get_loop = yielded.get_loop
                    self.add_done_callback = yielded.add_done_callback
                    yielded = self
                try:
                    value = yield yielded
                except asyncio.CancelledError as exc:
                    future = self.waiting_on
                    if future is not None and future.cancelled() and not self.expired:
                        error = exc  # the operation's own future was cancelled
                    else:
                        # The task's cancellation, deferred: resume the
                        # operation as if nothing happened (its future is done).
                        self.cancelled = self.cancelled or exc
                        self.cancel_requested()
                except BaseException as exc:
                    error = exc
        finally:
            if self.timer is not None:
                self.timer.cancel()
        it.close()
        assert self.cancelled is not None
        yield from self.on_abandon(self.label, self.cancelled).__await__()
        raise self.cancelled

    def redeliver(self) -> None:
        """Request a deferred cancellation again, for the task's next await."""
        if self.cancelled is not None:
            task = asyncio.current_task()
            if task is not None:
                # Keep the count of requests as it was (asyncio.timeout
                # relies on it).
                task.uncancel()
                task.cancel(*self.cancelled.args)
