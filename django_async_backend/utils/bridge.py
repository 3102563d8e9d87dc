"""Run Django's sync ORM code with every database call awaited natively.

:func:`run_native` runs a sync function (``QuerySet.get``, ``Model.save``
...) in a greenlet of its own, on the event loop's thread, inside the current
asyncio task. When that code needs the database it calls :func:`await_` on a
coroutine of the task's async connection. ``await_`` steps the coroutine
right there, inside the greenlet; each time the coroutine has to wait (on a
future), the greenlet switches to :func:`run_native`, which waits on that
future in the task and switches back in with the outcome. A cancellation of
the task is thrown into the coroutine at the very await it was waiting at,
so that Django's ``with transaction.atomic()`` blocks unwind as in sync code.

So the whole of an awaited coroutine always runs inside the greenlet:
whether code runs "in the bridge" (:func:`in_bridge`) is a property of the
call, never of timing (of whether an earlier await happened to suspend).
Only the futures cross over to the task. A coroutine that finishes without
waiting costs no switch at all.

No thread is involved: the greenlet only ever runs while the task runs, and
it shares the task's ``contextvars`` context (a ContextVar set inside is seen
by the task afterwards, and the other way round).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Iterator
from types import CoroutineType
from typing import Any, TypeVar, cast

from greenlet import getcurrent, greenlet

__all__ = [
    "BridgeGreenlet",
    "await_",
    "before_first_run",
    "in_bridge",
    "iterate_native",
    "run_native",
]

T = TypeVar("T")


class BridgeGreenlet(greenlet):  # type: ignore[misc]  # greenlet has no types
    """A greenlet running sync ORM code for :func:`run_native`."""


class _Wait:
    """A future that a coroutine inside the greenlet waits on, for the task."""

    __slots__ = ("future",)

    def __init__(self, future: Any) -> None:
        self.future = future

    def __await__(self) -> Generator[Any, Any, Any]:
        return (yield self.future)


class _Yield:
    """A value handed to the task by :func:`iterate_native` (not an await)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


# Run once, before the bridge first runs code: the hooks that route Django's
# connections and signals to it (django_async_backend.switch registers them), so that
# a project pays for them only if it uses the bridge.
_before_first_run: list[Callable[[], object]] = []


def before_first_run(hook: Callable[[], object]) -> None:
    """Have ``hook`` called once, before the bridge first runs sync code."""
    _before_first_run.append(hook)


def _first_run() -> None:
    hooks = list(_before_first_run)
    _before_first_run.clear()
    for hook in hooks:
        hook()


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
    # A coroutine is stepped directly (its __await__() wrapper costs a call).
    it: Any = awaitable if type(awaitable) is CoroutineType else awaitable.__await__()
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            future = it.send(value) if error is None else it.throw(error)
        except StopIteration as stop:
            return cast(T, stop.value)
        try:
            value, error = current.parent.switch(_Wait(future)), None
        except BaseException as exc:  # thrown in by the task: CancelledError
            value, error = None, exc


async def _drive(gr: BridgeGreenlet, value: Any) -> Any:
    """Serve ``gr``'s waits until it finishes or hands over a ``_Yield``."""
    while not gr.dead and type(value) is _Wait:
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
    if _before_first_run:
        _first_run()
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
    if _before_first_run:
        _first_run()
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
