"""The safety net: sync writes that would escape an open ``async_atomic()`` block.

``await sync_to_async(legacy_helper)()`` inside ``async_atomic()`` runs the
helper in a thread, on Django's *sync* connection: its writes commit on their
own, whatever the block does. The thread inherits the task's context (asgiref
and ``asyncio.to_thread`` copy it), and with it the mark of the open block
(``held_aliases``): this ENGINE's sync cursors look at it before each
statement, and refuse a write to the alias whose block is open (reads pass),
naming the fix. ``ASYNC_BACKEND_ESCAPED_WRITES = "warn"`` makes it a warning
instead. Outside such a block nothing changes: the check is one dict lookup.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

from django.conf import settings
from django.db.backends.postgresql.base import CursorDebugWrapper
from django.db.backends.utils import CursorWrapper
from django.db.transaction import TransactionManagementError

from django_async_backend.db.backends.base.atomic import held_aliases

__all__ = [
    "SETTING",
    "EscapedWriteWarning",
    "GuardedCursorDebugWrapper",
    "GuardedCursorWrapper",
]

SETTING = "ASYNC_BACKEND_ESCAPED_WRITES"

# What counts as a write: the statement's first keyword, or a data-modifying
# statement inside a WITH query.
_WRITE = re.compile(
    r"\s*(?:INSERT|UPDATE|DELETE|MERGE|TRUNCATE|COPY|CREATE|ALTER|DROP|GRANT"
    r"|REVOKE|COMMENT|REFRESH|CLUSTER|REINDEX|VACUUM|LOCK|CALL|DO|IMPORT)\b",
    re.IGNORECASE,
)
_WITH = re.compile(r"\s*WITH\b", re.IGNORECASE)
_MODIFYING = re.compile(r"\b(?:INSERT|UPDATE|DELETE|MERGE)\b", re.IGNORECASE)


class EscapedWriteWarning(UserWarning):
    """A sync write escaped an open async_atomic() block (the "warn" setting)."""


def _is_write(sql: Any) -> bool:
    text = sql if isinstance(sql, str) else str(sql)
    if _WRITE.match(text):
        return True
    return bool(_WITH.match(text) and _MODIFYING.search(text))


def check_escape(db: Any, sql: Any) -> None:
    """Refuse (or warn about) a write that escapes the task's open block."""
    held = held_aliases.get()
    if not held:
        return  # the usual case: no block open where this code was started
    holder = held.get(db.alias)
    if holder is None or not holder.in_atomic_block or not _is_write(sql):
        return
    message = (
        f"This write runs on Django's sync connection for {db.alias!r}, in a "
        "thread started from async code (sync_to_async, asyncio.to_thread), "
        f"while that code's task has an async_atomic() block open on "
        f"{db.alias!r}: it would commit on its own, whatever the block does. "
        "Run the sync code natively, in the block, with `await run_sync(fn, "
        "*args)` (from django_async_backend.db.models), or call it outside "
        "the block."
    )
    if getattr(settings, SETTING, "raise") == "warn":
        warnings.warn(message, EscapedWriteWarning, stacklevel=4)
        return
    raise TransactionManagementError(message)


class _Guarded:
    """The escape check before each statement of a Django cursor wrapper."""

    db: Any

    def execute(self, sql: Any, params: Any = None) -> Any:
        check_escape(self.db, sql)
        return super().execute(sql, params)  # type: ignore[misc]

    def executemany(self, sql: Any, param_list: Any) -> Any:
        check_escape(self.db, sql)
        return super().executemany(sql, param_list)  # type: ignore[misc]

    def copy(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
        """psycopg's ``cursor.copy()``: ``COPY ... FROM STDIN`` writes too."""
        check_escape(self.db, statement)
        # The debug wrapper logs it (Django's postgresql CursorDebugWrapper);
        # the plain one hands it to the driver's cursor, as its __getattr__ does.
        parent = getattr(super(), "copy", None)
        if parent is None:
            return self.cursor.copy(statement, *args, **kwargs)  # type: ignore[attr-defined]
        return parent(statement, *args, **kwargs)


class GuardedCursorWrapper(_Guarded, CursorWrapper):
    """Django's cursor wrapper, with the escape check."""


class GuardedCursorDebugWrapper(_Guarded, CursorDebugWrapper):
    """Django's debug cursor wrapper (the postgresql backend's, which logs
    ``copy()``), with the escape check."""
