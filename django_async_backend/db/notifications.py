"""PostgreSQL's LISTEN/NOTIFY from async code: :func:`notify` and :func:`listen`.

``await notify("orders", payload)`` sends on the task's connection, so
inside ``async_atomic()`` the notification is part of the transaction:
PostgreSQL delivers it at COMMIT, and drops it on rollback (a savepoint's
rollback drops the ones sent inside it). ``async with listen("orders") as
notifications: async for n in notifications: ...`` receives, on the
listener connection that every listener of the alias on this event loop
shares (``connection.listen()``; docs/listen-notify.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import DEFAULT_DB_ALIAS

from django_async_backend.db import async_connections
from django_async_backend.db.backends.postgresql.listen import (
    Notification,
    Notifications,
    check_channel,
    check_payload,
)

if TYPE_CHECKING:
    pass

__all__ = ["Notification", "Notifications", "listen", "notify"]


async def notify(channel: str, payload: str = "", using: str | None = None) -> None:
    """Send ``payload`` on ``channel`` (``pg_notify``, parameters bound).

    ``ValueError`` for a channel that is not an identifier, or a payload of
    more than 7,999 bytes (PostgreSQL's limit).
    """
    statement = "SELECT pg_notify(%s, %s)"
    params = [check_channel(channel), check_payload(payload)]
    async with async_connections[using or DEFAULT_DB_ALIAS].cursor() as cursor:
        await cursor.execute(statement, params)


def listen(
    *channels: str,
    using: str | None = None,
    timeout: float | None = None,
    stop_after: int | None = None,
    reconnect: bool = False,
    max_pending: int = 10_000,
) -> Notifications:
    """``async_connections[using].listen(*channels, ...)``: a listen() block."""
    alias = using or DEFAULT_DB_ALIAS
    connection = async_connections[alias]
    return connection.listen(
        *channels,
        timeout=timeout,
        stop_after=stop_after,
        reconnect=reconnect,
        max_pending=max_pending,
    )
