"""What differs between the Python versions supported, in one place."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["running_loop", "running_task", "task_of"]

# The running loop, or None (no error): asyncio's own C function.
running_loop: Callable[[], asyncio.AbstractEventLoop | None] = asyncio._get_running_loop

if sys.version_info < (3, 14):
    from asyncio.tasks import _current_tasks  # type: ignore[attr-defined]

    # The task running on a loop: the table asyncio.current_task() reads
    # (Python code on 3.11). ``task_of(running_loop())`` is two C calls and no
    # frame, nor an error without a loop: every query checks its task so.
    task_of: Callable[[Any], asyncio.Task[Any] | None] = _current_tasks.get
else:  # 3.14 keeps the running task in the thread state

    def task_of(loop: Any) -> asyncio.Task[Any] | None:
        return asyncio.current_task(loop) if loop is not None else None


def running_task() -> asyncio.Task[Any] | None:
    """Return the running task, or None (``asyncio.current_task()``, no error)."""
    return task_of(running_loop())
