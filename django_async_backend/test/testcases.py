"""Test cases for async database code.

Both classes are Django test cases (``databases``, ``available_apps``,
``fixtures``, ``reset_sequences``, the test runner's test database) whose
``asyncSetUp``, ``async def test_*`` and ``asyncTearDown`` run on one event
loop per class and share one async connection per alias. Each step runs in
its own task (as in ``unittest.IsolatedAsyncioTestCase``); the test's
connections are handed from one step to the next, never shared by two tasks
at once.

* ``AsyncioTransactionTestCase`` commits for real; like Django's
  ``TransactionTestCase`` it flushes the tables after each test.
* ``AsyncioTestCase`` wraps the class in a transaction and each test in a
  savepoint, rolled back at the end: fast, isolated tests. Use
  ``asyncSetUpTestData`` for class-level data.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, ClassVar

from asgiref.sync import iscoroutinefunction
from django.db import DEFAULT_DB_ALIAS
from django.test import TransactionTestCase

from django_async_backend.db import async_connections
from django_async_backend.db.backends.base.commit_hooks import run_commit_hook
from django_async_backend.db.transaction import AsyncAtomic
from django_async_backend.db.utils import ConnectionScope
from django_async_backend.utils import compat

__all__ = ["AsyncioTestCase", "AsyncioTransactionTestCase"]


class AsyncioTransactionTestCase(TransactionTestCase):
    """Async tests with real transactions; tables are flushed after each test."""

    # A step (setUp, the test, tearDown) that runs longer fails instead of
    # hanging the suite (on a lock, say). None: no limit.
    async_step_timeout: ClassVar[float | None] = 120.0

    _runner: ClassVar[asyncio.Runner | None] = None
    # The test's async set-up ran (and its connections await the tear-down).
    _async_ready = False
    # The context of the class's set-up; each test runs in a copy of it
    # (AsyncioTestCase: in it, to share the class's transaction).
    _class_context: ClassVar[contextvars.Context]
    _context: contextvars.Context

    @classmethod
    def _aliases(cls) -> list[str]:
        """The test's ``databases``, without mirrors."""
        return compat.databases_names(cls)

    @classmethod
    def setUpClass(cls) -> None:
        cls._runner = asyncio.Runner()
        cls._class_context = contextvars.copy_context()
        try:
            super().setUpClass()
        except BaseException:
            cls._close_runner()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        try:
            super().tearDownClass()
        finally:
            cls._close_runner()

    @classmethod
    def _close_runner(cls) -> None:
        if cls._runner is not None:
            # Runner.close() shuts the loop down, which closes what is left.
            cls._runner.close()
            cls._runner = None

    # ##### Running coroutines #####

    def _test_context(self) -> contextvars.Context:
        """The context every step of this test runs in."""
        return self._context

    @classmethod
    def _run(cls, coro: Coroutine[Any, Any, Any], context: contextvars.Context) -> Any:
        assert cls._runner is not None, "setUpClass() did not run"
        return cls._runner.run(cls._step(coro, cls.async_step_timeout), context=context)

    @staticmethod
    async def _step(coro: Coroutine[Any, Any, Any], limit: float | None) -> Any:
        # The step's task takes over the test's connections (the previous
        # step's task is finished).
        async_connections.adopt_scope()
        try:
            async with asyncio.timeout(limit):
                return await coro
        except TimeoutError as exc:
            raise AssertionError(
                f"The test step did not finish within {limit} s; is it waiting "
                "for a lock held by another connection? Raise "
                "async_step_timeout on the test case if it needs longer."
            ) from exc

    def _call_maybe_async(
        self, func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        if iscoroutinefunction(func):
            # Called in the step's task: a wrapper method checks its task when
            # called, not only when awaited (connection.close, say).
            return self._run(_call(func, args, kwargs), self._test_context())
        result = self._test_context().run(func, *args, **kwargs)
        if asyncio.iscoroutine(result):
            return self._run(result, self._test_context())
        return result

    # ##### unittest hooks #####

    def _callSetUp(self) -> None:
        self._context = self._class_context.copy()
        self._run(self._async_pre_setup(), self._context)
        self._async_ready = True  # _post_teardown() has something to end
        self._call_maybe_async(self.setUp)
        self._call_maybe_async(self.asyncSetUp)

    def _callTestMethod(self, method: Callable[[], Any]) -> None:
        # Django wraps `async def` test methods in asgiref's AsyncToSync (a new loop
        # in another thread); run the method itself on the class's loop.
        original = getattr(type(self), self._testMethodName, None)
        if original is not None and inspect.iscoroutinefunction(original):
            method = original.__get__(self)
        self._call_maybe_async(method)

    def _callTearDown(self) -> None:
        self._call_maybe_async(self.asyncTearDown)
        self._call_maybe_async(self.tearDown)

    def _post_teardown(self) -> None:
        # Django runs this after doCleanups(): the cleanups still have the
        # test's connections (and their transaction), and a setting that a
        # cleanup restores is restored when the connections are released.
        # Before Django's own (a flush must not wait on our locks).
        try:
            if self._async_ready:
                self._async_ready = False
                self._run(self._async_post_teardown(), self._test_context())
        finally:
            super()._post_teardown()  # type: ignore[misc]

    def _callCleanup(
        self, function: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> None:
        self._call_maybe_async(function, *args, **kwargs)

    async def asyncSetUp(self) -> None:
        """Hook: async set-up, run after setUp() in the test's event loop."""

    async def asyncTearDown(self) -> None:
        """Hook: async tear-down, run before tearDown()."""

    def addAsyncCleanup(
        self, func: Callable[..., Awaitable[Any]], /, *args: Any, **kwargs: Any
    ) -> None:
        """Register an async cleanup, awaited after tearDown."""
        self.addCleanup(func, *args, **kwargs)

    # ##### The test's connections #####

    async def _async_pre_setup(self) -> None:
        async_connections.start_test_scope(self._aliases())

    async def _async_post_teardown(self) -> None:
        scope = async_connections.current_scope()
        if scope is None:
            return
        try:
            self._check_no_open_transaction(scope)
        finally:
            await scope.release()

    def _check_no_open_transaction(self, scope: ConnectionScope) -> None:
        for alias, connection in scope.wrappers.items():
            if connection.in_atomic_block or connection.transaction_is_open():
                self.fail(
                    f"The test left a transaction open on {alias!r}: end every "
                    "async_atomic() block and call commit() or rollback() after "
                    "set_autocommit(False)."
                )

    # ##### Assertions #####

    @asynccontextmanager  # async twin of Django's: `async with`
    async def assertNumQueries(  # type: ignore[override]
        self, num: int, using: str = DEFAULT_DB_ALIAS
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Assert that the block runs ``num`` queries on ``using``."""
        connection = async_connections[using]
        captured: list[dict[str, Any]] = []
        forced = connection.force_debug_cursor
        connection.force_debug_cursor = True
        start = len(connection.queries_log)
        try:
            yield captured
        finally:
            connection.force_debug_cursor = forced
        captured.extend(list(connection.queries_log)[start:])
        queries = "\n".join(f"{i}. {q['sql']}" for i, q in enumerate(captured, 1))
        self.assertEqual(
            len(captured),
            num,
            f"{len(captured)} queries executed, {num} expected\nCaptured queries "
            f"were:\n{queries}",
        )

    @asynccontextmanager  # async twin of Django's: `async with`
    async def captureOnCommitCallbacks(
        self, *, using: str = DEFAULT_DB_ALIAS, execute: bool = False
    ) -> AsyncIterator[list[Callable[[], Any]]]:
        """Capture the on_commit callbacks registered in the block.

        With ``execute=True`` they are run (awaited if async) on exit, like
        Django's ``TestCase.captureOnCommitCallbacks``.
        """
        connection = async_connections[using]
        callbacks: list[Callable[[], Any]] = []
        start = len(connection.run_on_commit)
        try:
            yield callbacks
        finally:
            while True:
                count = len(connection.run_on_commit)
                for _, callback, robust in connection.run_on_commit[start:]:
                    callbacks.append(callback)
                    if execute:
                        await run_commit_hook(callback, robust)
                if count == len(connection.run_on_commit):
                    break
                start = count


class AsyncioTestCase(AsyncioTransactionTestCase):
    """Async tests that each run in a transaction rolled back at the end."""

    _class_atomics: ClassVar[dict[str, AsyncAtomic]]

    @classmethod
    def setUpClass(cls) -> None:
        if cls.fixtures:
            raise TypeError(
                f"{cls.__name__}: AsyncioTestCase cannot load fixtures inside "
                "its async transaction. Create the data in asyncSetUpTestData(), "
                "or use AsyncioTransactionTestCase."
            )
        super().setUpClass()
        try:
            cls._run(cls._async_setup_class(), cls._class_context)
        except BaseException:
            cls._close_runner()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        try:
            cls._run(cls._async_teardown_class(), cls._class_context)
        finally:
            super().tearDownClass()

    @classmethod
    async def asyncSetUpTestData(cls) -> None:
        """Hook: create class-level data; rolled back after the class."""

    @classmethod
    async def _async_setup_class(cls) -> None:
        async_connections.start_test_scope(cls._aliases())
        cls._class_atomics = await _enter_atomics(cls._aliases())
        try:
            await cls.asyncSetUpTestData()
        except BaseException:
            await _rollback_atomics(cls._class_atomics)
            await _release_scope()
            raise

    @classmethod
    async def _async_teardown_class(cls) -> None:
        try:
            await _rollback_atomics(cls._class_atomics)
        finally:
            await _release_scope()

    # Tests share the class's connections, inside its transaction.
    def _test_context(self) -> contextvars.Context:
        return self._class_context

    def _callSetUp(self) -> None:
        self._run(self._async_pre_setup(), self._class_context)
        self._async_ready = True  # _post_teardown() has something to end
        self._call_maybe_async(self.setUp)
        self._call_maybe_async(self.asyncSetUp)

    async def _async_pre_setup(self) -> None:
        for alias in self._aliases():
            # A test sees its own queries only (the wrappers are the class's).
            async_connections[alias].queries_log.clear()
        self._atomics = await _enter_atomics(self._aliases())

    async def _async_post_teardown(self) -> None:
        left_open = []
        for alias, atomic in self._atomics.items():
            connection = async_connections[alias]
            # Unwind blocks the test left open, so the next test starts clean.
            while (
                connection.atomic_blocks and connection.atomic_blocks[-1] is not atomic
            ):
                left_open.append(alias)
                connection.set_rollback(True)
                await connection.atomic_blocks[-1].__aexit__(None, None, None)
        await _rollback_atomics(self._atomics)
        if any(
            async_connections[alias].closed_in_transaction for alias in self._aliases()
        ):
            await type(self)._restore_class_transaction()
        if left_open:
            self.fail(
                f"The test left an async_atomic() block open on {left_open[0]!r}."
            )

    @classmethod
    async def _restore_class_transaction(cls) -> None:
        """Open the class's transaction again, after a test closed a connection.

        Closing a connection (``await connection.close()``, in a test, its
        set-up or tear-down) loses its transaction, and with it the class's
        data: end what is left of it, begin again and run
        ``asyncSetUpTestData()`` again, so that the next test starts as the
        first did. That costs one ``asyncSetUpTestData()`` per such test.
        """
        await _rollback_atomics(cls._class_atomics)
        cls._class_atomics = await _enter_atomics(cls._aliases())
        await cls.asyncSetUpTestData()

    @classmethod
    def _fixture_setup(cls) -> None:
        """No flush, no fixtures: each test is rolled back."""

    def _fixture_teardown(self) -> None:
        """Nothing to flush: each test is rolled back."""


async def _call(
    func: Callable[..., Awaitable[Any]], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    return await func(*args, **kwargs)


async def _enter_atomics(aliases: list[str]) -> dict[str, AsyncAtomic]:
    """Open an atomic block (marked as the test's own) on every alias."""
    atomics: dict[str, AsyncAtomic] = {}
    for alias in aliases:
        atomic = AsyncAtomic(alias, savepoint=True, durable=False)
        atomic._from_testcase = True
        await atomic.__aenter__()
        atomics[alias] = atomic
    return atomics


async def _rollback_atomics(atomics: dict[str, AsyncAtomic]) -> None:
    """Roll the test's atomic blocks back, innermost alias first."""
    for alias, atomic in reversed(atomics.items()):
        connection = async_connections[alias]
        connection.set_rollback(True)
        await atomic.__aexit__(None, None, None)


async def _release_scope() -> None:
    scope = async_connections.current_scope()
    if scope is not None:
        await scope.release()
