"""Django's DiscoverRunner, recording each test's outcome as JSON.

The settings modules name it as TEST_RUNNER; ``run.py`` sets
``DJSUITE_RESULTS`` to the file to write. With ``--parallel`` the workers'
events are replayed on the main process's result, so this one result sees
every test. A test's outcome is the worst of what it reported (a failing
subtest makes the test fail); errors outside any test (``setUpClass``,
``setUpModule``) are recorded under unittest's own id for them, e.g.
``setUpClass (app.tests.SomeTests)``.
"""

from __future__ import annotations

import json
import os
import sys
import time
import unittest
from pathlib import Path
from types import TracebackType
from typing import Any

from django.db import connections
from django.test.runner import (
    DiscoverRunner,
    ParallelTestSuite,
    RemoteTestResult,
    RemoteTestRunner,
)

ErrInfo = (
    tuple[type[BaseException], BaseException, TracebackType] | tuple[None, None, None]
)

# Worst first wins: a test that errored in one subtest and passed in another
# is an error.
RANK = {
    "error": 6,
    "failed": 5,
    "unexpected_success": 4,
    "expected_failure": 3,
    "passed": 2,
    "skipped": 1,
}
# unittest's (private) class of the subtests it reports.
SUBTEST: Any = getattr(unittest.case, "_SubTest")  # noqa: B009
# Filled in once the test databases exist.
SERVER_VERSION = "?"
WRAPPER = "?"


def test_id(test: Any) -> str:
    """The id to record ``test`` (or a subtest) under."""
    if isinstance(test, SUBTEST):  # a subtest counts for its test
        test = test.test_case
    return str(test.id())


class RecordingResult(unittest.TextTestResult):
    """TextTestResult that also keeps ``{test id: outcome}``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outcomes: dict[str, str] = {}
        self.started = time.time()

    def record(self, test: Any, outcome: str) -> None:
        key = test_id(test)
        previous = self.outcomes.get(key)
        if previous is None or RANK[outcome] > RANK[previous]:
            self.outcomes[key] = outcome

    def addSuccess(self, test: unittest.TestCase) -> None:
        super().addSuccess(test)
        self.record(test, "passed")

    def addFailure(self, test: unittest.TestCase, err: ErrInfo) -> None:
        super().addFailure(test, err)
        self.record(test, "failed")

    def addError(self, test: unittest.TestCase, err: ErrInfo) -> None:
        super().addError(test, err)
        self.record(test, "error")

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:
        super().addSkip(test, reason)
        self.record(test, "skipped")

    def addExpectedFailure(self, test: unittest.TestCase, err: ErrInfo) -> None:
        super().addExpectedFailure(test, err)
        self.record(test, "expected_failure")

    def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:
        super().addUnexpectedSuccess(test)
        self.record(test, "unexpected_success")

    def addSubTest(
        self,
        test: unittest.TestCase,
        subtest: unittest.TestCase,
        err: ErrInfo | None,
    ) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None:
            failed = err[0] is not None and issubclass(err[0], test.failureException)
            self.record(test, "failed" if failed else "error")

    def stopTestRun(self) -> None:
        super().stopTestRun()
        write_results(
            {
                "python": sys.version.split()[0],
                "test_seconds": round(time.time() - self.started, 1),
                "server_version": SERVER_VERSION,
                "wrapper": WRAPPER,
                "tests_run": self.testsRun,
                "outcomes": dict(sorted(self.outcomes.items())),
            }
        )


def write_results(payload: dict[str, Any]) -> None:
    """Write ``payload`` as JSON to $DJSUITE_RESULTS (atomically)."""
    target = os.environ.get("DJSUITE_RESULTS")
    if not target:
        return
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    tmp.replace(path)


def mark_aborted(reason: str) -> None:
    """Add ``aborted`` to the results: the run did not finish normally."""
    target = os.environ.get("DJSUITE_RESULTS")
    if not target:
        return
    path = Path(target)
    payload: dict[str, Any] = {"outcomes": {}}
    if path.is_file():
        payload = json.loads(path.read_text())
    payload["aborted"] = reason
    write_results(payload)


class SkipCountingRemoteTestResult(RemoteTestResult):
    """A --parallel worker's result that reports skipped tests as started.

    Since Python 3.12 unittest calls no ``startTest()`` for a test skipped by
    a decorator, while Django's worker result numbers tests by
    ``startTest()``: the parent process then replays the skip on the test
    before it, and the skipped test is never reported. Starting it here, as
    Python 3.11 did, keeps the numbering right on every Python.
    """

    _current: int | None = None

    def startTest(self, test: unittest.TestCase) -> None:
        self._current = id(test)
        super().startTest(test)

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:
        # Not for setUpClass skips (_ErrorHolder, no TestCase) nor subtests.
        if (
            id(test) != self._current
            and isinstance(test, unittest.TestCase)
            and not isinstance(test, SUBTEST)
        ):
            self.startTest(test)
            super().addSkip(test, reason)
            self.stopTest(test)
            return
        super().addSkip(test, reason)


class SkipCountingRemoteTestRunner(RemoteTestRunner):
    resultclass = SkipCountingRemoteTestResult


class RecordingParallelTestSuite(ParallelTestSuite):
    runner_class = SkipCountingRemoteTestRunner


class RecordingRunner(DiscoverRunner):
    """DiscoverRunner whose result records outcomes (see module docstring)."""

    parallel_test_suite = RecordingParallelTestSuite

    def setup_databases(self, **kwargs: Any) -> Any:
        global SERVER_VERSION, WRAPPER
        config = super().setup_databases(**kwargs)
        connection = connections["default"]
        # Evidence of which ENGINE ran: the DatabaseWrapper class in use.
        WRAPPER = f"{type(connection).__module__}.{type(connection).__qualname__}"
        was_closed = connection.connection is None
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            SERVER_VERSION = str(cursor.fetchone()[0]).split()[0]
        if was_closed:
            # As Django left it: --parallel workers must not inherit a session.
            connection.close()
        return config

    def run_suite(self, suite: Any, **kwargs: Any) -> Any:
        try:
            return super().run_suite(suite, **kwargs)
        except BaseException as exc:
            # E.g. a --parallel worker's result that could not be pickled:
            # the outcomes so far are incomplete, run.py must know.
            mark_aborted(f"{type(exc).__name__}: {exc}"[:2000])
            raise

    def get_resultclass(self) -> Any:
        base = super().get_resultclass()
        if base is None:
            return RecordingResult
        # --debug-sql / --pdb: keep their behaviour, add the recording.
        return type(f"Recording{base.__name__}", (RecordingResult, base), {})
