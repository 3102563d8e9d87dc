"""Run Django's sync ORM code with every database call awaited natively.

:func:`run_native` runs a sync function (``QuerySet.get``, ``Model.save``
...) in a greenlet of its own, on the event loop's thread, inside the current
asyncio task. When that code needs the database it calls :func:`await_` on a
coroutine of the task's async connection; ``await_`` runs the coroutine right
there as long as it does not have to wait, and otherwise suspends the greenlet
and hands the rest of the coroutine to :func:`run_native`, which awaits it in
the task and switches back in with the result, or throws its exception
(``CancelledError`` included) into the greenlet at the very call, so that
Django's ``with transaction.atomic()`` blocks unwind as in sync code.

No thread is involved: the greenlet only ever runs while the task runs, and
it shares the task's ``contextvars`` context (a ContextVar set inside is seen
by the task afterwards, and the other way round).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Iterator
from typing import Any, TypeVar, cast

from greenlet import getcurrent, greenlet

__all__ = ["BridgeGreenlet", "await_", "in_bridge", "iterate_native", "run_native"]

T = TypeVar("T")


class BridgeGreenlet(greenlet):
    """A greenlet running sync ORM code for :func:`run_native`."""


class _Rest:
    """The rest of a coroutine that has to wait: awaited by the task.

    ``first`` is what the coroutine yielded to wait (a future); the task waits
    on it, then the coroutine is resumed here, in the task.
    """

    __slots__ = ("first", "it")

    def __init__(self, it: Any, first: Any) -> None:
        self.it = it
        self.first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        it, pending = self.it, self.first
        while True:
            try:
                sent = yield pending
            except BaseException as exc:  # thrown by the task: CancelledError
                try:
                    pending = it.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    pending = it.send(sent)
                except StopIteration as stop:
                    return stop.value


class _Yield:
    """A value handed to the task by :func:`iterate_native` (not an await)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def in_bridge() -> bool:
    """Tell whether the caller runs inside :func:`run_native`."""
    return type(getcurrent()) is BridgeGreenlet


def await_(awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` from sync code running inside :func:`run_native`."""
    current = getcurrent()
    if type(current) is not BridgeGreenlet:
        if hasattr(awaitable, "close"):
            awaitable.close()  # no "never awaited" warning on top of the error
        raise RuntimeError(
            "await_() can only be called from code run by run_native(): "
            "this is sync code outside the native async ORM bridge."
        )
    it = awaitable.__await__()
    try:
        first = it.send(None)
    except StopIteration as stop:
        # Finished without waiting (no I/O needed): no switch at all.
        return cast(T, stop.value)
    except BaseException:
        raise
    return cast(T, current.parent.switch(_Rest(it, first)))


async def _drive(gr: BridgeGreenlet, value: Any) -> Any:
    """Serve ``gr``'s awaits until it finishes or hands over a ``_Yield``."""
    while not gr.dead and type(value) is _Rest:
        try:
            sent = await value
        except BaseException as exc:
            gr.parent = getcurrent()
            value = gr.throw(exc)
        else:
            gr.parent = getcurrent()
            value = gr.switch(sent)
    return value


async def run_native(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run sync ``fn(*args, **kwargs)`` with its database I/O awaited natively."""
    current = getcurrent()
    gr = BridgeGreenlet(fn, current)
    gr.gr_context = current.gr_context
    return cast(T, await _drive(gr, gr.switch(*args, **kwargs)))


def _step_batches(iterator: Iterator[Any], size: int) -> None:
    """Inside the greenlet: hand ``iterator``'s items over ``size`` at a time."""
    try:
        while True:
            batch = []
            for item in iterator:
                batch.append(item)
                if len(batch) >= size:
                    break
            stop = getcurrent().parent.switch(_Yield(batch))
            if stop or len(batch) < size:
                return
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


async def iterate_native(
    make_iterator: Callable[[], Iterator[T]], size: int
) -> AsyncGenerator[T, None]:
    """Step a sync iterator natively, ``size`` items per greenlet switch.

    An async generator: one greenlet lives across the whole iteration, and the
    sync iterator is closed inside it (its ``finally`` blocks, such as closing a
    server-side cursor, run natively) when the iteration stops early.
    """
    current = getcurrent()
    gr = BridgeGreenlet(lambda: _step_batches(make_iterator(), size), current)
    gr.gr_context = current.gr_context
    value = await _drive(gr, gr.switch())
    try:
        while not gr.dead:
            for item in value.value:
                yield item
            gr.parent = getcurrent()
            value = await _drive(gr, gr.switch(False))
    finally:
        if not gr.dead:
            gr.parent = getcurrent()
            await _drive(gr, gr.switch(True))
