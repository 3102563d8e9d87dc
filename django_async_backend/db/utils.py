"""The async connection handler: ``async_connections[alias]``.

Each asyncio task drives its own connections. A task's connections live in a
:class:`ConnectionScope` stored in a ContextVar; the first time a task asks
for an alias it gets a scope of its own (a child task inherits its parent's
context, but never drives the parent's connections) and that scope is released
when the task finishes: closed, returned to the pool, or kept for the next
task when CONN_MAX_AGE allows. ``independent_connection()`` opens a nested
scope for one block.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Collection
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.db.utils import load_backend
from django.utils.connection import ConnectionDoesNotExist

from django_async_backend.db.backends.base.atomic import held_aliases
from django_async_backend.db.backends.base.base import (
    current_task,
)
from django_async_backend.utils import compat
from django_async_backend.utils.compat import running_loop, task_of
from django_async_backend.utils.loops import loop_state, shielded, start_eagerly

if TYPE_CHECKING:
    # The one ENGINE with async connections: its wrapper is what users get.
    from django_async_backend.db.backends.postgresql.base import AsyncDatabaseWrapper


class ConnectionScope:
    """The async connections one task drives: one wrapper per alias."""

    def __init__(
        self,
        handler: AsyncConnectionHandler,
        owner: asyncio.Task[Any],
        allowed: Collection[str] | None = None,
    ) -> None:
        self.handler = handler
        self.owner = owner
        self.wrappers: dict[str, AsyncDatabaseWrapper] = {}
        # The aliases a test may use (its `databases`); None: any.
        self.allowed = allowed
        # Shared by the steps of a test (see start_test_scope).
        self.for_test = False
        loop_state().scopes.add(self)

    def get(self, alias: str) -> AsyncDatabaseWrapper:
        wrapper = self.wrappers.get(alias)
        if wrapper is None:
            holder = held_aliases.get().get(alias)
            if holder is not None:
                raise _created_inside_block(alias, holder)
            if self.allowed is not None and alias not in self.allowed:
                raise compat.database_operation_forbidden(
                    f"Database queries to {alias!r} are not allowed in this "
                    f"test. Add {alias!r} to the test case's `databases` to "
                    "ensure proper test isolation and silence this failure."
                )
            wrapper = self.wrappers[alias] = self.handler.create_connection(alias)
            wrapper.owner = self.owner
        return wrapper

    def adopt(self, task: asyncio.Task[Any]) -> None:
        """Hand the connections to ``task``; the previous owner must be done."""
        self.owner = task
        for wrapper in self.wrappers.values():
            wrapper.owner = task

    def release_soon(self) -> None:
        """Release the connections of a finished task.

        Parking needs no I/O and happens now, so that the next task can reuse
        the connection. Closing starts now too (a return to a pool usually
        completes without waiting); whatever has to wait goes on in a
        background task.
        """
        state = loop_state()
        for alias, wrapper in list(self.wrappers.items()):
            if wrapper.park():
                del self.wrappers[alias]
        if self.wrappers:
            start_eagerly(self.release())
        else:
            state.scopes.discard(self)

    async def release(self) -> None:
        """Release every connection (see BaseAsyncDatabaseWrapper.release).

        Called once the owner is done with them (its task finished, the test
        step ended, the block exited): the wrappers' internal release, which
        does not check the task.
        """
        wrappers, self.wrappers = list(self.wrappers.values()), {}
        for wrapper in wrappers:
            await wrapper._release()
        loop_state().scopes.discard(self)

    async def close_all(self) -> None:
        for wrapper in list(self.wrappers.values()):
            await wrapper.close()


def _created_inside_block(alias: str, holder: Any) -> RuntimeError:
    task = current_task()
    state = "holds it" if holder.in_atomic_block else "held it"
    return RuntimeError(
        f"Task {task.get_name()!r} cannot use the async connection {alias!r}: "
        f"it was created inside async_atomic() on {alias!r}, whose transaction "
        f"task {holder.owner_name!r} {state}, and a transaction belongs to one "
        "task. Await the work in that task to make it part of the transaction, "
        "or run it in `async with async_connections.independent_connection():` "
        "to make it independent of the transaction (it commits on its own)."
    )


class IndependentConnection:
    """``async with async_connections.independent_connection():`` (a class:
    cheaper than a generator-based context manager, on a hot path)."""

    __slots__ = ("handler", "held", "scope", "token")

    def __init__(self, handler: AsyncConnectionHandler) -> None:
        self.handler = handler

    async def __aenter__(self) -> None:
        self.scope = ConnectionScope(self.handler, current_task())
        self.token = self.handler._scope.set(self.scope)
        # Nothing in the block is created inside the surrounding transactions.
        self.held = held_aliases.set({})

    async def __aexit__(self, *exc_info: object) -> None:
        held_aliases.reset(self.held)
        self.handler._scope.reset(self.token)
        # Shielded: a second cancellation must not strand a connection.
        await shielded(self.scope.release())


@functools.cache
def async_wrapper_class(engine: str) -> Any:
    """The ENGINE's AsyncDatabaseWrapper class, or None (imported once)."""
    return getattr(load_backend(engine), "AsyncDatabaseWrapper", None)


def is_async_alias(alias: str) -> bool:
    """Tell whether DATABASES[alias] has async connections (this package's ENGINE).

    The one answer, for the system checks, the native ORM and the bridge. An
    alias missing from DATABASES counts as one: Django's own code, run
    natively, then raises ConnectionDoesNotExist for it, as it would in its
    thread.
    """
    settings_dict = connections.settings.get(alias)
    return (
        settings_dict is None
        or async_wrapper_class(settings_dict["ENGINE"]) is not None
    )


class AsyncConnectionHandler:
    """Give each task its own async connection per alias."""

    def __init__(self) -> None:
        self._scope: ContextVar[ConnectionScope | None] = ContextVar(
            "django_async_backend_scope", default=None
        )

    @property
    def settings(self) -> dict[str, dict[str, Any]]:
        # Django's configured DATABASES: the very dicts the sync wrappers use,
        # so a test runner switching NAME to the test database is followed.
        return connections.settings

    def create_connection(self, alias: str) -> AsyncDatabaseWrapper:
        if alias not in self.settings:
            raise ConnectionDoesNotExist(
                f"The async connection {alias!r} doesn't exist: DATABASES "
                f"defines {', '.join(map(repr, self.settings)) or 'no alias'}."
            )
        settings_dict = self.settings[alias]
        wrapper_class = async_wrapper_class(settings_dict["ENGINE"])
        if wrapper_class is None:
            raise ImproperlyConfigured(
                f"DATABASES[{alias!r}] uses ENGINE {settings_dict['ENGINE']!r}, "
                "which has no async connections. Set its ENGINE to "
                "'django_async_backend.db.backends.postgresql' to use "
                f"async_connections[{alias!r}]."
            )
        return wrapper_class(settings_dict, alias)  # type: ignore[no-any-return]

    def __getitem__(self, alias: str) -> AsyncDatabaseWrapper:
        scope = self._scope.get()
        if scope is not None and scope.owner is task_of(running_loop()):
            wrapper = scope.wrappers.get(alias)
            if wrapper is not None:
                return wrapper  # the usual case, first
        else:
            scope = self._start_task_scope(current_task())
        return scope.get(alias)

    def _start_task_scope(self, task: asyncio.Task[Any]) -> ConnectionScope:
        """Give ``task`` a scope of its own, released when the task is done."""
        scope = ConnectionScope(self, task)
        self._scope.set(scope)
        task.add_done_callback(lambda _: scope.release_soon())
        return scope

    def current_scope(self) -> ConnectionScope | None:
        """The scope of the current context, whoever owns it."""
        return self._scope.get()

    def start_test_scope(self, aliases: Collection[str]) -> ConnectionScope:
        """Open a scope that outlives its task, for a test's steps to share.

        Each step's task takes it over with :meth:`adopt_scope`; it is
        released by the test case, not when a task ends.
        """
        scope = ConnectionScope(self, current_task(), allowed=set(aliases))
        scope.for_test = True
        self._scope.set(scope)
        return scope

    def adopt_scope(self) -> None:
        """Let the current task take over the context's test scope."""
        scope = self._scope.get()
        if scope is not None and scope.for_test:
            scope.adopt(current_task())

    def all(self) -> list[AsyncDatabaseWrapper]:
        """Return the current task's connections (those already created)."""
        scope = self._scope.get()
        if scope is None or scope.owner is not asyncio.current_task():
            return []
        return list(scope.wrappers.values())

    def independent_connection(self) -> IndependentConnection:
        """Give the block fresh connections for every alias it uses.

        ``async with async_connections.independent_connection():``. The outer
        connections are restored afterwards; the block's own are released
        (closed, or returned to the pool) when it exits.
        """
        return IndependentConnection(self)

    async def close_all(self) -> None:
        """Close this task's connections and the ones parked for reuse.

        As Django's ``connections.close_all()``: a pooled connection goes back
        to its pool, and no pool is closed, since other tasks use it. Pools
        close when the event loop shuts down, or with
        ``await async_connections[alias].close_pool()``.
        """
        scope = self._scope.get()
        if scope is not None and scope.owner is asyncio.current_task():
            await scope.close_all()
        await loop_state().close_idle()
