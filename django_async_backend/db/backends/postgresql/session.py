"""Setting a new session up: time zone, role, the type loaders of contrib.postgres.

Run once per new connection: by the wrapper for a connection it opens, and
by a pool's ``configure`` callback for each connection the pool opens (with
the values the pool was opened with).
"""

from __future__ import annotations

from typing import Any

from psycopg import sql as pgsql

from django_async_backend.db.backends.postgresql.types import register_type_handlers

__all__ = ["configure_session"]


async def configure_session(
    connection: Any,
    alias: str,
    timezone_name: str | None,
    role: str | None,
    set_time_zone_sql: str,
) -> bool:
    """Set the session up; tell whether a commit is needed (when not autocommit)."""
    changed = False
    current = connection.info.parameter_status("TimeZone")
    if timezone_name and current != timezone_name:
        await connection.execute(set_time_zone_sql, [timezone_name])
        changed = True
    if role:
        await connection.execute(pgsql.SQL("SET ROLE {}").format(pgsql.Literal(role)))
        changed = True
    queried = await register_type_handlers(alias, connection)
    return changed or queried
