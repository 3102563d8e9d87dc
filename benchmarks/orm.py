"""5. The ORM: Django's async API, natively on this backend vs stock Django.

The same calls on the same model (benchmarks/project/models.py) and table,
on this backend's ``orm`` alias (native, ``AsyncModelMixin``) and on the
stock ``orm_stock`` one, where they are Django's own async ORM (a thread
through ``sync_to_async`` per call); the limit is Django's sync ORM doing the
same calls, a whole run in one thread.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractContextManager
from typing import Any

from benchmarks import common
from benchmarks.common import Config, Contender, Ratio, Sample, Section, Timer, in_task

ROWS = 10_000
WARMUP = 100
STOCK = "orm_stock"
OURS = "orm"
Work = Callable[[], Coroutine[Any, Any, Sample]]


def table(url: str) -> AbstractContextManager[None]:
    """The model's table with ``ROWS`` rows, ids 1..ROWS, while open."""
    from benchmarks.project.models import TABLE

    return common.table(
        url,
        TABLE,
        f"CREATE TABLE {TABLE} (id bigserial PRIMARY KEY, value integer "
        "NOT NULL, name varchar(40) NOT NULL)",
        f"INSERT INTO {TABLE} (value, name) SELECT i, 'item ' || i "
        f"FROM generate_series(1, {ROWS}) AS i",
    )


@contextlib.asynccontextmanager
async def section(url: str, config: Config) -> AsyncIterator[Section]:
    """Contenders timing ``n`` gets, ``n`` creates, and ``ROWS``-row iterations."""
    from django.db import connections

    from benchmarks.project.models import Item
    from django_async_backend.db.models import run_sync

    n = config.orm

    async def aget(alias: str) -> Sample:
        items = Item.objects.using(alias)
        for i in range(WARMUP):
            await items.aget(pk=i % ROWS + 1)
        timer = Timer()
        for i in range(n):
            await items.aget(pk=i % ROWS + 1)
        return timer.sample(n)

    ours_items = Item.objects.using(OURS)

    def get(i: int) -> Any:  # existing sync code, one get()
        # On one queryset, as aget() runs: the same ORM work on both sides.
        return ours_items.get(pk=i % ROWS + 1)

    async def run_sync_get() -> Sample:
        for i in range(WARMUP):
            await run_sync(get, i)
        timer = Timer()
        for i in range(n):
            await run_sync(get, i)
        return timer.sample(n)

    async def acreate(alias: str) -> Sample:
        items = Item.objects.using(alias)
        for i in range(WARMUP):
            await items.acreate(value=i, name="warm-up")
        timer = Timer()
        for i in range(n):
            await items.acreate(value=i, name="created")
        sample = timer.sample(n)
        await items.filter(pk__gt=ROWS).adelete()
        return sample

    async def iterate(alias: str) -> Sample:
        items = Item.objects.using(alias)
        await items.aget(pk=1)  # warm-up: the connection is open
        rows = items.filter(pk__lte=ROWS).order_by("pk")
        timer = Timer()
        count = 0
        async for _ in rows:
            count += 1
        assert count == ROWS, count
        return timer.sample(count)

    def sync_get() -> Sample:
        items = Item.objects.using(STOCK)
        for i in range(WARMUP):
            items.get(pk=i % ROWS + 1)
        timer = Timer()
        for i in range(n):
            items.get(pk=i % ROWS + 1)
        return timer.sample(n)

    def sync_create() -> Sample:
        items = Item.objects.using(STOCK)
        for i in range(WARMUP):
            items.create(value=i, name="warm-up")
        timer = Timer()
        for i in range(n):
            items.create(value=i, name="created")
        sample = timer.sample(n)
        items.filter(pk__gt=ROWS).delete()
        return sample

    def sync_iterate() -> Sample:
        items = Item.objects.using(STOCK)
        items.get(pk=1)  # warm-up: the connection is open
        timer = Timer()
        count = sum(1 for _ in items.filter(pk__lte=ROWS).order_by("pk"))
        assert count == ROWS, count
        return timer.sample(count)

    def in_thread(body: Callable[[], Sample]) -> Work:
        # Django's sync ORM, the limit: a whole timed run in one worker thread
        # (no hop per call), its connection closed there afterwards.
        def run_and_close() -> Sample:
            try:
                return body()
            finally:
                connections[STOCK].close()

        async def run() -> Sample:
            return await asyncio.to_thread(run_and_close)

        return run

    def native(work: Callable[[str], Coroutine[Any, Any, Sample]], alias: str) -> Work:
        async def run() -> Sample:
            return await in_task(lambda: work(alias))

        return run

    section = Section(
        key="orm",
        title="The ORM",
        unit="operations/s",
        description=(
            f"Django's async ORM API on one model: `aget(pk=...)` ({n:,} in a "
            f"row), `acreate()` ({n:,} in a row), and `async for` over a "
            f"{ROWS:,}-row queryset (an operation is a row). This backend runs "
            "them natively (`AsyncModelMixin`); on the stock alias the same "
            "calls are Django's own async ORM: each one in a thread through "
            "`sync_to_async`, on the stock backend (persistent connection). "
            "The limit is Django's own sync ORM doing the same calls (`get()`, "
            "`create()`, `for`) on the stock backend, a whole run in one "
            "thread: no thread hop per call. "
            "Both sides run with `synchronous_commit=off`: the server's wait "
            "for the disk at each autocommitted INSERT (about 1 ms here, the "
            "same for both) would otherwise hide what the clients do."
        ),
        contenders=[
            Contender("ours_aget", "this backend, aget()", native(aget, OURS), True),
            Contender("stock_aget", "stock Django, aget()", native(aget, STOCK)),
            Contender(
                "sync_get", "Django sync get(), no thread hop", in_thread(sync_get)
            ),
            Contender(
                "ours_run_sync_get",
                "this backend, run_sync(get)",
                lambda: in_task(run_sync_get),
                True,
            ),
            Contender(
                "ours_acreate",
                "this backend, acreate()",
                native(acreate, OURS),
                True,
            ),
            Contender(
                "stock_acreate", "stock Django, acreate()", native(acreate, STOCK)
            ),
            Contender(
                "sync_create",
                "Django sync create(), no thread hop",
                in_thread(sync_create),
            ),
            Contender(
                "ours_iter",
                "this backend, async for (rows)",
                native(iterate, OURS),
                True,
            ),
            Contender(
                "stock_iter",
                "stock Django, async for (rows)",
                native(iterate, STOCK),
            ),
            Contender(
                "sync_iter",
                "Django sync for (rows), no thread hop",
                in_thread(sync_iterate),
            ),
        ],
        ratios=[
            # Targets: client CPU per operation against Django's own sync
            # ORM (plus the event loop's cost of an async round trip;
            # issue 16).
            Ratio("ours_aget", "sync_get", 1.15, "aget vs sync get", "cpu"),
            Ratio("ours_acreate", "sync_create", 1.15, "acreate vs sync create", "cpu"),
            Ratio("ours_iter", "sync_iter", 1.05, "async for vs sync for", "cpu"),
            Ratio(
                "ours_run_sync_get",
                "ours_aget",
                1.0,
                "run_sync(get) vs native aget",
                "cpu",
            ),
            Ratio("ours_aget", "stock_aget", None, "ORM aget vs stock"),
            Ratio("ours_acreate", "stock_acreate", None, "ORM acreate vs stock"),
            Ratio("ours_iter", "stock_iter", None, "ORM async for vs stock"),
        ],
        note=(
            "The same model, table and calls on both sides; only the alias "
            "differs. `async for` spends nearly all of its time building model "
            "instances, Django's own code on both sides, so a native fetch (one "
            "thread hop fewer per queryset) changes it little; `aget()` and "
            "`acreate()` are one round trip each, where the thread hop of stock "
            "Django's async ORM weighs most."
        ),
    )
    with table(url):
        yield section
