"""AsyncioTestCase and AsyncioTransactionTestCase, used as users use them."""

import unittest
from pathlib import Path
from typing import Any

import psycopg
from django.test.testcases import (  # type: ignore[attr-defined]  # no stub
    DatabaseOperationForbidden,
)

import support
import testcase_samples
from django_async_backend.db import async_connections
from django_async_backend.db.transaction import async_atomic
from django_async_backend.test import AsyncioTestCase, AsyncioTransactionTestCase

support.ensure_test_tables()
HERE = Path(__file__).resolve().parent


async def count_accounts(alias: str = "default") -> int:
    async with async_connections[alias].cursor() as cursor:
        await cursor.execute("SELECT count(*) FROM testapp_account")
        return int((await cursor.fetchone())[0])


async def add_account(name: str, alias: str = "default") -> None:
    async with async_connections[alias].cursor() as cursor:
        await cursor.execute(
            "INSERT INTO testapp_account (name, balance) VALUES (%s, 0)", [name]
        )


class RollbackCaseTests(AsyncioTestCase):
    """Each test sees only the class data: the previous test was rolled back."""

    @classmethod
    async def asyncSetUpTestData(cls) -> None:
        await add_account("class-data")

    async def asyncSetUp(self) -> None:
        await add_account("set-up")
        self.pid_in_setup = await backend_pid()

    async def test_first_write(self) -> None:
        await add_account("first")
        self.assertEqual(await count_accounts(), 3)

    async def test_second_write(self) -> None:
        await add_account("second")
        self.assertEqual(await count_accounts(), 3)

    async def test_steps_share_one_connection(self) -> None:
        self.assertEqual(await backend_pid(), self.pid_in_setup)

    async def test_atomic_blocks_become_savepoints(self) -> None:
        try:
            async with async_atomic():
                await add_account("rolled-back")
                raise ValueError
        except ValueError:
            pass
        self.assertEqual(await count_accounts(), 2)

    async def test_durable_block_works_inside_the_test(self) -> None:
        async with async_atomic(durable=True):
            await add_account("durable")
        self.assertEqual(await count_accounts(), 3)

    async def test_assert_num_queries_counts_queries(self) -> None:
        async with self.assertNumQueries(2):
            await count_accounts()
            await count_accounts()

    async def test_assert_num_queries_fails_on_mismatch(self) -> None:
        with self.assertRaisesRegex(AssertionError, "1 queries executed, 2 expected"):
            async with self.assertNumQueries(2):
                await count_accounts()

    async def test_capture_on_commit_callbacks_executes_them(self) -> None:
        ran: list[str] = []

        async def hook() -> None:
            ran.append("async")

        async with self.captureOnCommitCallbacks(execute=True) as callbacks:
            await async_connections["default"].on_commit(hook)
            await async_connections["default"].on_commit(lambda: ran.append("sync"))
        self.assertEqual(len(callbacks), 2)
        self.assertEqual(ran, ["async", "sync"])

    async def test_other_databases_are_refused(self) -> None:
        with self.assertRaisesRegex(DatabaseOperationForbidden, "'other'"):
            async_connections["other"]


class RollbackCaseLeavesNothingTests(AsyncioTransactionTestCase):
    def test_nothing_is_committed(self) -> None:
        class Writes(AsyncioTestCase):
            @classmethod
            async def asyncSetUpTestData(cls) -> None:
                await add_account("class")

            async def test_write(self) -> None:
                await add_account("test")

        result = run_case(Writes)
        self.assertTrue(result.wasSuccessful(), result.errors + result.failures)
        with psycopg.connect(support.server_dsn()) as connection:
            row = connection.execute("SELECT count(*) FROM testapp_account").fetchone()
        self.assertEqual(row, (0,))


class TransactionCaseTests(AsyncioTransactionTestCase):
    databases = {"default", "other"}

    async def test_commits_are_real(self) -> None:
        async with async_atomic():
            await add_account("committed")
        # A second connection sees it: it was really committed.
        self.assertEqual(await count_accounts("other"), 1)

    async def test_tables_are_flushed_between_tests(self) -> None:
        self.assertEqual(await count_accounts(), 0)
        await add_account("flushed")

    async def test_on_commit_runs_after_commit(self) -> None:
        ran: list[int] = []
        async with async_atomic():
            await add_account("hooked")
            await async_connections["default"].on_commit(lambda: ran.append(1))
            self.assertEqual(ran, [])
        self.assertEqual(ran, [1])


class FixtureTests(AsyncioTransactionTestCase):
    fixtures = ["accounts"]

    async def test_fixtures_are_loaded(self) -> None:
        self.assertEqual(await count_accounts(), 2)


class ResetSequencesTests(AsyncioTransactionTestCase):
    reset_sequences = True

    async def test_ids_start_at_one(self) -> None:
        await add_account("first")
        async with async_connections["default"].cursor() as cursor:
            await cursor.execute("SELECT id FROM testapp_account")
            self.assertEqual(await cursor.fetchone(), (1,))


class RollbackCaseRefusesFixturesTests(unittest.TestCase):
    def test_fixtures_are_refused_with_the_alternative(self) -> None:
        class WithFixtures(AsyncioTestCase):
            fixtures = ["accounts"]

            async def test_nothing(self) -> None:
                pass

        result = run_case(WithFixtures)
        self.assertEqual(len(result.errors), 1)
        self.assertIn("asyncSetUpTestData", result.errors[0][1])


class SuiteLeavesNoSessionTests(unittest.TestCase):
    def test_connections_are_closed_after_the_class(self) -> None:
        before = support.count_sessions()

        class Queries(AsyncioTestCase):
            async def test_query(self) -> None:
                await count_accounts()

        class Commits(AsyncioTransactionTestCase):
            databases = {"default", "other"}

            async def test_query(self) -> None:
                await count_accounts()
                await count_accounts("other")

        for case in (Queries, Commits):
            self.assertTrue(run_case(case).wasSuccessful())
        self.assertEqual(support.count_sessions(), before)


class LeftOpenTransactionTests(AsyncioTransactionTestCase):
    def test_open_transaction_fails_the_test(self) -> None:
        class Leaky(AsyncioTransactionTestCase):
            async def test_leak(self) -> None:
                await async_connections["default"].set_autocommit(False)
                await count_accounts()

        result = run_case(Leaky)
        # Reported after the cleanups, as Django reports its _post_teardown.
        problems = result.failures + result.errors
        self.assertEqual(len(problems), 1)
        self.assertIn("left a transaction open", problems[0][1])

    def test_hanging_step_fails_with_a_clear_message(self) -> None:
        class Hangs(AsyncioTransactionTestCase):
            async_step_timeout = 0.5

            async def test_hang(self) -> None:
                async with async_connections["default"].cursor() as cursor:
                    await cursor.execute("SELECT pg_sleep(30)")

        result = run_case(Hangs)
        self.assertEqual(len(result.failures), 1)
        self.assertIn("did not finish within 0.5 s", result.failures[0][1])


class TestsThatCloseOrTidyUpTests(unittest.TestCase):
    """tests/testcase_samples.py: closing connections in tests, set-ups and
    tear-downs, cleanups that use them, queries and settings, under each
    runner users run."""

    def test_unittest(self) -> None:
        for case in testcase_samples.SAMPLES:
            with self.subTest(case=case.__name__):
                result = run_case(case)
                self.assertTrue(result.wasSuccessful(), result.errors + result.failures)

    def test_django_runner(self) -> None:
        output = run_runner(
            ["-m", "django", "test", "testcase_samples", "--noinput", "-v", "2"]
        )
        self.assertIn(f"Ran {testcase_samples.TESTS} tests", output)
        self.assertIn("OK", output)

    def test_pytest(self) -> None:
        output = run_runner(
            [
                "-m",
                "pytest",
                str(HERE / "testcase_samples.py"),
                "-o",
                "python_files=*.py",
                "-p",
                "no:cacheprovider",
                "-q",
                "--tb=short",
            ]
        )
        self.assertIn(f"{testcase_samples.TESTS} passed", output)


def run_runner(arguments: list[str]) -> str:
    """Run a test runner in a child process on the samples; its output."""
    completed = support.run_python(arguments)
    output = completed.stdout + completed.stderr
    if completed.returncode != 0:
        raise AssertionError(output)
    return output


def run_case(case: Any) -> unittest.TestResult:
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(case)
    result = unittest.TestResult()
    suite.run(result)
    return result


async def backend_pid() -> int:
    async with async_connections["default"].cursor() as cursor:
        await cursor.execute("SELECT pg_backend_pid()")
        return int((await cursor.fetchone())[0])


if __name__ == "__main__":
    unittest.main()
