"""The live page's server-sent events: every committed transfer, pushed.

``services.transfer()`` sends a NOTIFY on ``CHANNEL`` inside its
transaction: PostgreSQL delivers it at COMMIT, and drops it with a leg or a
batch that rolls back. Each open /live/ page holds one stream (the async
view ``/api/events/``): a ``listen()`` block on the listener connection that
every stream of this server process shares, never a pool slot. A closed tab
makes Django cancel its view, which leaves the block at once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from django.db import NotSupportedError, OperationalError

from django_async_backend.db.notifications import listen

from . import services
from .services import ALIAS, CHANNEL, money

SNAPSHOT_EVERY = 0.25  # seconds: a stream re-reads the totals at most this often
KEEPALIVE = 15.0  # seconds without a transfer before a comment line is sent
RETRY_MS = 2000  # how soon the browser reconnects a stream that ended


class Streams:
    """The open streams of this process, by the listener connection they use."""

    def __init__(self) -> None:
        self.by_listener: Counter[int] = Counter()

    @property
    def open(self) -> int:
        return sum(self.by_listener.values())

    @property
    def connections(self) -> int:
        return len(self.by_listener)

    def opened(self, pid: int) -> None:
        self.by_listener[pid] += 1

    def closed(self, pid: int) -> None:
        self.by_listener[pid] -= 1
        if self.by_listener[pid] <= 0:
            del self.by_listener[pid]


STREAMS = Streams()


async def totals_json() -> dict[str, Any]:
    """One consistent snapshot, the on_commit feed and the open streams."""
    snap = await services.snapshot()
    return {
        "total": snap.total,
        "total_display": money(snap.total),
        "transfers": snap.transfers,
        "announced": services.FEED.committed,
        "accounts": [
            {"name": a.name, "balance": a.balance, "display": money(a.balance)}
            for a in snap.accounts
        ],
        "recent": [r.as_json() for r in services.FEED.recent],
        "listeners": STREAMS.open,
        "listener_connections": STREAMS.connections,
    }


def event(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


async def stream() -> AsyncIterator[bytes]:
    """The events of one page: its totals, then each transfer as it commits."""
    entered = False
    try:
        async with listen(CHANNEL, using=ALIAS) as notifications:
            entered = True
            pid = notifications.backend_pid or 0
            STREAMS.opened(pid)
            try:
                yield f"retry: {RETRY_MS}\n\n".encode() + event(
                    "totals", await totals_json()
                )
                loop = asyncio.get_running_loop()
                last, stale = loop.time(), False
                while True:
                    wait = KEEPALIVE
                    if stale:  # a burst: the totals follow within SNAPSHOT_EVERY
                        wait = max(0.0, last + SNAPSHOT_EVERY - loop.time())
                    try:
                        item = await notifications.get(timeout=wait)
                    except OperationalError:
                        # The listener connection was lost: end the stream; the
                        # browser reconnects and gets fresh totals.
                        yield event("lost", {"retry_ms": RETRY_MS})
                        return
                    if item is not None:
                        transfer = json.loads(item.payload)
                        sent = transfer.pop("sent")
                        transfer["latency_ms"] = round((time.time() - sent) * 1000, 2)
                        transfer["listeners"] = STREAMS.open
                        transfer["listener_connections"] = STREAMS.connections
                        yield event("transfer", transfer)
                        stale = True
                    if stale and loop.time() - last >= SNAPSHOT_EVERY:
                        yield event("totals", await totals_json())
                        last, stale = loop.time(), False
                    elif item is None and not stale:
                        yield b": keep-alive\n\n"
            finally:
                STREAMS.closed(pid)
    except NotSupportedError as error:
        if entered:
            raise
        # LISTEN needs a direct connection (behind PgBouncer listen() refuses,
        # docs/listen-notify.md#pgbouncer): say so and end the stream.
        yield event("unsupported", {"error": str(error)})
