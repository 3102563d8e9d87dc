"""8. Memory: stream rows through a server-side cursor, in a fresh process.

``python -m benchmarks.memory {ours,psycopg} ROWS`` streams ROWS rows of
``(int, 32-char text)`` and prints one JSON line: the peak RSS of the process
(Linux's VmHWM), the peak before streaming, the rows and the time. The parent
(:func:`measure`) runs it in a subprocess so that nothing else counts towards
the peak.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SQL = "SELECT g, md5(g::text) FROM generate_series(1, %s) AS g"
LIMIT_MB = 100.0


def peak_rss_mb() -> float:
    """The peak resident set size of this process so far (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


@dataclass
class MemoryResult:
    mode: str  # "ours" or "psycopg"
    rows: int
    seconds: float
    baseline_mb: float
    peak_mb: float

    @property
    def rate(self) -> float:
        return self.rows / self.seconds

    @property
    def label(self) -> str:
        if self.mode == "ours":
            return "this backend, chunked_cursor()"
        return "raw psycopg, named cursor"


async def stream_ours(rows: int) -> tuple[int, float]:
    from django_async_backend.db import async_connections

    connection = async_connections["default"]
    await connection.ensure_connection()
    baseline = peak_rss_mb()
    seen = 0
    async with connection.chunked_cursor() as cursor:
        await cursor.execute(SQL, (rows,))
        async for row in cursor:
            seen += row[0] > 0
    await connection.close()
    return seen, baseline


async def stream_psycopg(rows: int) -> tuple[int, float]:
    import psycopg

    from benchmarks.common import database_url

    async with await psycopg.AsyncConnection.connect(database_url()) as connection:
        baseline = peak_rss_mb()
        seen = 0
        async with connection.cursor(name="bench_stream") as cursor:
            await cursor.execute(SQL, (rows,))
            async for row in cursor:
                seen += row[0] > 0
    return seen, baseline


def child(mode: str, rows: int) -> None:
    from benchmarks.common import setup_django

    setup_django()
    stream = stream_ours if mode == "ours" else stream_psycopg
    started = time.perf_counter()
    seen, baseline = asyncio.run(stream(rows))
    seconds = time.perf_counter() - started
    if seen != rows:
        raise SystemExit(f"streamed {seen} rows, expected {rows}")
    report = {"rows": seen, "seconds": seconds, "baseline_mb": baseline}
    print(json.dumps({**report, "peak_mb": peak_rss_mb()}))


def measure(mode: str, rows: int, url: str) -> MemoryResult:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", mode, str(rows)],
        cwd=ROOT,
        env=dict(os.environ, DATABASE_URL=url),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    data = json.loads(out.strip().splitlines()[-1])
    return MemoryResult(
        mode, int(data["rows"]), data["seconds"], data["baseline_mb"], data["peak_mb"]
    )


if __name__ == "__main__":
    child(sys.argv[1], int(sys.argv[2]))
