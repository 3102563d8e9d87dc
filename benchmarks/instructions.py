"""Instructions per operation, under callgrind: where the cost goes, steadily.

    python -m benchmarks.instructions [SCENARIO ...]

CPU time per operation swings with the machine's load; the number of
instructions the interpreter executes does not. Each scenario runs twice in
a child process under ``valgrind --tool=callgrind`` (Debian's ``valgrind``),
with SMALL and LARGE operations; the difference of the two totals divided
by LARGE - SMALL is the cost of one operation, start-up and set-up
cancelled out. Each of this backend's scenarios has its raw counterpart (the
same work on psycopg or psycopg_pool, the limit of the benchmarks), and the
pieces of a checkout are measured one by one: an empty
``independent_connection()`` block, the wrapper made in it, the checkout.
The ORM's (``aget()``, ``acreate()`` on the ``orm`` alias) are measured
against Django's sync ORM with no event loop, and the async driver's own
round trip against psycopg's sync one: the floor of any ORM on asyncio.
Against the PostgreSQL of ``DATABASE_URL``, with the benchmark project's
aliases (benchmarks/project/settings.py). Slow: about 40 s a scenario.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import database_url, setup_django
from benchmarks.loops import SQL, backend_transactions, psycopg_transactions

SMALL, LARGE = 300, 1300
TASKS = 100  # concurrent tasks (or requests) in the contended scenarios
POOL_SIZE = 10  # as the benchmark project's pooled alias
Op = Callable[[], Coroutine[Any, Any, None]]


async def scenario(name: str) -> tuple[Op, Callable[[], Awaitable[None]]]:
    """The operation of ``name`` and the clean-up once it has run."""
    import psycopg
    from psycopg_pool import AsyncConnectionPool

    from django_async_backend.db import async_connections

    url = database_url()
    pool = AsyncConnectionPool(
        url,
        min_size=POOL_SIZE,
        max_size=POOL_SIZE,
        open=False,
        kwargs={
            "autocommit": True,
            "cursor_factory": psycopg.AsyncClientCursor,
            "prepare_threshold": None,  # as Django's connections
        },
    )
    await pool.open(wait=True)
    raw = await pool.getconn()
    ours = async_connections["default"]
    await ours.ensure_connection()

    async def query(cursor: Any) -> None:
        await cursor.execute(SQL, (1,))
        await cursor.fetchone()

    async def scope() -> None:
        async with async_connections.independent_connection():
            pass

    async def wrapper() -> None:
        async with async_connections.independent_connection():
            async_connections["pooled"]

    async def checkout() -> None:
        async with async_connections.independent_connection():
            await async_connections["pooled"].ensure_connection()

    async def checkout_raw() -> None:
        async with pool.connection():
            pass

    async def cursor() -> None:
        async with ours.cursor() as c:
            await query(c)

    ours_cursor = await ours.cursor()
    raw_reused = raw.cursor()

    async def cursor_raw() -> None:
        async with raw.cursor() as c:
            await query(c)

    async def one_checkout() -> None:
        async with async_connections.independent_connection():
            async with async_connections["pooled"].cursor() as c:
                await query(c)

    async def one_checkout_raw() -> None:
        async with pool.connection() as connection, connection.cursor() as c:
            await query(c)

    async def request() -> None:  # a view's three queries, in its own task
        connection = async_connections["pooled"]
        for _ in range(3):
            async with connection.cursor() as c:
                await query(c)

    async def request_raw() -> None:
        async with pool.connection() as connection:
            for _ in range(3):
                async with connection.cursor() as c:
                    await query(c)

    def contended(op: Op, in_tasks: bool) -> Op:
        """``TASKS`` at once: each takes one of the operations (a new task
        for each operation when ``in_tasks``, as ASGI requests are)."""

        async def each() -> None:
            await (asyncio.create_task(op()) if in_tasks else op())

        return each

    ops: dict[str, Op] = {
        "scope": scope,
        "wrapper": wrapper,
        "checkout": checkout,
        "checkout_raw": checkout_raw,
        "cursor": cursor,
        "cursor_raw": cursor_raw,
        "reused": lambda: query(ours_cursor),
        "reused_raw": lambda: query(raw_reused),
        "transaction": lambda: backend_transactions(ours, 1),
        "transaction_raw": lambda: psycopg_transactions(raw, 1),
        "contended": contended(one_checkout, False),
        "contended_raw": contended(one_checkout_raw, False),
        "requests": contended(request, True),
        "requests_raw": contended(request_raw, True),
    }

    # The ORM (the orm alias, native), against Django's sync ORM (SYNC, run
    # with no event loop).
    from benchmarks.orm import OURS, ROWS
    from benchmarks.project.models import Item
    from django_async_backend.db.models import run_sync

    items = Item.objects.using(OURS)
    count = iter(range(10**9))

    async def aget() -> None:
        await items.aget(pk=next(count) % ROWS + 1)

    async def acreate() -> None:
        await items.acreate(value=1, name="created")

    def get(i: int) -> None:  # existing sync code, on the same queryset
        items.get(pk=i % ROWS + 1)

    async def run_sync_get() -> None:
        await run_sync(get, next(count))

    ops |= {
        "aget": aget,
        "run_sync": run_sync_get,
        "acreate": acreate,
    }

    async def clean_up() -> None:
        await ours_cursor.close()
        await raw_reused.close()
        await pool.putconn(raw)
        await pool.close()

    return ops[name], clean_up


def sync_scenario(name: str) -> Callable[[], None]:
    """The sync twin of ``name``: Django's sync ORM, or psycopg's Connection."""
    import psycopg

    from benchmarks.orm import ROWS, STOCK
    from benchmarks.project.models import Item

    items = Item.objects.using(STOCK)
    count = iter(range(10**9))
    connection = psycopg.connect(
        database_url(),
        autocommit=True,
        cursor_factory=psycopg.ClientCursor,
        prepare_threshold=None,
    )
    cursor = connection.cursor()

    def get() -> None:
        items.get(pk=next(count) % ROWS + 1)

    def create() -> None:
        items.create(value=1, name="created")

    def roundtrip() -> None:
        cursor.execute(SQL, (1,))
        cursor.fetchone()

    ops: dict[str, Callable[[], None]] = {
        "get_sync": get,
        "create_sync": create,
        "roundtrip_sync": roundtrip,
    }
    return ops[name]


SCENARIOS = (
    "scope",
    "wrapper",
    "checkout",
    "checkout_raw",
    "cursor",
    "cursor_raw",
    "reused",
    "reused_raw",
    "transaction",
    "transaction_raw",
    "contended",
    "contended_raw",
    "requests",
    "requests_raw",
    "aget",
    "get_sync",
    "run_sync",
    "acreate",
    "create_sync",
    "roundtrip_sync",
)
CONTENDED = ("contended", "contended_raw", "requests", "requests_raw")
SYNC = ("get_sync", "create_sync", "roundtrip_sync")
# Each scenario and what it is measured against (the ratio printed).
AGAINST = {
    **{name: f"{name}_raw" for name in SCENARIOS if f"{name}_raw" in SCENARIOS},
    "aget": "get_sync",
    "run_sync": "aget",
    "acreate": "create_sync",
    # The async driver's round trip (reused_raw) against the sync one.
    "reused_raw": "roundtrip_sync",
}


async def child(name: str, n: int) -> None:
    """Run ``n`` operations of ``name`` (warmed up), ``TASKS`` at a time if
    the scenario is a contended one."""
    op, clean_up = await scenario(name)
    for _ in range(30):
        await op()
    if name in CONTENDED:
        per_task = n // TASKS

        async def worker() -> None:
            for _ in range(per_task):
                await op()

        await asyncio.gather(*(worker() for _ in range(TASKS)))
    else:
        for _ in range(n):
            await op()
    await clean_up()


def instructions(name: str, n: int) -> int:
    """The instructions of a child process running ``n`` of ``name``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        command = [
            *("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"),
            *(sys.executable, "-m", "benchmarks.instructions", "--child", name),
            str(n),
        ]
        from benchmarks.orm import table

        with table(database_url()):  # the ORM scenarios' rows
            subprocess.run(command, check=True, capture_output=True)
        found = re.search(r"^summary: (\d+)", out.read_text(), re.M)
    if found is None:
        raise RuntimeError(f"callgrind wrote no summary for {name}")
    return int(found.group(1))


def per_operation(name: str) -> int:
    return (instructions(name, LARGE) - instructions(name, SMALL)) // (LARGE - SMALL)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions")
    parser.add_argument("scenarios", nargs="*", help=f"among {', '.join(SCENARIOS)}")
    parser.add_argument("--child", nargs=2, metavar=("SCENARIO", "N"))
    args = parser.parse_args(argv)
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    setup_django()
    if args.child:
        name, n = args.child[0], int(args.child[1])
        if name in SYNC:  # no event loop: Django's sync ORM, as in a thread
            sync_op = sync_scenario(name)
            for _ in range(30 + n):
                sync_op()
        else:
            asyncio.run(child(name, n))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: apt-get install valgrind", file=sys.stderr)
        return 2
    print(f"Python {sys.version.split()[0]}; instructions per operation")
    results: dict[str, int] = {}
    for name in args.scenarios or SCENARIOS:
        results[name] = per_operation(name)
        line = f"{name:<16} {results[name]:>10,}"
        for ours, limit in AGAINST.items():
            if name in (ours, limit) and ours in results and limit in results:
                ratio = results[ours] / results[limit]
                line += f"   {ours} / {limit}: {ratio:.2f}"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
