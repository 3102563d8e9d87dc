"""Async connections isolated per test, under pytest-django and pytest-asyncio.

Registered by ``django_async_backend.test.pytest_plugin`` when both are
active. For an async test that uses the database (``@pytest.mark.django_db``,
or pytest-django's ``db``/``transactional_db`` fixtures):

* after pytest-django has set up its side, and on the event loop the test
  runs on (its pytest-asyncio ``loop_scope``), a test scope of async
  connections is opened for the mark's ``databases``; without
  ``transaction=True`` every alias gets an ``async_atomic()`` block, rolled
  back after the test (pytest-django flushes the tables otherwise);
* the test and its function-scoped async fixtures, each a task of its own,
  take the connections over in turn, as the steps of ``AsyncioTestCase`` do;
* after the test its connections are released, and the loop's parked
  connections and pools closed: no session is left open, whatever the loop's
  scope.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import inspect
import types
from collections.abc import AsyncIterator, Callable, Collection, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import DEFAULT_DB_ALIAS, connections

from django_async_backend.db import async_connections
from django_async_backend.db.transaction import AsyncAtomic
from django_async_backend.db.utils import ConnectionScope, async_wrapper_class
from django_async_backend.test._pytest_blocker import connections_refused
from django_async_backend.test.testcases import _enter_atomics, _rollback_atomics
from django_async_backend.utils.loops import loop_state

# Imported by name: no dependency of the package (nor of its type checks).
pytest_asyncio: Any = importlib.import_module("pytest_asyncio")

# pytest-django's fixtures that make a test transactional, as its mark's
# transaction=True does.
TRANSACTIONAL_FIXTURES = frozenset(
    {"transactional_db", "live_server", "django_db_reset_sequences"}
)


@dataclass(frozen=True)
class DatabaseUse:
    """How a test uses the database, read as pytest-django reads it."""

    transactional: bool
    # The mark's `databases`, without mirrors (as AsyncioTestCase's).
    aliases: tuple[str, ...]


def database_use(item: pytest.Item) -> DatabaseUse | None:
    """Return how ``item`` uses the database; None: it does not."""
    marker = item.get_closest_marker("django_db")
    names: Collection[str] = getattr(item, "fixturenames", ())
    # Every pytest-django fixture that gives database access depends on it.
    if marker is None and "_django_db_helper" not in names:
        return None
    transaction, reset_sequences, databases = (
        _mark_arguments(*marker.args, **marker.kwargs)
        if marker
        else (False, False, None)
    )
    transactional = bool(
        transaction or reset_sequences or not TRANSACTIONAL_FIXTURES.isdisjoint(names)
    )
    return DatabaseUse(transactional, _aliases(databases))


def _mark_arguments(
    transaction: bool = False,
    reset_sequences: bool = False,
    databases: Any = None,
    *_: Any,
    **__: Any,
) -> tuple[bool, bool, Any]:
    """Pick the arguments that matter here (the mark's signature's first three)."""
    return transaction, reset_sequences, databases


def _aliases(databases: Any) -> tuple[str, ...]:
    """The aliases a mark's ``databases`` names, without mirrors."""
    if databases is None:
        wanted = {DEFAULT_DB_ALIAS}
    elif databases == "__all__":
        wanted = set(connections.settings)
    else:
        wanted = set(databases)
    return tuple(
        alias
        for alias, settings_dict in connections.settings.items()
        if alias in wanted and not settings_dict["TEST"]["MIRROR"]
    )


def _loop_scope(item: pytest.Item) -> str:
    """The scope of the event loop pytest-asyncio runs ``item`` on."""
    marker = item.get_closest_marker("asyncio")
    scope = None
    if marker is not None:
        scope = marker.kwargs.get("loop_scope") or marker.kwargs.get("scope")
    return str(
        scope or item.config.getini("asyncio_default_test_loop_scope") or "function"
    )


class SharedConnections:
    """The async connections of one test, handed from step to step."""

    def __init__(self, use: DatabaseUse, test: str, loop_scope: str) -> None:
        self.use = use
        self.test = test
        self.loop_scope = loop_scope
        self.loop = asyncio.get_running_loop()
        self.scope: ConnectionScope | None = None
        self.atomics: dict[str, AsyncAtomic] = {}

    async def begin(self) -> None:
        """Open the test's scope, and its transactions unless transactional."""
        self.scope = async_connections.start_test_scope(self.use.aliases)
        if self.use.transactional:
            return
        try:
            self.atomics = await _enter_atomics(
                [alias for alias in self.use.aliases if _has_async_side(alias)]
            )
        except BaseException:
            await self._close()
            raise

    async def end(self) -> BaseException | None:
        """Undo (or check) the test's work; leave nothing open on the loop.

        Return what went wrong rather than raise it: pytest-asyncio does not
        undo the context changes of a fixture whose tear-down raises, and the
        next tests would inherit this test's connections.
        """
        async_connections.adopt_scope()
        problem: BaseException | None = None
        try:
            if self.use.transactional:
                message = self._transaction_left_open()
            else:
                message = await self._roll_back()
            if message is not None:
                problem = pytest.fail.Exception(message, pytrace=False)
        except Exception as error:
            problem = error
        finally:
            try:
                await self._close()
            except Exception as error:
                problem = problem or error
        return problem

    async def _roll_back(self) -> str | None:
        left_open = None
        for alias, atomic in self.atomics.items():
            connection = async_connections[alias]
            # Unwind the blocks the test left open, innermost first.
            while (
                connection.atomic_blocks and connection.atomic_blocks[-1] is not atomic
            ):
                left_open = left_open or alias
                connection.set_rollback(True)
                await connection.atomic_blocks[-1].__aexit__(None, None, None)
        await _rollback_atomics(self.atomics)
        if left_open is None:
            return None
        return f"{self.test} left an async_atomic() block open on {left_open!r}."

    def _transaction_left_open(self) -> str | None:
        assert self.scope is not None
        for alias, connection in self.scope.wrappers.items():
            if connection.in_atomic_block or connection.transaction_is_open():
                return (
                    f"{self.test} left a transaction open on {alias!r}: end every "
                    "async_atomic() block and call commit() or rollback() after "
                    "set_autocommit(False)."
                )
        return None

    async def _close(self) -> None:
        """Release the test's connections; close what the loop keeps for later.

        A loop of a broader scope goes on to other tests: its parked
        connections (CONN_MAX_AGE) and pools would keep sessions open.
        """
        if self.scope is not None:
            await self.scope.release()
        state = loop_state()
        # The connections of the test's finished child tasks, being released.
        pending = [task for task in state.tasks if not task.done()]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        await state.close_idle()
        for alias in list(state.pools):
            await state.retire_pool(alias)

    # ##### The steps #####

    @contextlib.asynccontextmanager
    async def step(self, name: str) -> AsyncIterator[None]:
        """Run a part of the test (its call, a fixture's set-up or tear-down;
        each runs in a task of its own) with the test's connections."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            yield  # a fixture of another async framework: not ours
            return
        if loop is self.loop:
            async_connections.adopt_scope()
            if async_connections.current_scope() is not self.scope:
                raise RuntimeError(
                    f"The {name} of {self.test} did not get the context that "
                    "the test's fixtures set up, so it cannot use the test's "
                    "async connections: upgrade pytest-asyncio (0.25 or later)."
                )
            yield
            return
        # The test's connections live on another loop. An independent block
        # keeps this part off them (and off the test's transaction, whose
        # "created inside async_atomic()" refusal would mislead here); the
        # refusal says why it cannot open connections of its own either.
        reason = (
            f"The {name} of {self.test} runs on another event loop than the "
            "test, so it cannot use the test's async connections (nor join its "
            "transaction). Give it the test's loop scope: "
            f"@pytest_asyncio.fixture(loop_scope={self.loop_scope!r}), or set "
            "asyncio_default_fixture_loop_scope in the pytest configuration."
        )
        with connections_refused(reason):
            async with async_connections.independent_connection():
                yield

    def steps_in(self, func: Callable[..., Any], name: str) -> Callable[..., Any]:
        """Wrap the async ``func`` so that each part of it runs as a step.

        Bound methods stay bound (pytest binds a class's fixtures to the
        test's instance through ``__func__``).
        """
        target = getattr(func, "__func__", func)
        wrapper: Callable[..., Any]
        if inspect.isasyncgenfunction(target):

            @functools.wraps(target)
            async def generator(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
                parts = target(*args, **kwargs)
                while True:
                    # The set-up, then the tear-down: each in a task of its own.
                    async with self.step(name):
                        try:
                            value = await parts.__anext__()
                        except StopAsyncIteration:
                            return
                    yield value

            wrapper = generator
        else:

            @functools.wraps(target)
            async def coroutine(*args: Any, **kwargs: Any) -> Any:
                async with self.step(name):
                    return await target(*args, **kwargs)

            wrapper = coroutine
        bound_to = getattr(func, "__self__", None)
        return wrapper if bound_to is None else types.MethodType(wrapper, bound_to)


def _has_async_side(alias: str) -> bool:
    """Tell whether ``alias``'s ENGINE has async connections."""
    return async_wrapper_class(connections.settings[alias]["ENGINE"]) is not None


def _is_async(func: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func)


_CONNECTIONS = pytest.StashKey[SharedConnections]()


# ##### Fixtures #####


@pytest.fixture(autouse=True)
def _django_async_db(request: pytest.FixtureRequest) -> None:
    """Isolate the async connections of an async test that uses the database."""
    item = request.node
    use = database_use(item)
    if use is None or not pytest_asyncio.is_async_test(item):
        return
    # pytest-django's side first (the test database, the sync transaction):
    # torn down after ours, its flush never waits on one of our connections.
    request.getfixturevalue("transactional_db" if use.transactional else "db")
    request.getfixturevalue(f"_django_async_db_{_loop_scope(item)}")


@pytest.fixture
def _django_async_db_errors() -> Iterator[list[BaseException]]:
    """Raise what closing the test's async connections found, once they are."""
    errors: list[BaseException] = []
    yield errors
    if errors:
        raise errors[0]


def _connections_fixture(loop_scope: str) -> Any:
    """The fixture that runs a test's connections on a loop of ``loop_scope``."""

    async def fixture(
        request: pytest.FixtureRequest, _django_async_db_errors: list[BaseException]
    ) -> AsyncIterator[None]:
        item = request.node
        use = database_use(item)
        assert use is not None, "requested by _django_async_db only"
        test = SharedConnections(use, item.nodeid, loop_scope)
        await test.begin()
        item.stash[_CONNECTIONS] = test
        try:
            yield
        finally:
            del item.stash[_CONNECTIONS]
            problem = await test.end()
            if problem is not None:
                _django_async_db_errors.append(problem)

    fixture.__doc__ = f"The test's async connections, on its {loop_scope} loop."
    return pytest_asyncio.fixture(
        fixture, loop_scope=loop_scope, name=f"_django_async_db_{loop_scope}"
    )


# One per pytest-asyncio loop scope: the connections live on the test's loop.
_django_async_db_function = _connections_fixture("function")
_django_async_db_class = _connections_fixture("class")
_django_async_db_module = _connections_fixture("module")
_django_async_db_package = _connections_fixture("package")
_django_async_db_session = _connections_fixture("session")


# ##### Hooks: the steps take the connections over #####


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, Any, Any]:
    """Run the test's function-scoped async fixtures in its connections."""
    test = None
    if fixturedef.scope == "function":
        test = request.node.stash.get(_CONNECTIONS, None)
    if test is None or not _is_async(fixturedef.func):
        return (yield)
    step = test.steps_in(fixturedef.func, f"fixture {fixturedef.argname!r}")
    # Outside pytest-asyncio's own wrapper (tryfirst), which runs `func`.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fixturedef, "func", step)
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Run the test in its connections."""
    test = item.stash.get(_CONNECTIONS, None)
    if test is None:
        return (yield)
    holder, name = _test_function(item)
    step = test.steps_in(getattr(holder, name), f"test {item.name!r}")
    # pytest-asyncio runs what it finds there when the test runs.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(holder, name, step)
        return (yield)


def _test_function(item: pytest.Item) -> tuple[Any, str]:
    """Where the test's coroutine function is: ``(holder, attribute)``."""
    function = getattr(item, "obj", None)
    handle = getattr(function, "hypothesis", None)
    if handle is not None and getattr(function, "is_hypothesis_test", False):
        return handle, "inner_test"  # each example runs in a task of its own
    return item, "obj"
