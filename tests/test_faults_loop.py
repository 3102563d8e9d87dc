"""Fault suite, scenario 6: the event loop closes while connections are open.

``asyncio.run()`` returns (or ``asyncio.Runner`` closes) while the program
still holds connections of every kind: the main task's own, one parked for
reuse (CONN_MAX_AGE), pooled ones, an ``independent_connection()`` block and
a transaction in a task that is still running. Nothing may be printed or
logged about it ("Event loop is closed", "Task was destroyed but it is
pending", a connection deleted while open...), no session may be left on the
server, and the open transaction must not have committed.
"""

from __future__ import annotations

import asyncio
import gc
import io
import sys
import unittest
import warnings
from contextlib import ExitStack, redirect_stderr
from typing import Any

import support
from aliases import backend_pid
from django_async_backend.db import async_connections
from django_async_backend.db.transaction import async_atomic
from faults import FaultRows, fault_alias, insert
from support import outside, poll

ALIASES = ("loop_plain", "loop_persistent", "loop_pooled")


class LoopClosesTests(FaultRows, unittest.TestCase):
    app_prefix = "dab-loop"

    def setUp(self) -> None:
        super().setUp()
        stack = ExitStack()
        self.addCleanup(stack.close)
        stack.enter_context(fault_alias("loop_plain", self.app))
        stack.enter_context(fault_alias("loop_persistent", self.app, CONN_MAX_AGE=None))
        stack.enter_context(
            fault_alias("loop_pooled", self.app, pool={"min_size": 2, "max_size": 4})
        )

    def committed(self) -> list[str]:
        rows = outside("SELECT name FROM fault_rows WHERE tag = %s", (self.tag,))
        return sorted(row[0] for row in rows)

    # ---- what the program leaves open --------------------------------------

    async def in_transaction(self, started: asyncio.Event) -> None:
        async with async_atomic(using="loop_pooled"):
            await insert("loop_pooled", self.tag, "never committed")
            started.set()
            await asyncio.sleep(3600)  # still inside when the loop ends

    async def in_independent_block(self, started: asyncio.Event) -> None:
        async with async_connections.independent_connection():
            await backend_pid(async_connections["loop_plain"])
            started.set()
            await asyncio.sleep(3600)

    async def program(self) -> list[int]:
        pids = [await backend_pid(async_connections[alias]) for alias in ALIASES]
        # A connection parked for the next task (CONN_MAX_AGE=None).
        await asyncio.create_task(persistent_pid())
        for body in (self.in_transaction, self.in_independent_block):
            started = asyncio.Event()
            asyncio.create_task(body(started))  # noqa: RUF006 - left running
            await started.wait()
        await insert("loop_plain", self.tag, "autocommitted")
        # The pool may have grown meanwhile: at least these are open.
        self.assertGreaterEqual(support.count_sessions(self.app), 6)
        return pids  # returns with everything still open

    # ---- the checks --------------------------------------------------------

    def run_quietly(self, run: Any) -> None:
        unraisable: list[Any] = []
        stderr = io.StringIO()
        previous = sys.unraisablehook
        sys.unraisablehook = unraisable.append
        try:
            with (
                warnings.catch_warnings(record=True) as caught,
                redirect_stderr(stderr),
                self.assertNoLogs(level="WARNING"),
            ):
                warnings.simplefilter("always")
                run()
                gc.collect()
        finally:
            sys.unraisablehook = previous
        self.assertEqual([str(u.exc_value) for u in unraisable], [])
        self.assertEqual([str(w.message) for w in caught], [])
        self.assertEqual(stderr.getvalue(), "")

    def assert_nothing_left(self) -> None:
        self.assertTrue(
            asyncio.run(poll(lambda: support.count_sessions(self.app) == 0)),
            f"{support.count_sessions(self.app)} sessions left on the server",
        )
        self.assertEqual(self.committed(), ["autocommitted"])

    def test_end_of_asyncio_run(self) -> None:
        self.run_quietly(lambda: asyncio.run(self.program()))
        self.assert_nothing_left()

    def test_runner_closed(self) -> None:
        def run() -> None:
            with asyncio.Runner() as runner:
                runner.run(self.program())

        self.run_quietly(run)
        self.assert_nothing_left()


async def persistent_pid() -> int:
    """Use the persistent alias in a task of its own (parked when it ends)."""
    return await backend_pid(async_connections["loop_persistent"])


if __name__ == "__main__":
    unittest.main()
