"""What every benchmark shares: Django set-up, contenders, rounds and results.

A section (sequential, concurrency, …) is a list of :class:`Contender`; each
round runs every contender once, in an order rotated from round to round
(interleaved, so that a noisy moment hurts everybody alike). A contender's
``run`` does its own untimed set-up and warm-up, then times the work and
returns a :class:`Sample`. Ratios are taken within a round, then the median
over rounds is reported.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

SETTINGS_MODULE = "benchmarks.project.settings"


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", SETTINGS_MODULE)
    import django

    django.setup()


def database_url() -> str:
    from benchmarks.project import settings

    return settings.DATABASE_URL


@dataclass
class Sample:
    """One timed run: ``rate`` operations per second, and what it cost.

    ``cpu_us``: CPU time per operation (µs), of this process (all threads)
    or, for the ASGI benchmark, of the server process. ``p99_ms``: the 99th
    percentile latency (ASGI benchmark).
    """

    rate: float
    cpu_us: float | None = None
    p99_ms: float | None = None
    p50_ms: float | None = None


@dataclass
class Contender:
    key: str
    label: str
    run: Callable[[], Awaitable[Sample]]
    ours: bool = False  # this backend (highlighted in the table and chart)


@dataclass
class Ratio:
    """``numerator`` ÷ ``denominator`` (contender keys), with a target.

    Of what ``measure`` names: ``rate`` (operations/s; the target is a
    floor), ``cpu`` (CPU per operation; the target is a ceiling: the cost
    this backend adds to the limit it is measured against) or ``p50`` (median
    latency; a ceiling too). ``note``: a short name for a target (the chart),
    else a remark.
    """

    numerator: str
    denominator: str
    target: float | None = None
    note: str = ""
    measure: str = "rate"

    @property
    def lower_is_better(self) -> bool:
        return self.measure != "rate"

    @property
    def sign(self) -> str:
        return "≤" if self.lower_is_better else "≥"

    def met(self, value: float) -> bool:
        assert self.target is not None
        return value <= self.target if self.lower_is_better else value >= self.target

    def share(self, value: float) -> float:
        """How far ``value`` is from the target: 1 just met, above 1 better."""
        assert self.target is not None
        return self.target / value if self.lower_is_better else value / self.target


@dataclass
class SectionResult:
    key: str
    title: str
    unit: str
    description: str
    contenders: list[Contender]
    ratios: list[Ratio]
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    seconds: float = 0.0
    cpu_label: str = "client CPU µs/op"
    # 1-minute load average when the benchmark started and ended.
    load: tuple[float, float] = (0.0, 0.0)

    def rates(self, key: str) -> list[float]:
        return [sample.rate for sample in self.samples.get(key, [])]

    def median(self, key: str) -> float:
        return statistics.median(self.rates(key))

    def p99(self, key: str) -> float | None:
        values = [s.p99_ms for s in self.samples.get(key, []) if s.p99_ms is not None]
        return statistics.median(values) if values else None

    def cpu(self, key: str) -> float | None:
        values = [s.cpu_us for s in self.samples.get(key, []) if s.cpu_us is not None]
        return statistics.median(values) if values else None

    def ratio(self, ratio: Ratio) -> float:
        """Median over rounds of the within-round ratio (of CPU per op, or rates)."""
        values = {"rate": self.rates, "cpu": self.cpus, "p50": self.p50s}
        measured = values[ratio.measure]
        pairs = zip(measured(ratio.numerator), measured(ratio.denominator), strict=True)
        return statistics.median(num / den for num, den in pairs)

    def cpus(self, key: str) -> list[float]:
        return [s.cpu_us for s in self.samples.get(key, []) if s.cpu_us is not None]

    def p50s(self, key: str) -> list[float]:
        return [s.p50_ms for s in self.samples.get(key, []) if s.p50_ms is not None]

    def p50(self, key: str) -> float | None:
        values = self.p50s(key)
        return statistics.median(values) if values else None

    def label(self, key: str) -> str:
        return next(c.label for c in self.contenders if c.key == key)


async def run_rounds(
    section: SectionResult, rounds: int, log: Callable[[str], None]
) -> SectionResult:
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
            extra = ""
            if sample.cpu_us is not None:
                extra += f"  CPU {sample.cpu_us:6.0f} µs/op"
            if sample.p50_ms is not None:
                extra += f"  p50 {sample.p50_ms:6.1f} ms"
            if sample.p99_ms is not None:
                extra += f"  p99 {sample.p99_ms:6.1f} ms"
            log(
                f"  round {number + 1}/{rounds}  {contender.label:<46} "
                f"{sample.rate:10.0f} {section.unit}{extra}"
            )
    section.seconds = time.perf_counter() - started
    section.load = (load, os.getloadavg()[0])
    return section


class Timer:
    """Wall-clock and process CPU time from its creation."""

    def __init__(self) -> None:
        self.cpu = time.process_time()
        self.wall = time.perf_counter()

    def sample(self, operations: int) -> Sample:
        wall = time.perf_counter() - self.wall
        cpu = time.process_time() - self.cpu
        return Sample(operations / wall, cpu_us=cpu / operations * 1e6)


def spread(values: Sequence[float]) -> str:
    return f"{min(values):,.0f}-{max(values):,.0f}"
