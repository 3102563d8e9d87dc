"""Time 200 trivial database tests: AsyncioTestCase vs AsyncioTransactionTestCase.

Run (in .venv, with Django configured for the tests): PYTHONPATH=.:tests
DJANGO_SETTINGS_MODULE=settings python -m benchmarks.testcases. Prints the
time of each and their ratio; the rollback class should be several times
faster, since the other flushes every table after each test. (Not on the
benchmarks page: README's Development section quotes it.)
"""

from __future__ import annotations

import os
import sys
import time
import unittest
from pathlib import Path
from typing import Any

N_TESTS = int(os.environ.get("N_TESTS", "200"))


def make_case(base: type, name: str) -> type:
    async def test(self: Any) -> None:
        from django_async_backend.db import async_connections

        async with async_connections["default"].cursor() as cursor:
            await cursor.execute(
                "INSERT INTO testapp_item (name, created) VALUES (%s, now())", [name]
            )
            await cursor.execute("SELECT count(*) FROM testapp_item")
            assert (await cursor.fetchone())[0] == 1

    attrs = {f"test_{i:03d}": test for i in range(N_TESTS)}
    return type(name, (base,), attrs)


def time_case(case: type) -> float:
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(case)
    result = unittest.TestResult()
    start = time.perf_counter()
    suite.run(result)
    elapsed = time.perf_counter() - start
    if not result.wasSuccessful():
        raise SystemExit(f"{case.__name__} failed: {result.errors + result.failures}")
    return elapsed


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
    import support

    support.ensure_test_tables()
    from django_async_backend.test import AsyncioTestCase, AsyncioTransactionTestCase

    rollback = time_case(make_case(AsyncioTestCase, "RollbackBench"))
    flush = time_case(make_case(AsyncioTransactionTestCase, "FlushBench"))
    print(f"{N_TESTS} trivial database tests")
    print(f"  AsyncioTestCase             {rollback:6.2f} s")
    print(f"  AsyncioTransactionTestCase  {flush:6.2f} s")
    print(f"  ratio                       {flush / rollback:6.1f}x")


if __name__ == "__main__":
    main()
