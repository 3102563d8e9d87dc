"""The page, ``docs/benchmarks.md``, and its chart, from a run's results.

(On another interpreter than 3.11: ``docs/benchmarks-py3.13.md``.)
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.common import Ratio, Section
from benchmarks.memory import LIMIT_MB, MemoryResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes

ROOT = Path(__file__).resolve().parent.parent
# The report of the default interpreter (.python-version's first, 3.11) is
# docs/benchmarks.md; another's is docs/benchmarks-py3.13.md (dev.py bench
# --python 3.13), each with its chart.
DEFAULT_PYTHON = (3, 11)
PYTHON = sys.version_info[:2]
NAME = (
    "benchmarks" if PYTHON == DEFAULT_PYTHON else "benchmarks-py{}.{}".format(*PYTHON)
)
DOC = ROOT / "docs" / f"{NAME}.md"
CHART = ROOT / "docs" / "img" / f"{NAME}.png"
OURS, OTHERS, MET, MISSED = "#1f6feb", "#9aa4ae", "#2da44e", "#cf222e"
PACKAGES = ("django", "psycopg", "psycopg-pool", "asyncpg", "uvicorn", "asgiref")
MEASURES = {"rate": "throughput", "cpu": "CPU/op", "p50": "p50 latency"}


@dataclass
class Run:
    """Everything one ``python -m benchmarks`` run produced."""

    started: str
    rounds: int
    quick: bool
    server: str
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    seconds: float = 0.0
    sections: list[Section] = field(default_factory=list)
    memory: list[MemoryResult] = field(default_factory=list)


def server(url: str) -> str:
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as connection:
        row = connection.execute("SHOW server_version").fetchone()
        version = str(row[0]).split()[0] if row else "?"
        info = connection.info
        return f"{version} at {info.host}:{info.port} (database {info.dbname})"


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    kib = int(Path("/proc/meminfo").read_text().split()[1])
    system = f"{platform.system()} {platform.release()}"
    return f"{model}, {os.cpu_count()} cores, {kib / 1024 / 1024:.1f} GiB RAM, {system}"


def versions() -> str:
    import psycopg

    parts = [f"Python {platform.python_version()}"]
    for name in PACKAGES:
        version = metadata.version(name)
        if name == "psycopg":
            version += f" ({psycopg.pq.__impl__} implementation)"
        parts.append(f"{name} {version}")
    return ", ".join(parts)


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def ratio_name(section: Section, ratio: Ratio) -> str:
    names = f"{section.label(ratio.numerator)} ÷ {section.label(ratio.denominator)}"
    suffix = {"rate": "", "cpu": ", CPU per op", "p50": ", median latency"}
    return names + suffix[ratio.measure]


def targets(run: Run) -> list[tuple[Section, Ratio, float]]:
    return [
        (section, ratio, section.ratio(ratio))
        for section in run.sections
        for ratio in section.ratios
        if ratio.target is not None
    ]


# ##### Markdown #####


def targets_table(run: Run) -> list[str]:
    lines = ["| target | measured | result |", "| --- | --- | --- |"]
    for section, ratio, value in targets(run):
        what = f"{section.title}: {ratio_name(section, ratio)}"
        lines.append(
            f"| {what} ≤ {ratio.target:g} | {value:.2f} | {verdict(ratio.met(value))} |"
        )
    for result in run.memory:
        if result.mode == "ours":
            lines.append(
                f"| Memory: {result.label}, {result.rows:,} rows, peak RSS "
                f"< {LIMIT_MB:g} MB | {result.peak_mb:.1f} MB "
                f"| {verdict(result.peak_mb < LIMIT_MB)} |"
            )
    return lines


def section_markdown(number: int, section: Section) -> list[str]:
    first = section.samples[section.contenders[0].key][0]
    latency = first.p50 is not None  # the ASGI section
    columns = [f"{section.unit} (median)", "min-max over rounds", section.cpu_label]
    columns += ["p50 latency", "p99 latency"] if latency else []
    lines = [
        f"## {number}. {section.title}",
        "",
        section.description,
        f"{section.seconds:.0f} s; 1-minute load average {section.load[0]:.2f} "
        f"at the start, {section.load[1]:.2f} at the end.",
        "",
        "| | " + " | ".join(columns) + " |",
        "| --- |" + " ---: |" * len(columns),
    ]
    for contender in section.contenders:
        rates = section.values(contender.key)
        cells = [
            f"{section.median(contender.key):,.0f}",
            f"{min(rates):,.0f}-{max(rates):,.0f}",
            f"{section.median(contender.key, 'cpu'):,.0f}",
        ]
        if latency:
            cells += [
                f"{section.median(contender.key, m):.1f} ms" for m in ("p50", "p99")
            ]
        label = f"**{contender.label}**" if contender.ours else contender.label
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "| ratio | value | target |", "| --- | ---: | --- |"]
    for ratio in section.ratios:
        value = section.ratio(ratio)
        target = ratio.note
        if ratio.target is not None:
            target = f"≤ {ratio.target:g}: {verdict(ratio.met(value))}"
        lines.append(f"| {ratio_name(section, ratio)} | {value:.2f} | {target} |")
    lines.append("")
    return [*lines, section.note, ""] if section.note else lines


def memory_markdown(number: int, results: Sequence[MemoryResult]) -> list[str]:
    lines = [
        f"## {number}. Memory",
        "",
        f"{results[0].rows:,} rows of `(int, md5 text)` streamed with `async for` "
        "through a server-side cursor (psycopg's default `itersize`, 100 rows per "
        "fetch), in a fresh process; peak RSS is Linux's `VmHWM` (it includes the "
        f"interpreter, Django and psycopg). Limit: {LIMIT_MB:g} MB.",
        "",
        "| | peak RSS | peak RSS before streaming | rows/s |",
        "| --- | ---: | ---: | ---: |",
    ]
    for result in results:
        label = f"**{result.label}**" if result.mode == "ours" else result.label
        lines.append(
            f"| {label} | {result.peak_mb:.1f} MB | {result.baseline_mb:.1f} MB "
            f"| {result.rate:,.0f} |"
        )
    return [*lines, ""]


def markdown(run: Run) -> str:
    load = "/".join(f"{value:.2f}" for value in run.load_before)
    load_after = "/".join(f"{value:.2f}" for value in run.load_after)
    kind = "a quick run (`--quick`)" if run.quick else "one run"
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python3 dev.py bench` (`python -m benchmarks`); do not edit "
        "by hand.",
        "",
        f"Numbers are from {kind} on a shared 2-core machine, with PostgreSQL, "
        "the benchmark process and (for the ASGI benchmark) the uvicorn server "
        "on the same two cores: expect a few percent of noise. Every contender "
        "runs in the same process against the same server; each round runs "
        "every contender once, in an order rotated from round to round, and the "
        "tables give the median over rounds. A ratio is the median over rounds "
        "of the ratio within a round. The CPU column is the CPU time (user + "
        "system, all threads) of the benchmark process per operation (for the "
        "ASGI benchmark: of the uvicorn server per request); PostgreSQL's own "
        "CPU is not in it. It depends much less on what else the machine runs "
        "than throughput does, and the difference between two contenders is "
        "what one costs more than the other on the Python side.",
        "",
        f"* Date: {run.started} ({run.seconds / 60:.1f} minutes; {run.rounds} "
        "rounds per benchmark)",
        f"* Machine: {machine()}; load average (1/5/15 min) {load} at the start, "
        f"{load_after} at the end",
        f"* Software: {versions()}",
        f"* PostgreSQL: {run.server}",
        "",
        f"![Benchmark results](img/{NAME}.png)",
        "",
        other_pages(),
        "",
        "## Targets",
        "",
        *targets_table(run),
        "",
    ]
    for number, section in enumerate(run.sections, 1):
        lines += section_markdown(number, section)
    if run.memory:
        lines += memory_markdown(len(run.sections) + 1, run.memory)
    lines += [
        "## Running and profiling",
        "",
        "```bash",
        "python3 dev.py bench           # all of the above; rewrites this page",
        "python3 dev.py bench --quick   # a short run that only prints (CI runs it)",
        "python3 dev.py bench --only sequential,transactions --no-write",
        "python3 dev.py bench --python 3.13   # the same on Python 3.13, Django 6.1",
        "# where one contender's time goes (cProfile); without `ours`, the list:",
        "DATABASE_URL=postgresql://... .venv/bin/python -m benchmarks.profile \\",
        "    concurrency ours",
        "# instructions per operation under callgrind (steady where CPU time",
        "# is not), this backend against its limits, the pieces of a checkout:",
        "DATABASE_URL=postgresql://... .venv/bin/python -m benchmarks.instructions",
        "```",
        "",
        "The code is in `benchmarks/`; the ASGI benchmark's Django project is "
        "`benchmarks/project/`.",
    ]
    return "\n".join(lines).rstrip() + "\n"


# ##### Chart #####


def chart(run: Run, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = len(run.sections) + bool(run.memory) + 1
    rows = (panels + 1) // 2
    figure, axes = plt.subplots(rows, 2, figsize=(14, 3.8 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax, section in zip(flat, run.sections, strict=False):
        section_panel(ax, section)
    rest = flat[len(run.sections) :]
    if run.memory:
        memory_panel(rest.pop(0), run.memory)
    targets_panel(rest.pop(0), run)
    for ax in rest:
        ax.axis("off")
    figure.suptitle(
        f"django-async-backend benchmarks, {run.started} "
        f"(median of {run.rounds} rounds; error bars: min-max)",
        fontsize=11,
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def section_panel(ax: Axes, section: Section) -> None:
    contenders = section.contenders[::-1]  # barh draws bottom-up
    values = [section.median(c.key) for c in contenders]
    lows = [min(section.values(c.key)) for c in contenders]
    highs = [max(section.values(c.key)) for c in contenders]
    errors = [
        [v - lo for v, lo in zip(values, lows, strict=True)],
        [hi - v for v, hi in zip(values, highs, strict=True)],
    ]
    colors = [OURS if c.ours else OTHERS for c in contenders]
    ax.barh([c.label for c in contenders], values, color=colors, xerr=errors, capsize=3)
    for y, (value, high) in enumerate(zip(values, highs, strict=True)):
        ax.text(high, y, f"  {value:,.0f}", va="center", fontsize=8)
    ax.set_title(f"{section.title} ({section.unit}, higher is better)", fontsize=10)
    ax.tick_params(labelsize=8)
    if max(highs) > 20 * min(lows):  # e.g. rows/s next to calls/s
        ax.set_xscale("log")
        ax.set_xlim(min(lows) / 2, max(highs) * 4)
    else:
        ax.set_xlim(0, max(highs) * 1.22)


def targets_panel(ax: Axes, run: Run) -> None:
    """Each target's measured ratio as a share of the target (1 = just met)."""
    rows = targets(run)[::-1]
    if not rows:
        ax.axis("off")
        return
    shares = [ratio.share(value) for _, ratio, value in rows]
    names = [f"{ratio.note}, {MEASURES[ratio.measure]}" for _, ratio, _ in rows]
    ax.barh(names, shares, color=[MET if share >= 1 else MISSED for share in shares])
    for y, (share, (_, ratio, value)) in enumerate(zip(shares, rows, strict=True)):
        label = f"  {value:.2f} (target ≤ {ratio.target:g})"
        ax.text(share, y, label, va="center", fontsize=8)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_title("Targets: how far each is from its target (≥ 1 is met)", fontsize=10)
    ax.tick_params(labelsize=8)
    ax.set_xlim(0, max(1.0, *shares) * 1.45)


def memory_panel(ax: Axes, results: Sequence[MemoryResult]) -> None:
    results = results[::-1]
    peaks = [r.peak_mb for r in results]
    colors = [OURS if r.mode == "ours" else OTHERS for r in results]
    ax.barh([r.label for r in results], peaks, color=colors)
    for y, value in enumerate(peaks):
        ax.text(value, y, f" {value:.1f} MB", va="center", fontsize=8)
    ax.axvline(LIMIT_MB, color=MISSED, linestyle="--", linewidth=1)
    ax.text(LIMIT_MB, -0.45, f" {LIMIT_MB:g} MB limit", color=MISSED, fontsize=8)
    ax.set_title(
        f"Memory: peak RSS streaming {results[0].rows:,} rows (MB, lower is better)",
        fontsize=10,
    )
    ax.set_xlim(0, LIMIT_MB * 1.25)
    ax.tick_params(labelsize=8)


def other_pages() -> str:
    """A pointer to the report of the other interpreter."""
    if PYTHON == DEFAULT_PYTHON:
        return (
            "The same run on Python 3.13 and Django 6.1: "
            "[benchmarks-py3.13.md](benchmarks-py3.13.md) (`python3 dev.py "
            "bench --python 3.13`)."
        )
    return (
        "The same benchmarks on Python {}.{}: [benchmarks.md](benchmarks.md) "
        "(`python3 dev.py bench`).".format(*DEFAULT_PYTHON)
    )


def write(run: Run) -> None:
    chart(run, CHART)
    DOC.write_text(markdown(run))
