"""The algorithm of an atomic block, without I/O.

:func:`enter` and :func:`exit` are Django's ``Atomic.__enter__`` and
``Atomic.__exit__`` (``django/db/transaction.py``, whose docstring explains
the algorithm) line by line, written as generators: where Django calls a
connection method that talks to the server (``commit()``,
``savepoint_rollback(sid)``, ``set_autocommit(True)`` ...), they yield that
method's coroutine, not started, and get back its result, or its exception
thrown in at that very line. So the whole protocol, Django's error ladder included (a
failed commit rolls back, a failed rollback closes the connection, the
user's exception is never shadowed), reads in one place, and
``AsyncAtomic`` (``db/transaction.py``) is a shell that awaits the calls, as
psycopg's ``AsyncTransaction`` is a shell around ``BaseTransaction``.

What an *interrupted* statement leaves behind is not decided here: the
wrapper's ``commit()``, ``rollback()`` and ``savepoint*()`` methods let a
statement already sent finish even when the task is cancelled (see
``TransactionMixin._control``), for these blocks and for Django's own
``Atomic`` run natively alike. A cancellation thus reaches these generators
only after the statement's outcome is known, like any other exception.
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator, Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

from django.db import DatabaseError, Error

__all__ = ["Plan", "enter", "exit", "held_aliases"]

# The aliases whose transaction a block opened in this context, each with the
# wrapper that holds it. A task inherits the value its creator had: that is
# how the connection handler knows a task was created inside a block (see
# db.utils.ConnectionScope.get), whether the block is still open or not.
held_aliases: ContextVar[Mapping[str, Any]] = ContextVar(
    "django_async_backend_held_aliases", default=MappingProxyType({})
)


# Yields the coroutines of connection methods, for the caller to await.
Plan = Generator[Coroutine[Any, Any, Any], Any, None]


def enter(connection: Any, atomic: Any) -> Plan:
    """Enter an atomic block: Django's ``Atomic.__enter__``."""
    if (
        atomic.durable
        and connection.atomic_blocks
        and not connection.atomic_blocks[-1]._from_testcase
    ):
        raise RuntimeError(
            "A durable atomic block cannot be nested within another atomic block."
        )
    if not connection.in_atomic_block:
        # Reset state when entering an outermost atomic block.
        connection.commit_on_exit = True
        connection.needs_rollback = False
        # Django: `if not connection.get_autocommit():`, without its await
        # when connected.
        if connection.connection is None or connection.connection.closed:
            yield connection.ensure_connection()
        if not connection.autocommit:
            # Pretend we're already in an atomic block to bypass the code
            # that disables autocommit to enter a transaction, and make a
            # note to deal with this case in exit().
            connection.in_atomic_block = True
            connection.commit_on_exit = False

    if connection.in_atomic_block:
        # We're already in a transaction; create a savepoint, unless we
        # were told not to or we're already in a transaction that's going
        # to be rolled back.
        if atomic.savepoint and not connection.needs_rollback:
            try:
                sid = yield connection.savepoint()
            except DatabaseError:
                # A failed SAVEPOINT aborts the transaction: the enclosing
                # block must roll back rather than send a COMMIT.
                connection.needs_rollback = True
                raise
            connection.savepoint_ids.append(sid)
        else:
            connection.savepoint_ids.append(None)
    else:
        try:
            yield connection.set_autocommit(
                False, force_begin_transaction_with_broken_autocommit=True
            )
        except BaseException:
            if connection.connection is not None and not connection.autocommit:
                # It was turned off before the cancellation landed: turn it
                # back on, or the task's next block is a manual transaction.
                yield connection.set_autocommit(True)
            raise
        connection.in_atomic_block = True

    if connection.in_atomic_block:
        connection.atomic_blocks.append(atomic)
        if len(connection.atomic_blocks) == 1:
            # A new mapping each time (never mutated): tasks copy the context.
            connection.atomic_token = held_aliases.set(
                {**held_aliases.get(), connection.alias: connection}
            )


def exit(connection: Any, atomic: Any, failed: bool) -> Plan:
    """Leave an atomic block: Django's ``Atomic.__exit__``.

    ``failed`` tells whether the block raised.
    """
    if connection.in_atomic_block:
        connection.atomic_blocks.pop()
        if not connection.atomic_blocks:
            forget_held_alias(connection)

    # Prematurely unset this flag to allow using commit or rollback.
    sid: str | None = None
    if connection.savepoint_ids:
        sid = connection.savepoint_ids.pop()
    else:
        connection.in_atomic_block = False

    try:
        if connection.closed_in_transaction:
            # The database will perform a rollback by itself.
            # Wait until we exit the outermost block.
            pass

        elif not failed and not connection.needs_rollback:
            if connection.in_atomic_block:
                # Release savepoint if there is one
                if sid is not None:
                    try:
                        yield connection.savepoint_commit(sid)
                    except DatabaseError:
                        try:
                            yield connection.savepoint_rollback(sid)
                            # The savepoint won't be reused. Release it to
                            # minimize overhead for the database server.
                            yield connection.savepoint_commit(sid)
                        except Error:
                            # If rolling back to a savepoint fails, mark for
                            # rollback at a higher level and avoid shadowing
                            # the original exception.
                            connection.needs_rollback = True
                        raise
            else:
                # Commit transaction
                try:
                    yield connection.commit()
                except DatabaseError:
                    try:
                        yield connection.rollback()
                    except Error:
                        # An error during rollback means that something
                        # went wrong with the connection. Drop it.
                        yield connection.close()
                    raise
        else:
            # This flag will be set to True again if there isn't a savepoint
            # allowing to perform the rollback at this level.
            connection.needs_rollback = False
            if connection.in_atomic_block:
                # Roll back to savepoint if there is one, mark for rollback
                # otherwise.
                if sid is None:
                    connection.needs_rollback = True
                else:
                    try:
                        yield connection.savepoint_rollback(sid)
                        # The savepoint won't be reused. Release it to
                        # minimize overhead for the database server.
                        yield connection.savepoint_commit(sid)
                    except Error:
                        # If rolling back to a savepoint fails, mark for
                        # rollback at a higher level and avoid shadowing
                        # the original exception.
                        connection.needs_rollback = True
            else:
                # Roll back transaction
                try:
                    yield connection.rollback()
                except Error:
                    # An error during rollback means that something
                    # went wrong with the connection. Drop it.
                    yield connection.close()

    finally:
        # Outermost block exit when autocommit was enabled.
        if not connection.in_atomic_block:
            if connection.closed_in_transaction:
                connection.connection = None
            else:
                yield connection.set_autocommit(True)
        # Outermost block exit when autocommit was disabled.
        elif not connection.savepoint_ids and not connection.commit_on_exit:
            if connection.closed_in_transaction:
                connection.connection = None
            else:
                connection.in_atomic_block = False


def forget_held_alias(connection: Any) -> None:
    """Undo the outermost block's mark in the context (see held_aliases)."""
    token, connection.atomic_token = connection.atomic_token, None
    if token is None:
        return
    try:
        held_aliases.reset(token)
    except ValueError:  # set in another context (a test case's class set-up)
        held = dict(held_aliases.get())
        held.pop(connection.alias, None)
        held_aliases.set(held)
