"""What every benchmark shares: the run's size, contenders, rounds and results.

A section (sequential, concurrency, …) is a list of :class:`Contender`; each
round runs every contender once, in an order rotated from round to round
(interleaved, so that a noisy moment hurts everybody alike). A contender's
``run`` does its own untimed set-up and warm-up, then times the work and
returns a :class:`Sample`. Ratios are taken within a round, then the median
over rounds is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class Config:
    rounds: int = 5
    sequential: int = 5000  # round trips per contender and round
    tasks: int = 100
    per_task: int = 30
    transactions: int = 10_000
    clients: int = 100
    requests: int = 2000  # HTTP requests per contender and round (Python client)
    asgi_seconds: float = 4.0  # seconds per contender and round (wrk)
    rows: int = 1_000_000
    orm: int = 3000  # aget()/acreate() calls per contender and round
    bulk_rows: int = 100_000  # rows loaded per contender and round (copy)
    inserts: int = 1000  # INSERTs per contender and round (pipeline)


QUICK = Config(
    rounds=2, sequential=1000, per_task=10, transactions=1000, requests=500, orm=500,
    bulk_rows=20_000, asgi_seconds=1.0,
)  # fmt: skip


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.project.settings")
    import django

    django.setup()


def database_url() -> str:
    from benchmarks.project import settings

    return settings.DATABASE_URL


@contextlib.contextmanager
def table(url: str, name: str, *statements: str) -> Iterator[None]:
    """Table ``name`` made by ``statements`` (plain psycopg), dropped after."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        for statement in (f"DROP TABLE IF EXISTS {name}", *statements):
            connection.execute(statement)
    try:
        yield
    finally:
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(f"DROP TABLE IF EXISTS {name}")


@dataclass
class Sample:
    """One timed run: ``rate`` operations per second, and what it cost.

    ``cpu``: CPU time per operation (µs), of this process (all threads) or,
    for the ASGI benchmark, of the server process. ``p50`` and ``p99``: the
    median and 99th percentile latency (ms; ASGI benchmark).
    """

    rate: float
    cpu: float
    p50: float | None = None
    p99: float | None = None


Measure = Literal["rate", "cpu", "p50"]  # a field of Sample


@dataclass
class Contender:
    key: str
    label: str
    run: Callable[[], Awaitable[Sample]]
    ours: bool = False  # this backend, highlighted in the table and chart


@dataclass
class Ratio:
    """``numerator`` ÷ ``denominator`` (contender keys) of ``measure``.

    A target is a ceiling, on ``cpu`` (CPU per operation: the cost this
    backend adds to the limit it is measured against) or ``p50`` (median
    latency); throughput ratios (``rate``) are shown without one. ``note``: a
    short name for a target (the chart), else a remark.
    """

    numerator: str
    denominator: str
    target: float | None = None
    note: str = ""
    measure: Measure = "rate"

    def __post_init__(self) -> None:
        assert self.target is None or self.measure != "rate", self

    def met(self, value: float) -> bool:
        assert self.target is not None
        return value <= self.target

    def share(self, value: float) -> float:
        """How far ``value`` is from the target: 1 just met, above 1 better."""
        assert self.target is not None
        return self.target / value


# Under the tables of the sections that compare with raw psycopg.
LIKE_FOR_LIKE = (
    "The targets compare like for like: the same psycopg cursor class on "
    "both sides. This backend binds parameters client-side by default "
    "(`ClientCursor`), as Django's postgresql backend does, so that SQL "
    "Django writes for client-side binding keeps working; raw psycopg binds "
    "them on the server by default. The ratio to raw psycopg's default "
    "measures that choice of psycopg cursor, not this backend, and is shown "
    "without a target."
)


@dataclass
class Section:
    key: str
    title: str
    unit: str
    description: str
    contenders: list[Contender]
    ratios: list[Ratio]
    note: str = ""  # printed under the tables
    cpu_label: str = "client CPU µs/op"
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    seconds: float = 0.0
    # 1-minute load average when the benchmark started and ended.
    load: tuple[float, float] = (0.0, 0.0)

    def values(self, key: str, measure: str = "rate") -> list[float]:
        return [getattr(sample, measure) for sample in self.samples[key]]

    def median(self, key: str, measure: str = "rate") -> float:
        return statistics.median(self.values(key, measure))

    def ratio(self, ratio: Ratio) -> float:
        """Median over rounds of the within-round ratio."""
        numerators = self.values(ratio.numerator, ratio.measure)
        denominators = self.values(ratio.denominator, ratio.measure)
        pairs = zip(numerators, denominators, strict=True)
        return statistics.median(num / den for num, den in pairs)

    def label(self, key: str) -> str:
        return next(c.label for c in self.contenders if c.key == key)


# What each section module provides: set up, yield the section, tear down.
SectionFactory = Callable[[str, Config], AbstractAsyncContextManager[Section]]


async def run_rounds(section: Section, rounds: int) -> Section:
    """Run every contender ``rounds`` times, interleaved; fill ``section``."""
    started = time.perf_counter()
    load = os.getloadavg()[0]
    contenders = section.contenders
    section.samples = {c.key: [] for c in contenders}
    for number in range(rounds):
        shift = number % len(contenders)
        for contender in [*contenders[shift:], *contenders[:shift]]:
            sample = await contender.run()
            section.samples[contender.key].append(sample)
            extra = f"  CPU {sample.cpu:6.0f} µs/op"
            if sample.p50 is not None and sample.p99 is not None:
                extra += f"  p50 {sample.p50:6.1f} ms  p99 {sample.p99:6.1f} ms"
            print(
                f"  round {number + 1}/{rounds}  {contender.label:<46} "
                f"{sample.rate:10.0f} {section.unit}{extra}",
                flush=True,
            )
    section.seconds = time.perf_counter() - started
    section.load = (load, os.getloadavg()[0])
    return section


async def in_task(work: Callable[[], Coroutine[Any, Any, Sample]]) -> Sample:
    """``work()`` in a task of its own: this backend's connections are the
    task's, released when it ends (a fresh connection for every run)."""
    return await asyncio.create_task(work())


class Timer:
    """Wall-clock and process CPU time from its creation."""

    def __init__(self) -> None:
        self.cpu = time.process_time()
        self.wall = time.perf_counter()

    def sample(self, operations: int) -> Sample:
        wall = time.perf_counter() - self.wall
        cpu = time.process_time() - self.cpu
        return Sample(operations / wall, cpu=cpu / operations * 1e6)
