"""3. Transactions: many small transactions, each with a savepoint.

Nested ``async_atomic()`` on this backend, nested ``conn.transaction()`` on
raw psycopg (with its default cursor and with ``ClientCursor``), and stock
Django's nested ``transaction.atomic`` in a function called through
``sync_to_async``. One cursor per transaction.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from benchmarks.common import LIKE_FOR_LIKE, Config, Contender, Ratio, Section
from benchmarks.loops import (
    SQL,
    Work,
    backend_transactions,
    psycopg_transactions,
    through_sync_to_async,
)


@contextlib.asynccontextmanager
async def section(url: str, config: Config) -> AsyncIterator[Section]:
    """The contenders, each timing ``config.transactions`` transactions."""
    n = config.transactions
    ours = Work(backend_transactions, n, 100)
    raw = Work(psycopg_transactions, n, 100)

    def stock(i: int) -> None:
        from django.db import connections, transaction

        with connections["stock"].cursor() as cursor:
            with transaction.atomic(using="stock"):
                cursor.execute(SQL, (i,))
                cursor.fetchone()
                with transaction.atomic(using="stock"):
                    cursor.execute(SQL, (i,))
                    cursor.fetchone()

    yield Section(
        key="transactions",
        title="Transactions",
        unit="transactions/s",
        description=(
            f"{n:,} transactions in a row, each `SELECT`, "
            "savepoint, `SELECT`, release, commit (6 round trips): nested "
            "`async_atomic()` vs raw psycopg's nested `conn.transaction()` vs "
            "stock Django's nested `atomic` called through `sync_to_async`."
        ),
        contenders=[
            Contender(
                "ours",
                "this backend, async_atomic",
                lambda: ours.on_backend("default"),
                ours=True,
            ),
            Contender(
                "psycopg",
                "raw psycopg, conn.transaction()",
                lambda: raw.on_psycopg(url, client_cursor=False),
            ),
            Contender(
                "psycopg_client",
                "raw psycopg ClientCursor, conn.transaction()",
                lambda: raw.on_psycopg(url, client_cursor=True),
            ),
            Contender(
                "stock",
                "stock Django, sync_to_async(atomic)",
                lambda: through_sync_to_async(stock, n, 100),
            ),
        ],
        ratios=[
            Ratio("ours", "psycopg_client", 1.05, "transactions", "cpu"),
            Ratio("ours", "psycopg_client", None, "transactions, throughput"),
            Ratio("ours", "psycopg", None, "Django's binding vs psycopg's default"),
            Ratio("ours", "stock"),
        ],
        note=LIKE_FOR_LIKE,
    )
