"""The pytest plugin, used as pytest-django users use it.

Each test runs the small pytest project in tests/pytest_project/ in a child
process (pytest-django and pytest-asyncio, against the real server, in a
test database that pytest-django creates and keeps with --reuse-db) and
checks what came out: each inner test's outcome and message, and the rows
left in that database.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import tempfile
import tomllib
import unittest
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import psycopg
from django.conf import settings
from psycopg import sql

import support

HERE = Path(__file__).resolve().parent
PROJECT = HERE / "pytest_project"
ROOT = HERE.parent
PLUGIN = "django_async_backend.test.pytest_plugin"
# As tests/pytest_project/inner_settings.py names it.
INNER_DATABASE = f"{settings.TEST_DATABASE_NAME}_pytest"
MISSING = [
    name
    for name in ("pytest", "pytest_django", "pytest_asyncio")
    if importlib.util.find_spec(name) is None
]
SKIP_REASON = f"needs {', '.join(MISSING)}: pip install pytest-django pytest-asyncio"
BLOCKED = 'Database access not allowed, use the "django_db" mark'
# The inner project's modules the plugin is run on (check_*.py).
MAIN_FILES = [
    "check_rollback.py",
    "check_transactional.py",
    "check_databases.py",
    "check_blocked.py",
    "check_module_loop.py",
    "check_session_loop.py",
    "check_class_loop.py",
    "check_left_open.py",
    "check_testcases.py",
]
TABLES = ["testapp_account", "testapp_author"]


@dataclass(frozen=True)
class Outcome:
    """What became of one inner test: passed, failed, error or skipped."""

    status: str
    message: str = ""


@dataclass(frozen=True)
class Run:
    """One inner pytest run: its exit code, output, and each test's outcome."""

    returncode: int
    output: str
    outcomes: dict[str, Outcome]

    def outcome(self, test: str) -> Outcome:
        """The outcome of ``test`` (``module.test`` or ``module.Class.test``)."""
        if test not in self.outcomes:
            raise AssertionError(f"{test} did not run:\n{self.output}")
        return self.outcomes[test]


def run_pytest(
    files: list[str],
    *options: str,
    django: bool = True,
    plugin: bool = True,
    autoload: bool = False,
) -> Run:
    """Run the inner project's ``files`` with pytest in a child process.

    Plugins are named one by one (``-p``) unless ``autoload``: the inner run
    has exactly those, whatever else is installed.
    """
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.xml"
        arguments = [
            *("-c", str(PROJECT / "pytest.ini"), "--rootdir", str(PROJECT)),
            *("--junitxml", str(report), "-q", "--tb=short", "-rN"),
        ]
        if not autoload:
            arguments += ["-p", "asyncio"]
            arguments += ["-p", "django"] if django else []
            arguments += ["-p", PLUGIN] if plugin else []
        if django:
            arguments.append("--reuse-db")  # the outer test looks at the rows
        # A hang dumps the inner tracebacks, and ends before the suite's own
        # hang detector (pytest-timeout's 300 s) would end this test.
        arguments += ["-o", "faulthandler_timeout=150"]
        try:
            completed = subprocess.run(
                [sys.executable, "-m", "pytest", *arguments, *options, *files],
                cwd=PROJECT,
                env=_environment(autoload),
                capture_output=True,
                text=True,
                timeout=200,
                check=False,
            )
        except subprocess.TimeoutExpired as hung:
            # (Bytes, whatever text=True says.)
            partial = (hung.stdout or b"") + (hung.stderr or b"")
            raise AssertionError(
                f"the inner pytest hung:\n{partial.decode(errors='replace')}"
            ) from None
        output = completed.stdout + completed.stderr
        outcomes = _outcomes(report) if report.exists() else {}
    return Run(completed.returncode, output, outcomes)


def _environment(autoload: bool) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS")
    }
    # The checkout first (the tox env has the package as a wheel), then the
    # suite's settings and testapp, then the inner project.
    paths = [str(ROOT), str(HERE), str(PROJECT)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["DJANGO_SETTINGS_MODULE"] = "inner_settings"
    if autoload:
        env.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
    else:
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    return env


def _outcomes(report: Path) -> dict[str, Outcome]:
    """Each test case of a JUnit XML report: ``classname.name`` -> outcome."""
    outcomes: dict[str, Outcome] = {}
    for case in ElementTree.parse(report).iter("testcase"):
        outcome = Outcome("passed")
        # A failure or skip of the call wins over an error at tear-down.
        for status in ("error", "skipped", "failure"):
            element = case.find(status)
            if element is not None:
                text = f"{element.get('message', '')}\n{element.text or ''}"
                outcome = Outcome("failed" if status == "failure" else status, text)
        outcomes[f"{case.get('classname')}.{case.get('name')}"] = outcome
    return outcomes


def _server(dbname: str) -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(
        support.server_dsn(),
        dbname=dbname,
        application_name=support.OBSERVER,
        autocommit=True,
    )


def drop_inner_database() -> None:
    """Drop the inner projects' test database (pytest-django makes it anew)."""
    with _server(settings.TEST_DATABASE_NAME) as server:
        server.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(INNER_DATABASE)
            )
        )


def rows_left() -> dict[str, int]:
    """The rows of the tables the inner tests write to, left in the database."""
    counts: dict[str, int] = {}
    with _server(INNER_DATABASE) as database:
        for table in TABLES:
            query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
            row = database.execute(query).fetchone()
            counts[table] = int(row[0]) if row else 0
    return counts


@unittest.skipIf(MISSING, SKIP_REASON)
class InnerProjectTestCase(unittest.TestCase):
    """Runs the inner project once for the class, in a fresh test database."""

    files: ClassVar[list[str]] = []
    options: ClassVar[tuple[str, ...]] = ()
    plugin: ClassVar[bool] = True
    inner: ClassVar[Run]

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        drop_inner_database()
        cls.addClassCleanup(drop_inner_database)
        cls.inner = run_pytest(cls.files, *cls.options, plugin=cls.plugin)

    def assertOutcome(self, test: str, status: str, *messages: str) -> None:
        outcome = self.inner.outcome(test)
        self.assertEqual(outcome.status, status, f"{test}: {outcome.message}")
        for message in messages:
            self.assertIn(message, outcome.message, test)

    def assertPassed(self, *tests: str) -> None:
        for test in tests:
            self.assertOutcome(test, "passed")


class MarkTests(InnerProjectTestCase):
    """@pytest.mark.django_db on async tests, with the plugin."""

    files = MAIN_FILES

    def test_nothing_is_left_in_the_database(self) -> None:
        self.assertEqual(rows_left(), dict.fromkeys(TABLES, 0), self.inner.output)

    def test_no_other_outcome_than_those_checked_here(self) -> None:
        # Under filterwarnings=error: a warning would be an error here.
        problems = {
            test: outcome.status
            for test, outcome in self.inner.outcomes.items()
            if outcome.status != "passed"
        }
        self.assertEqual(
            problems,
            {
                "check_transactional.test_leaves_a_transaction_open": "error",
                "check_blocked.test_async_connection_without_mark": "failed",
                "check_blocked.test_native_orm_without_mark": "failed",
                "check_blocked.test_listen_without_mark": "failed",
                "check_blocked.test_sync_orm_without_mark": "failed",
                "check_module_loop.test_fixture_on_another_loop": "error",
                "check_left_open.test_leaves_a_block_open": "error",
            },
            self.inner.output,
        )
        self.assertEqual(len(self.inner.outcomes), 35, self.inner.output)

    def test_async_writes_are_rolled_back(self) -> None:
        self.assertPassed(
            "check_rollback.test_writes",
            "check_rollback.test_sees_nothing_of_the_last_test",
            "check_rollback.test_blocks_are_savepoints",
            "check_rollback.test_child_tasks_are_refused",
        )

    def test_async_fixtures_run_inside_the_test_transaction(self) -> None:
        self.assertPassed(
            "check_rollback.test_fixtures_share_the_transaction",
            "check_rollback.test_fixture_rows_are_rolled_back_too",
            "check_class_loop.TestClassLoop.test_fixture_ran_on_this_instance",
            "check_class_loop.TestClassLoop.test_rolled_back",
        )

    def test_transaction_true_commits_and_flushes(self) -> None:
        self.assertPassed(
            "check_transactional.test_commits_for_real",
            "check_transactional.test_tables_are_flushed",
            "check_transactional.test_listen_and_notify",
        )

    def test_databases_are_honoured(self) -> None:
        self.assertPassed(
            "check_databases.test_unlisted_alias_is_refused",
            "check_databases.test_listed_aliases_each_have_a_transaction",
            "check_databases.test_all_aliases",
            "check_databases.test_listed_aliases_are_rolled_back",
        )

    def test_the_blocker_covers_async_connections(self) -> None:
        self.assertOutcome(
            "check_blocked.test_async_connection_without_mark", "failed", BLOCKED
        )
        self.assertOutcome(
            "check_blocked.test_native_orm_without_mark", "failed", BLOCKED
        )
        self.assertOutcome("check_blocked.test_listen_without_mark", "failed", BLOCKED)
        self.assertPassed("check_blocked.test_unblocked_by_hand")

    def test_sync_tests_keep_pytest_djangos_behaviour(self) -> None:
        self.assertOutcome(
            "check_blocked.test_sync_orm_without_mark", "failed", BLOCKED
        )
        self.assertPassed(
            "check_blocked.test_sync_orm_with_mark",
            "check_blocked.test_sync_orm_rolled_back",
        )

    def test_broader_loops_keep_no_session_nor_pool(self) -> None:
        self.assertPassed(
            "check_module_loop.test_first",
            "check_module_loop.test_second",
            "check_session_loop.test_first",
            "check_session_loop.test_second",
            "check_session_loop.test_the_loop_keeps_nothing",
        )

    def test_a_fixture_on_another_loop_is_refused(self) -> None:
        self.assertOutcome(
            "check_module_loop.test_fixture_on_another_loop",
            "error",
            "runs on another event loop than the test",
            "@pytest_asyncio.fixture(loop_scope='module')",
        )

    def test_a_block_left_open_fails_the_test(self) -> None:
        self.assertOutcome(
            "check_left_open.test_leaves_a_block_open",
            "error",
            "left an async_atomic() block open on 'default'",
        )
        self.assertOutcome(
            "check_transactional.test_leaves_a_transaction_open",
            "error",
            "left a transaction open on 'default'",
        )

    def test_the_test_cases_still_run(self) -> None:
        self.assertPassed(
            "check_testcases.RolledBack.test_write",
            "check_testcases.RolledBack.test_sees_nothing",
            "check_testcases.Committed.test_commit",
            "check_testcases.Committed.test_flushed",
        )


class AutoModeTests(InnerProjectTestCase):
    """asyncio_mode=auto (no asyncio marks), and a default loop scope set in
    the configuration rather than on marks."""

    files = ["check_auto_mode.py"]
    options = ("--asyncio-mode=auto", "-o", "asyncio_default_test_loop_scope=module")

    def test_the_mark_isolates_and_the_blocker_blocks(self) -> None:
        self.assertPassed(
            "check_auto_mode.test_writes", "check_auto_mode.test_rolled_back"
        )
        self.assertOutcome("check_auto_mode.test_blocked", "failed", BLOCKED)
        self.assertEqual(rows_left(), dict.fromkeys(TABLES, 0))


class WithoutThePluginTests(InnerProjectTestCase):
    """What the plugin fixes: pytest-django alone isolates only the sync side."""

    files = ["check_rollback.py", "check_blocked.py"]
    plugin = False

    def test_async_writes_outlive_their_test(self) -> None:
        self.assertOutcome(
            "check_rollback.test_sees_nothing_of_the_last_test", "failed"
        )
        self.assertNotEqual(rows_left(), dict.fromkeys(TABLES, 0))

    def test_async_connections_are_not_blocked(self) -> None:
        self.assertPassed("check_blocked.test_async_connection_without_mark")


@unittest.skipIf(MISSING, SKIP_REASON)
class InertTests(unittest.TestCase):
    """Nothing happens unless pytest loads the plugin and pytest-django runs."""

    def test_the_package_never_imports_pytest(self) -> None:
        code = (
            "import sys, django_async_backend, django_async_backend.db, "
            "django_async_backend.db.transaction, django_async_backend.test; "
            "assert 'pytest' not in sys.modules, 'pytest imported'"
        )
        completed = subprocess.run(
            [sys.executable, "-c", code],
            env=_environment(autoload=False),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        self.assertEqual(completed.returncode, 0, completed.stderr)

    def test_without_pytest_django_it_does_nothing(self) -> None:
        run = run_pytest(["check_inert.py"], django=False)
        self.assertEqual(run.returncode, 0, run.output)
        self.assertOutcome(run, "check_inert.test_async_connections_are_not_blocked")

    def test_the_entry_point_loads_it(self) -> None:
        pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
        declared = pyproject["project"]["entry-points"]["pytest11"]
        self.assertEqual(declared, {"django_async_backend": PLUGIN})
        installed = importlib.metadata.entry_points(
            group="pytest11", name="django_async_backend"
        )
        if not installed:
            self.skipTest(
                "the installed django-async-backend predates its pytest11 entry "
                "point: reinstall it (pip install -e .) to check it loads"
            )
        run = run_pytest(["check_entry_point.py"], autoload=True)
        self.assertEqual(run.returncode, 0, run.output)
        self.assertOutcome(run, "check_entry_point.test_the_plugin_is_loaded")

    def assertOutcome(self, run: Run, test: str) -> None:
        outcome = run.outcome(test)
        self.assertEqual(outcome.status, "passed", outcome.message)


if __name__ == "__main__":
    unittest.main()
