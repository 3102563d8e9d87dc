"""The benchmark views: the same three queries, three ways to reach PostgreSQL.

``/backend/<kind>/`` uses this backend's async connection (pooled alias);
``/stock/<kind>/`` uses Django's stock backend through ``sync_to_async``, one
hop per query, which is what Django's async ORM does for each queryset;
``/raw/<kind>/`` uses a psycopg_pool ``AsyncConnectionPool`` directly, the
anchor: what any async driver could do inside the same Django view.
``kind`` picks the query: ``trivial`` (``SELECT %s::int``) or ``1ms``
(1 ms of server time). All open one cursor per query, as ORM calls do.

``/backend/gather/`` runs three independent 5 ms queries at once
(``asyncio.gather``, each on an ``independent_connection()``), what only
native async can do; ``/stock/gather/`` runs the same three the only way
stock Django can, one after another.
"""

from __future__ import annotations

import asyncio
from typing import Any

from asgiref.sync import sync_to_async
from django.db import connections
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import path
from psycopg import AsyncClientCursor

from benchmarks.project import settings
from django_async_backend.db import async_connections

QUERIES = {
    "trivial": "SELECT %s::int",
    "1ms": "SELECT pg_sleep(0.001), %s::int",
    "gather": "SELECT pg_sleep(0.005), %s::int",
}
GATHER_ALIAS = "gather"
QUERIES_PER_REQUEST = 3
BACKEND_ALIAS = "pooled"
STOCK_ALIAS = "stock_pooled"


def text(body: str) -> HttpResponse:
    """A plain-text response with a Content-Length, as CommonMiddleware sets."""
    response = HttpResponse(body, content_type="text/plain")
    response["Content-Length"] = str(len(response.content))
    return response


def query_for(kind: str) -> str:
    try:
        return QUERIES[kind]
    except KeyError:
        raise Http404(kind) from None


async def gathered_query(sql: str, value: int) -> Any:
    async with async_connections.independent_connection():
        async with async_connections[GATHER_ALIAS].cursor() as cursor:
            await cursor.execute(sql, [value])
            return await cursor.fetchone()


async def backend_view(request: HttpRequest, kind: str) -> HttpResponse:
    sql = query_for(kind)
    if kind == "gather":  # the three queries at once
        rows = await asyncio.gather(
            *(gathered_query(sql, i) for i in range(QUERIES_PER_REQUEST))
        )
        return text(str(sum(row[-1] for row in rows)))
    connection = async_connections[BACKEND_ALIAS]
    total = 0
    for i in range(QUERIES_PER_REQUEST):
        async with connection.cursor() as cursor:
            await cursor.execute(sql, [i])
            row = await cursor.fetchone()
        total += row[-1]
    return text(str(total))


def stock_query(sql: str, value: int) -> Any:
    with connections[STOCK_ALIAS].cursor() as cursor:
        cursor.execute(sql, [value])
        return cursor.fetchone()


async def stock_view(request: HttpRequest, kind: str) -> HttpResponse:
    sql = query_for(kind)
    total = 0
    for i in range(QUERIES_PER_REQUEST):
        row = await sync_to_async(stock_query)(sql, i)
        total += row[-1]
    return text(str(total))


_raw_pools: dict[asyncio.AbstractEventLoop, Any] = {}


async def raw_pool() -> Any:
    """The loop's psycopg pool, opened on first use (uvicorn has one loop)."""
    loop = asyncio.get_running_loop()
    pool = _raw_pools.get(loop)
    if pool is None:
        from psycopg_pool import AsyncConnectionPool

        size = settings.POOL_SIZE
        pool = _raw_pools[loop] = AsyncConnectionPool(
            settings.DATABASE_URL,
            min_size=size,
            max_size=size,
            # The same (client-side binding) cursor as this backend's.
            kwargs={"autocommit": True, "cursor_factory": AsyncClientCursor},
            open=False,
        )
        await pool.open()
    return pool


async def raw_view(request: HttpRequest, kind: str) -> HttpResponse:
    sql = query_for(kind)
    pool = await raw_pool()
    total = 0
    async with pool.connection() as connection:
        for i in range(QUERIES_PER_REQUEST):
            async with connection.cursor() as cursor:
                await cursor.execute(sql, [i])
                row = await cursor.fetchone()
            total += row[-1]
    return text(str(total))


async def ping_view(request: HttpRequest) -> HttpResponse:
    return text("ok")


urlpatterns = [
    path("backend/<str:kind>/", backend_view),
    path("stock/<str:kind>/", stock_view),
    path("raw/<str:kind>/", raw_view),
    path("ping/", ping_view),
]
