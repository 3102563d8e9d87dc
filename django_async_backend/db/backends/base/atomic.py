"""The decisions of an atomic block, without I/O.

Entering or leaving ``async_atomic`` changes the connection's transaction
state exactly as Django's ``Atomic.__enter__``/``__exit__`` do, and sends at
most one statement. These functions make the state change and name the
statement (a :class:`Step`); ``AsyncAtomic`` in ``db/transaction.py`` sends it.
"""

from __future__ import annotations

import enum
from contextvars import ContextVar
from typing import Any

# The aliases whose async_atomic() block is open in this context. A child task
# inherits the value it had when it was created: that is how the connection
# handler knows the child was spawned inside its parent's transaction.
atomic_aliases: ContextVar[frozenset[str]] = ContextVar(
    "django_async_backend_atomic_aliases", default=frozenset()
)


class Step(enum.Enum):
    """The SQL an atomic block sends when it is entered or left."""

    NOTHING = "nothing"
    BEGIN = "begin"
    SAVEPOINT = "savepoint"
    RELEASE = "release savepoint"
    COMMIT = "commit"
    ROLLBACK_TO = "rollback to savepoint"
    ROLLBACK = "rollback"


def plan_enter(connection: Any, savepoint: bool) -> Step:
    """Update the state for a block being entered; return what to send.

    The connection must be open, so that ``connection.autocommit`` is known.
    """
    if not connection.in_atomic_block:
        # Reset state when entering an outermost atomic block.
        connection.commit_on_exit = True
        connection.needs_rollback = False
        if not connection.autocommit:
            # Already in a transaction managed by hand: treat it as an atomic
            # block, and leave it open on exit.
            connection.in_atomic_block = True
            connection.commit_on_exit = False
    if not connection.in_atomic_block:
        return Step.BEGIN
    if savepoint and not connection.needs_rollback:
        return Step.SAVEPOINT
    connection.savepoint_ids.append(None)
    return Step.NOTHING


def plan_exit(connection: Any, failed: bool) -> tuple[Step, str | None]:
    """Update the state for a block being left; return what to send.

    ``failed`` tells whether the block raised.
    """
    if connection.in_atomic_block:
        connection.atomic_blocks.pop()
    if connection.savepoint_ids:
        sid = connection.savepoint_ids.pop()
    else:
        # The outermost block: unset the flag early to allow commit/rollback.
        sid = None
        connection.in_atomic_block = False
    if connection.closed_in_transaction:
        # The server rolls back by itself; wait for the outermost block.
        return Step.NOTHING, sid
    if not failed and not connection.needs_rollback:
        if not connection.in_atomic_block:
            return Step.COMMIT, sid
        return (Step.RELEASE if sid is not None else Step.NOTHING), sid
    # Set again below if no savepoint allows rolling back at this level.
    connection.needs_rollback = False
    if not connection.in_atomic_block:
        return Step.ROLLBACK, sid
    if sid is None:
        connection.needs_rollback = True
        return Step.NOTHING, sid
    return Step.ROLLBACK_TO, sid


def leaving_transaction(connection: Any) -> bool:
    """Tell whether this exit ends the transaction opened by the outermost block."""
    return not connection.in_atomic_block


def leaving_manual_transaction(connection: Any) -> bool:
    """Tell whether this exit ends the outermost block of a manual transaction."""
    return (
        connection.in_atomic_block
        and not connection.savepoint_ids
        and not connection.commit_on_exit
    )
