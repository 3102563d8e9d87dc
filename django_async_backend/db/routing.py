"""Database routing for async code: Django's routers, pinned to transactions.

Code that asks for a connection by model (as the ORM does) picks the alias
with Django's ``DATABASE_ROUTERS`` through ``django.db.router``, exactly as in
sync code::

    from django_async_backend.db import async_connections, routing

    alias = routing.db_for_read(Account, instance=account)
    async with async_connections[alias].cursor() as cursor: ...

One thing differs from Django: a read is **pinned** to the write alias while
the current task has an open transaction there (an ``async_atomic()`` block,
or ``AUTOCOMMIT``/``set_autocommit(False)``). Inside a transaction, code must
read its own writes and the snapshot it locks; a replica, which lags behind
and is another session anyway, would show neither. Outside a transaction, and
in other tasks (even children created inside the block, which cannot join the
transaction), reads go where the routers say.

``pinned_alias(read_alias, write_alias)`` is the decision alone (no router,
no I/O), for callers that already asked the routers.
"""

from __future__ import annotations

import asyncio
from typing import Any

from django.db import router

from django_async_backend.db import async_connections

__all__ = ["db_for_read", "db_for_write", "in_transaction", "pinned_alias"]


def in_transaction(alias: str) -> bool:
    """Tell whether the current task has a transaction open on ``alias``.

    Only the connection this task already drives counts; no I/O, and no
    connection is created.
    """
    scope = async_connections.current_scope()
    if scope is None:
        return False
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return False
    if scope.owner is not task:
        # Inherited from a parent task: not this task's transaction.
        return False
    wrapper = scope.wrappers.get(alias)
    if wrapper is None or wrapper.connection is None:
        return False
    return bool(wrapper.in_atomic_block or not wrapper.autocommit)


def pinned_alias(read_alias: str, write_alias: str) -> str:
    """Return the alias a read should use, given where writes go.

    ``write_alias`` when the current task has a transaction open on it (see
    the module docstring), else ``read_alias``.
    """
    if read_alias != write_alias and in_transaction(write_alias):
        return write_alias
    return read_alias


def db_for_read(model: Any, **hints: Any) -> str:
    """The alias to read ``model`` from: the routers' choice, pinned.

    Same arguments as ``django.db.router.db_for_read`` (``instance=...`` and
    other hints).
    """
    return pinned_alias(
        router.db_for_read(model, **hints), router.db_for_write(model, **hints)
    )


def db_for_write(model: Any, **hints: Any) -> str:
    """The alias to write ``model`` to: ``django.db.router.db_for_write``."""
    return str(router.db_for_write(model, **hints))
