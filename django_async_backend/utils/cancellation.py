"""Let an operation already on the wire finish when its task is cancelled.

A ``COMMIT`` whose answer is on its way decides the fate of a transaction:
interrupting it (psycopg then cancels the statement on the server) leaves
the client unable to tell whether it committed. :func:`run_to_end` awaits an
operation in the current task, but defers a cancellation that arrives
meanwhile until the operation has finished, so that its outcome is known;
the caller then records that outcome and raises the cancellation. If the
operation does not finish within ``grace`` seconds of the first cancellation,
it is abandoned (:class:`Abandoned`) and the caller closes the connection.

How: the task is made to wait on a stand-in for each future the operation
waits on. The stand-in forwards everything to the future except
``cancel()``, which it refuses; asyncio then delivers the cancellation to the
task once the future is done, at the very point where the operation would
resume, and :func:`run_to_end` resumes the operation instead. No extra task,
no extra loop iteration: this is cheap enough for every transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

__all__ = ["Abandoned", "run_to_end"]

T = TypeVar("T")


class Abandoned(Exception):
    """The operation did not finish within its grace period after a cancellation."""

    def __init__(self, cancelled: asyncio.CancelledError) -> None:
        super().__init__("abandoned after a cancellation")
        self.cancelled = cancelled


class _StandIn:
    """What the task waits on instead of ``future``; it refuses cancel()."""

    __slots__ = ("_asyncio_future_blocking", "future", "guard")

    def __init__(self, future: Any, guard: _Guard) -> None:
        self._asyncio_future_blocking = True
        self.future = future
        self.guard = guard

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self.future.get_loop()  # type: ignore[no-any-return]

    def add_done_callback(
        self, fn: Callable[[Any], object], *, context: Any = None
    ) -> None:
        self.future.add_done_callback(fn, context=context)

    def remove_done_callback(self, fn: Callable[[Any], object]) -> int:
        return self.future.remove_done_callback(fn)  # type: ignore[no-any-return]

    def done(self) -> bool:
        return bool(self.future.done())

    def result(self) -> Any:
        return self.future.result()

    def cancel(self, msg: Any = None) -> bool:
        self.guard.cancel_requested()
        return False  # the task delivers the cancellation once we are done


class _Guard:
    """The state of one :func:`run_to_end`: deferred cancellation, grace timer."""

    __slots__ = ("cancelled", "expired", "grace", "timer", "waiting_on")

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.cancelled: asyncio.CancelledError | None = None
        self.expired = False
        self.timer: asyncio.TimerHandle | None = None
        self.waiting_on: Any = None

    def cancel_requested(self) -> None:
        if self.timer is None:
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(self.grace, self.expire)

    def expire(self) -> None:
        self.expired = True
        if self.waiting_on is not None:
            # Wake the task up: it abandons the operation.
            self.waiting_on.cancel()

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()


def _run(awaitable: Awaitable[T], guard: _Guard) -> Generator[Any, Any, T]:
    it = awaitable.__await__()
    value: Any = None
    error: BaseException | None = None
    try:
        while True:
            if guard.expired:
                it.close()
                assert guard.cancelled is not None
                raise Abandoned(guard.cancelled)
            try:
                yielded = it.send(value) if error is None else it.throw(error)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            value = error = None
            if getattr(yielded, "_asyncio_future_blocking", None):
                guard.waiting_on = yielded
                yielded = _StandIn(yielded, guard)
            try:
                value = yield yielded
            except asyncio.CancelledError as exc:
                future = guard.waiting_on
                if future is not None and future.cancelled() and not guard.expired:
                    error = exc  # the operation's own future was cancelled
                else:
                    # The task's cancellation, deferred: resume the operation
                    # as if nothing happened (its future is done).
                    guard.cancelled = guard.cancelled or exc
                    guard.cancel_requested()
            except BaseException as exc:
                error = exc
            finally:
                guard.waiting_on = None
    finally:
        guard.stop()


async def run_to_end(
    awaitable: Awaitable[T], grace: float
) -> tuple[T, asyncio.CancelledError | None]:
    """Await ``awaitable`` to its end in this task, even if it is cancelled.

    Return its result and the cancellation that arrived meanwhile (None if
    none did), for the caller to raise once it has recorded the outcome. If
    the awaitable raises while a cancellation is deferred, its exception
    propagates and the cancellation is requested again, to be delivered at
    the task's next await. Raise :class:`Abandoned` if it has not finished
    ``grace`` seconds after the first cancellation (it is then closed).
    """
    guard = _Guard(grace)
    try:
        result = await _Awaiter(awaitable, guard)
    except Abandoned:
        raise
    except BaseException:
        if guard.cancelled is not None:
            task = asyncio.current_task()
            if task is not None:
                # Keep the count of requests as it was (asyncio.timeout
                # relies on it), and deliver it at the next await.
                task.uncancel()
                task.cancel(*guard.cancelled.args)
        raise
    return result, guard.cancelled


class _Awaiter:
    """Make the generator of :func:`_run` awaitable."""

    __slots__ = ("awaitable", "guard")

    def __init__(self, awaitable: Awaitable[Any], guard: _Guard) -> None:
        self.awaitable = awaitable
        self.guard = guard

    def __await__(self) -> Generator[Any, Any, Any]:
        return _run(self.awaitable, self.guard)
