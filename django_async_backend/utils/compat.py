"""What differs between the Python versions supported, in one place."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

__all__ = ["running_task"]

if sys.version_info >= (3, 12):
    # Implemented in C from 3.12 on.
    running_task = asyncio.current_task
else:
    from asyncio.events import _get_running_loop
    from asyncio.tasks import _current_tasks  # type: ignore[attr-defined]

    def running_task() -> asyncio.Task[Any] | None:
        """Return the running task, or None (``asyncio.current_task()``).

        On 3.11 ``asyncio.current_task()`` is Python code that looks the task
        up in this very table; every query checks its task, so read it here
        directly, without a second frame or an error when no loop runs.
        """
        return _current_tasks.get(_get_running_loop())  # type: ignore[no-any-return]
