"""Notes printed under a section's tables in docs/benchmarks.md."""

from __future__ import annotations

LIKE_FOR_LIKE = (
    "The targets compare like for like: the same psycopg cursor class on "
    "both sides. This backend binds parameters client-side by default "
    "(`ClientCursor`), as Django's postgresql backend does, so that SQL "
    "Django writes for client-side binding keeps working; raw psycopg binds "
    "them on the server by default. The ratio to raw psycopg's default "
    "measures that choice of psycopg cursor, not this backend, and is shown "
    "without a target."
)

# Notes printed under a section's tables.
NOTES = {
    "sequential": (
        '† `OPTIONS = {"server_side_binding": True, "prepare_threshold": 5}`: '
        "psycopg's own defaults (parameters bound by the server, statements "
        "prepared after 5 executions), which raw psycopg uses above. This "
        "backend's default is Django's: parameters bound client-side by "
        "psycopg's `ClientCursor`, no prepared statements. " + LIKE_FOR_LIKE
    ),
    "concurrency": LIKE_FOR_LIKE,
    "transactions": LIKE_FOR_LIKE,
    "asgi": (
        "Every request also goes through uvicorn and Django's ASGI handler, "
        "which cost far more CPU than three queries, and everything shares two "
        "cores, so the server is CPU-bound long before the database is. Stock "
        "Django's queries do not serialize here: its ASGI handler gives each "
        "request a thread of its own (`ThreadSensitiveContext`), and its pool "
        "spares the connection set-up. Raw psycopg_pool in the same view is the "
        "ceiling for any async driver behind Django's ASGI handler, hence the "
        "target: server CPU per request within 3% of it. In the gather "
        "scenario the one uvicorn worker is CPU-bound from 10 clients on "
        "(requests per second times server CPU per request is about one core), so "
        "the 10 ms a request saves by running its three queries at once mostly "
        "waits behind other requests' handling; with one client it shows whole."
    ),
    "orm": (
        "The same model, table and calls on both sides; only the alias "
        "differs. `async for` spends nearly all of its time building model "
        "instances, Django's own code on both sides, so a native fetch (one "
        "thread hop fewer per queryset) changes it little; `aget()` and "
        "`acreate()` are one round trip each, where the thread hop of stock "
        "Django's async ORM weighs most."
    ),
}
