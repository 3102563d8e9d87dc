"""Sync faces of the task's async connection, for Django's ORM code.

Inside :func:`~django_async_backend.utils.bridge.run_native`,
``django.db.connections[alias]`` (and ``django.db.connection``) return a
:class:`SyncConnection` over ``async_connections[alias]`` for the aliases
that use this ENGINE: attribute reads and writes go to the async wrapper
(``ops``, ``features``, ``in_atomic_block``, ``savepoint_ids`` ... Django's
names, so Django's own ``Atomic`` drives it), and its coroutine methods become
sync calls through ``await_``. Outside the bridge, and for other ENGINEs,
``connections[alias]`` is Django's, untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any

from django.db import connections
from django.db.utils import ConnectionHandler
from greenlet import getcurrent

from django_async_backend.db import async_connections
from django_async_backend.db.utils import is_async_alias
from django_async_backend.utils.bridge import BridgeGreenlet, await_

__all__ = ["SyncConnection", "SyncCursor", "install"]

# The class data of Django's sync wrapper that the SQL compilers read from
# ``ops.connection`` (the async wrapper itself).
SYNC_CLASS_DATA = (
    "data_types",
    "data_types_suffix",
    "data_type_check_constraints",
    "operators",
    "pattern_esc",
    "pattern_ops",
)
_prepared: set[type] = set()


def _prepare_wrapper_class(cls: type) -> None:
    """Give an async wrapper class the class data of its sync twin."""
    sync_class = getattr(cls, "sync_wrapper_class", None)
    for name in SYNC_CLASS_DATA:
        if not hasattr(cls, name) and hasattr(sync_class, name):
            setattr(cls, name, getattr(sync_class, name))
    _prepared.add(cls)


class SyncCursor:
    """A sync cursor over an (open) async cursor wrapper."""

    __slots__ = ("_async",)

    def __init__(self, async_cursor: Any) -> None:
        self._async = async_cursor

    def execute(self, sql: Any, params: Any = None) -> SyncCursor:
        await_(self._async.execute(sql, params))
        return self

    def executemany(self, sql: Any, param_list: Sequence[Any]) -> SyncCursor:
        await_(self._async.executemany(sql, param_list))
        return self

    def fetchone(self) -> Any:
        return await_(self._async.fetchone())

    def fetchmany(self, size: int = 0) -> list[Any]:
        return await_(self._async.fetchmany(size))

    def fetchall(self) -> list[Any]:
        return await_(self._async.fetchall())

    def close(self) -> None:
        await_(self._async.close())

    @property
    def rowcount(self) -> int:
        return int(self._async.rowcount)

    @property
    def description(self) -> Any:
        return self._async.description

    @property
    def closed(self) -> bool:
        return bool(self._async.closed)

    def __iter__(self) -> Iterator[Any]:
        while rows := self.fetchmany(100):
            yield from rows

    def __getattr__(self, name: str) -> Any:
        # The driver cursor's plain attributes (query, statusmessage ...).
        return getattr(self._async.cursor, name)

    def __enter__(self) -> SyncCursor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Errors while closing are not useful to the caller (#17671).
        with contextlib.suppress(self._async.db.Database.Error):
            self.close()


def _sync(name: str) -> Callable[..., Any]:
    def method(self: SyncConnection, *args: Any, **kwargs: Any) -> Any:
        wrapper = object.__getattribute__(self, "_wrapper")
        return await_(getattr(wrapper, name)(*args, **kwargs))

    method.__name__ = name
    return method


class SyncConnection:
    """Django's sync connection API over one async wrapper (no thread)."""

    # The wrapper's constants, read many times per query: kept here.
    CONSTANTS = ("ops", "features", "vendor", "alias", "settings_dict")
    __slots__ = ("_introspection", "_wrapper", *CONSTANTS)

    def __init__(self, wrapper: Any) -> None:
        object.__setattr__(self, "_wrapper", wrapper)
        for name in self.CONSTANTS:
            object.__setattr__(self, name, getattr(wrapper, name))

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "_wrapper"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(object.__getattribute__(self, "_wrapper"), name, value)

    def __delattr__(self, name: str) -> None:
        delattr(object.__getattribute__(self, "_wrapper"), name)

    def __repr__(self) -> str:
        return f"<SyncConnection over {self._wrapper!r}>"

    @property
    def introspection(self) -> Any:
        """Django's introspection class, querying through this connection."""
        try:
            return object.__getattribute__(self, "_introspection")
        except AttributeError:
            introspection = self._wrapper.sync_wrapper_class.introspection_class(self)
            object.__setattr__(self, "_introspection", introspection)
            return introspection

    def cursor(self) -> SyncCursor:
        cursor = self._wrapper.cursor()
        await_(cursor.__aenter__())
        return SyncCursor(cursor)

    def chunked_cursor(self) -> SyncCursor:
        cursor = self._wrapper.chunked_cursor()
        await_(cursor.__aenter__())
        return SyncCursor(cursor)

    def validate_thread_sharing(self) -> None:
        self._wrapper.validate_task_sharing()

    ensure_connection = _sync("ensure_connection")
    connect = _sync("connect")
    close = _sync("close")
    get_autocommit = _sync("get_autocommit")
    set_autocommit = _sync("set_autocommit")
    on_commit = _sync("on_commit")
    run_and_clear_commit_hooks = _sync("run_and_clear_commit_hooks")
    check_constraints = _sync("check_constraints")
    is_usable = _sync("is_usable")
    close_if_health_check_failed = _sync("close_if_health_check_failed")
    close_if_unusable_or_obsolete = _sync("close_if_unusable_or_obsolete")
    get_database_version = _sync("get_database_version")
    check_database_version_supported = _sync("check_database_version_supported")

    # What an interrupted statement leaves behind is decided by the async
    # wrapper's own methods, for this face too (TransactionMixin._control).
    commit = _sync("commit")
    rollback = _sync("rollback")
    savepoint = _sync("savepoint")
    savepoint_commit = _sync("savepoint_commit")
    savepoint_rollback = _sync("savepoint_rollback")


def facade(alias: str) -> SyncConnection:
    """The current task's connection for ``alias``, sync face (no I/O).

    As with Django's ``connections[alias]``, a lookup never connects: the
    connection opens at its first query (or when the server version is
    first needed), so that a connection closed inside an atomic block stays
    closed until the outermost block has exited, as Django's invariant says.
    """
    wrapper: Any = async_connections[alias]
    face = wrapper.__dict__.get("_sync_facade")
    if face is None:
        if type(wrapper) not in _prepared:
            _prepare_wrapper_class(type(wrapper))
        face = wrapper.__dict__["_sync_facade"] = SyncConnection(wrapper)
    return face  # type: ignore[no-any-return]


_original_getitem: Callable[[Any, str], Any] | None = None


def _getitem(self: ConnectionHandler, alias: str) -> Any:
    if (
        type(getcurrent()) is BridgeGreenlet
        and self is connections
        and alias in self.settings
        and is_async_alias(alias)
    ):
        return facade(alias)
    assert _original_getitem is not None
    return _original_getitem(self, alias)


def install() -> None:
    """Route ``connections[alias]`` to the facade inside the bridge (once)."""
    global _original_getitem
    if _original_getitem is None:
        _original_getitem = ConnectionHandler.__getitem__
        setattr(ConnectionHandler, "__getitem__", _getitem)  # noqa: B010
