"""Calling on_commit callbacks: what the wrapper accepts, and how it runs them.

``validate_callback`` refuses what cannot be called (naming what to write
instead); ``run_commit_hook`` awaits an async callback in the task and runs a
sync one inside the native bridge, logging a robust one's failure as Django
does.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction

from django_async_backend.utils.bridge import in_bridge, run_native

logger = logging.getLogger("django.db.backends.base")

__all__ = ["run_commit_hook", "validate_callback"]


def validate_callback(func: Any) -> None:
    """Refuse what on_commit() cannot call, naming what to write instead."""
    if inspect.iscoroutine(func):
        func.close()  # no "never awaited" warning on top of the error
        raise TypeError(
            "on_commit() takes a function, not a coroutine object: write "
            "on_commit(send_receipt) or on_commit(functools.partial("
            "send_receipt, order)), not on_commit(send_receipt(order))."
        )
    if not callable(func):
        raise TypeError(
            f"on_commit()'s callback must be a callable, not {func!r}: pass "
            "the function (sync or async) to call after the commit."
        )


async def run_commit_hook(
    func: Callable[[], Any], robust: bool, during: str = ""
) -> None:
    """Call an on_commit callback; log its failure if robust.

    An async callback is awaited in the task. A sync one runs inside the
    native bridge, always: its ORM calls and ``connections[alias]`` go to the
    task's async connections, whether the commit came from ``async_atomic``
    or from Django's ``atomic`` run natively.
    """
    try:
        if iscoroutinefunction(func):
            await func()
            return
        result = func() if in_bridge() else await run_native(func)
        if inspect.isawaitable(result):
            await result
    except Exception as exc:
        if not robust:
            raise
        name = getattr(func, "__qualname__", func)
        logger.error(
            "Error calling %s in on_commit()%s (%s).", name, during, exc, exc_info=True
        )
