"""Per-event-loop state, and a hook that runs when the loop shuts down.

Async connections and pools are bound to the event loop that created them: a
psycopg ``AsyncConnection`` must not be awaited from another loop. Everything
that outlives a single task (pools, parked persistent connections, the scopes
that still hold connections) therefore lives in a :class:`LoopState` keyed by
the loop, and is closed when that loop shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import sys
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Generator
from typing import Any, TypeVar

from django_async_backend.utils import compat

__all__ = ["LoopState", "loop_state", "shielded", "spawn"]

Closer = Callable[[], Awaitable[None]]
T = TypeVar("T")


class LoopState:
    """What the backend keeps for one event loop."""

    def __init__(self) -> None:
        # alias -> the opening of its psycopg_pool.AsyncConnectionPool (a
        # future, so that concurrent first users wait for the same pool).
        self.pools: dict[str, asyncio.Future[Any]] = {}
        # alias -> connections kept alive between tasks (CONN_MAX_AGE), each
        # with the monotonic time it must be closed at (None: never).
        self.idle: dict[str, list[tuple[Any, float | None]]] = {}
        # Scopes (see db.utils) that still hold connections; released at the
        # latest when the loop shuts down.
        self.scopes: set[Any] = set()
        # Background tasks (connection releases) kept alive until they finish.
        self.tasks: set[asyncio.Task[Any]] = set()
        self._keeper: AsyncGenerator[None, None] | None = None
        # Closes the pools when asyncio cancels every task (keep_pools_closable).
        self._pool_keeper: asyncio.Task[None] | None = None
        # alias -> the listener connection that the listen() blocks on this
        # loop share (db/backends/postgresql/listener.py).
        self.listeners: dict[str, Any] = {}

    @property
    def hook_installed(self) -> bool:
        return self._keeper is not None

    async def install_shutdown_hook(self) -> None:
        """Arrange for :meth:`shutdown` to run when the loop shuts down.

        ``asyncio.run()`` and ``asyncio.Runner`` (uvicorn, unittest's
        IsolatedAsyncioTestCase) call ``loop.shutdown_asyncgens()`` after
        cancelling the remaining tasks but while the loop still runs. A started
        async generator is finalized there, so its ``finally`` clause is the
        one place where connections can still be closed cleanly.
        """
        if self._keeper is not None:
            return
        self._keeper = self._keep()
        await self._keeper.__anext__()

    async def _keep(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        """Close everything registered for this loop; never raise."""
        pending = list(self.tasks)
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        for scope in list(self.scopes):
            await _quietly(scope.release)
        await _quietly(self.close_idle)
        await _quietly(self.close_pools)
        await _quietly(self.close_listeners)

    async def close_idle(self) -> None:
        """Close the connections parked for reuse (CONN_MAX_AGE)."""
        idle, self.idle = self.idle, {}
        for parked in idle.values():
            for connection, _ in parked:
                await _quietly(connection.close)

    async def close_pools(self) -> None:
        """Close the pools opened on this loop."""
        openings, self.pools = list(self.pools.values()), {}
        self._stop_pool_keeper()
        for opening in openings:
            await _close_opening(opening)

    async def close_listeners(self) -> None:
        """Close the listener connections opened on this loop."""
        listeners, self.listeners = list(self.listeners.values()), {}
        for listener in listeners:
            await _quietly(listener.close)

    async def retire_pool(self, alias: str) -> None:
        """Close the pool of ``alias``; the next use opens a new one.

        Its connections in use are closed when given back, and a checkout
        waiting on it gets its connection from the new pool.
        """
        opening = self.pools.pop(alias, None)
        if not self.pools:
            self._stop_pool_keeper()
        if opening is not None:
            await _close_opening(opening, retire=True)

    def keep_pools_closable(self) -> None:
        """Have the pools closed when asyncio cancels every task of the loop.

        ``asyncio.run()`` (and ``asyncio.Runner``) cancel the remaining tasks
        and wait for them before shutting async generators down. psycopg_pool
        workers that were opening a connection swallow that cancellation
        (and wait for their next job for ever): the loop would never get to
        the shutdown hook. This task is cancelled with them and closes the
        pools meanwhile, which stops the workers.
        """
        if self._pool_keeper is None or self._pool_keeper.done():
            loop = asyncio.get_running_loop()
            # A context of its own: nothing of the creating task's.
            keeper = loop.create_task(
                self._close_pools_when_cancelled(),
                name="django_async_backend: closes the pools at loop shutdown",
                context=contextvars.Context(),
            )
            # A loop closed without cancelling its tasks drops it silently,
            # as it drops the pools.
            compat.quiet_when_destroyed(keeper)
            self._pool_keeper = keeper

    async def _close_pools_when_cancelled(self) -> None:
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            if self._pool_keeper is asyncio.current_task():
                self._pool_keeper = None
                await self.close_pools()

    def _stop_pool_keeper(self) -> None:
        """No pool left: the keeper has nothing to close (it exits quietly)."""
        keeper, self._pool_keeper = self._pool_keeper, None
        if keeper is not None and keeper is not asyncio.current_task():
            keeper.cancel()


async def _close_opening(opening: asyncio.Future[Any], retire: bool = False) -> None:
    try:
        pool = await opening
    except Exception:  # it never opened
        return
    pool.retired = retire
    if retire:
        pool.reclaim()  # the connections their holders are not using
    await _close_pool(pool)


async def _close_pool(pool: Any) -> None:
    idle = compat.idle_pool_connections(pool)  # (before close() empties it)
    task = asyncio.current_task()
    cancelling = task.cancelling() if task is not None else 0
    try:
        await pool.close()
    except asyncio.CancelledError:
        # At loop shutdown asyncio has already cancelled the pool's workers,
        # and close() stops on their CancelledError before closing the idle
        # connections: close them here.
        for connection in idle:
            await _quietly(connection.close)
        if task is not None and task.cancelling() > cancelling:
            raise  # this task was cancelled meanwhile


async def _quietly(close: Closer) -> None:
    # Shutdown goes on whatever fails.
    with contextlib.suppress(Exception):
        await close()


_states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopState] = (
    weakref.WeakKeyDictionary()
)


# The last loop asked for and its state: nearly every call is for the same
# loop (a weak reference, so that a closed loop can still be collected).
_last: tuple[weakref.ref[asyncio.AbstractEventLoop], LoopState] | None = None


def loop_state(loop: asyncio.AbstractEventLoop | None = None) -> LoopState:
    """Return the state of ``loop`` (default: the running loop)."""
    global _last
    loop = loop or asyncio.get_running_loop()
    last = _last
    if last is not None and last[0]() is loop:
        return last[1]
    state = _states.get(loop)
    if state is None:
        state = _states[loop] = LoopState()
    _last = (weakref.ref(loop), state)
    return state


def spawn(coro: Awaitable[Any], state: LoopState | None = None) -> asyncio.Future[Any]:
    """Run ``coro`` in the background, holding a reference until it ends."""
    state = state or loop_state()
    task = asyncio.ensure_future(coro)
    state.tasks.add(task)
    task.add_done_callback(state.tasks.discard)
    return task


class _Rest:
    """The rest of a coroutine whose first step has already run."""

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self.coro, self.yielded = coro, yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value = self.coro, self.yielded
        while True:
            try:
                try:
                    sent = yield value
                except BaseException as exc:  # thrown in by the task
                    value = coro.throw(exc)
                else:
                    value = coro.send(sent)
            except StopIteration as stop:
                return stop.value


def start_eagerly(coro: Coroutine[Any, Any, T]) -> tuple[bool, Any]:
    """Run ``coro`` up to its first suspension, right now.

    Return ``(True, result)`` if it finished without suspending (the usual
    case: a pool with an idle connection, a return to an idle pool), else
    ``(False, future)`` for the rest of it, running in a background task.
    Exceptions of the first step propagate. This is what makes shielding
    nearly free: no task, no loop iteration, unless there is a real wait.
    """
    if sys.version_info >= (3, 12):
        # An eager task runs the first step now too, but as itself: what that
        # step binds to the current task (asyncio.timeout, and wait_for, which
        # psycopg_pool's getconn(timeout) uses) binds to the task that goes on
        # running the rest. Run in the caller's task, a pool timeout cancelled
        # the caller instead, and the checkout waited forever (fault
        # scenarios 3 and 4, Python 3.12+).
        task = asyncio.Task(coro, loop=asyncio.get_running_loop(), eager_start=True)
        if task.done():
            return True, task.result()
        state = loop_state()
        state.tasks.add(task)
        task.add_done_callback(state.tasks.discard)
        return False, task
    return _step_in_caller(coro)


def _step_in_caller(coro: Coroutine[Any, Any, T]) -> tuple[bool, Any]:
    """start_eagerly() without a task: the first step runs as the caller.

    For a coroutine that binds nothing to the current task (no
    asyncio.timeout, no wait_for) before it first suspends.
    """
    try:
        yielded = coro.send(None)
    except StopIteration as stop:
        return True, stop.value
    return False, spawn(_Rest(coro, yielded))


async def open_shielded(
    coro: Coroutine[Any, Any, T], close: Callable[[T], Awaitable[Any]]
) -> T:
    """Await the opening of a resource; if cancelled meanwhile, close it later.

    Without this, a connection whose opening is interrupted lives on in the
    interrupted coroutine until the garbage collector finds it.
    """
    done, opening = start_eagerly(coro)
    if done:
        return opening  # type: ignore[no-any-return]
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:

        def discard(done: asyncio.Future[Any]) -> None:
            if not done.cancelled() and done.exception() is None:
                spawn(close(done.result()))

        opening.add_done_callback(discard)
        raise


async def shielded(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` to the end even if the awaiting task is cancelled.

    For giving connections back (a putconn, a rollback, a close): nothing
    there binds to the current task, so the first step runs as the caller,
    with no task even on Python 3.12+ (see start_eagerly), unless it waits.
    """
    done, rest = _step_in_caller(coro)
    if done:
        return rest  # type: ignore[no-any-return]
    return await asyncio.shield(rest)
