"""Type handlers for ``django.contrib.postgres`` on async connections.

Django registers them with a ``connection_created`` receiver that queries the
sync connection; this is its native async counterpart.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from psycopg.types import TypeInfo, hstore

# alias -> {type name: [(oid, array oid)]}; the OIDs never change for a database.
_type_oids: dict[str, dict[str, list[tuple[int, int]]]] = {}


async def _fetch_oids(alias: str, connection: Any) -> dict[str, list[tuple[int, int]]]:
    oids = _type_oids.get(alias)
    if oids is None:
        cursor = await connection.execute(
            "SELECT typname, oid, typarray FROM pg_type "
            "WHERE typname IN ('hstore', 'citext')"
        )
        oids = {"hstore": [], "citext": []}
        for name, oid, array_oid in await cursor.fetchall():
            oids[name].append((oid, array_oid))
        _type_oids[alias] = oids
    return oids


async def register_type_handlers(alias: str, connection: Any) -> bool:
    """Register hstore and citext[] loaders when contrib.postgres is installed.

    Return whether a query was sent (it may have begun a transaction).
    """
    if not apps.is_installed("django.contrib.postgres"):
        return False
    queried = alias not in _type_oids
    oids = await _fetch_oids(alias, connection)
    for oid, array_oid in oids["hstore"]:
        hstore.register_hstore(TypeInfo("hstore", oid, array_oid), connection)
    for _, array_oid in oids["citext"]:
        TypeInfo("citext", 0, array_oid).register(connection)
    return queried
