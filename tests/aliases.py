"""Test helper: a DATABASES alias that exists for one test only."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connections

import support  # noqa: F401 - configures Django


@contextmanager
def temporary_alias(
    name: str, base: str = "default", **overrides: Any
) -> Iterator[str]:
    """Add DATABASES[name], a copy of ``base`` with ``overrides``.

    ``OPTIONS`` in overrides replaces the base options (merged into a copy).
    """
    settings_dict = copy.deepcopy(connections.settings[base])
    options = overrides.pop("OPTIONS", None)
    settings_dict.update(overrides)
    if options is not None:
        settings_dict["OPTIONS"] = {**settings_dict["OPTIONS"], **options}
    connections.settings[name] = settings_dict
    try:
        yield name
    finally:
        del connections.settings[name]


async def backend_pid(connection: Any) -> int:
    """The server process id of an async wrapper's session."""
    async with connection.cursor() as cursor:
        await cursor.execute("SELECT pg_backend_pid()")
        row = await cursor.fetchone()
    return int(row[0])
