"""Print the results, and write ``docs/benchmarks.md`` and its chart."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.common import Ratio, SectionResult, spread
from benchmarks.memory import LIMIT_MB, MemoryResult
from benchmarks.notes import NOTES

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
CHART = ROOT / "docs" / "img" / "benchmarks.png"
OUTPUTS = (DOC, CHART)
if TYPE_CHECKING:
    from matplotlib.axes import Axes

OURS, OTHERS, MET, MISSED = "#1f6feb", "#9aa4ae", "#2da44e", "#cf222e"
PACKAGES = ("django", "psycopg", "psycopg-pool", "asyncpg", "uvicorn", "asgiref")


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
    sections: list[SectionResult] = field(default_factory=list)
    memory: list[MemoryResult] = field(default_factory=list)


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 1024 / 1024:.1f} GiB RAM"
    except OSError:
        memory = ""
    system = f"{platform.system()} {platform.release()}"
    return f"{model}, {os.cpu_count()} cores{memory}, {system}"


def versions() -> str:
    import psycopg

    parts = [f"Python {platform.python_version()}"]
    for name in PACKAGES:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        if name == "psycopg":
            version += f" ({psycopg.pq.__impl__} implementation)"
        parts.append(f"{name} {version}")
    return ", ".join(parts)


def verdict(ratio: Ratio, value: float) -> str:
    if ratio.target is None:
        return ""
    return "met" if ratio.met(value) else "**missed**"


MEASURES = {"rate": "throughput", "cpu": "CPU/op", "p50": "p50 latency"}


def target_name(ratio: Ratio) -> str:
    """A target's short name, with what it measures."""
    return f"{ratio.note}, {MEASURES[ratio.measure]}"


def ratio_name(section: SectionResult, ratio: Ratio) -> str:
    names = f"{section.label(ratio.numerator)} ÷ {section.label(ratio.denominator)}"
    suffix = {"rate": "", "cpu": ", CPU per op", "p50": ", median latency"}
    return names + suffix[ratio.measure]


def memory_ok(result: MemoryResult) -> bool:
    return result.peak_mb < LIMIT_MB


# ##### Terminal #####


def print_section(section: SectionResult) -> None:
    print(f"\n{section.title} ({section.unit}, median of {rounds_of(section)})")
    for contender in section.contenders:
        rates = section.rates(contender.key)
        cpu = section.cpu(contender.key)
        p50, p99 = section.p50(contender.key), section.p99(contender.key)
        extra = f"   {section.cpu_label} {cpu:6.0f}" if cpu is not None else ""
        extra += f"   p50 {p50:6.1f} ms" if p50 is not None else ""
        extra += f"   p99 {p99:6.1f} ms" if p99 is not None else ""
        mark = "*" if contender.ours else " "
        print(
            f" {mark} {contender.label:<46} {section.median(contender.key):10,.0f}"
            f"   [{spread(rates)}]{extra}"
        )
    for ratio in section.ratios:
        value = section.ratio(ratio)
        target = ""
        if ratio.target is not None:
            result = verdict(ratio, value).replace("*", "")
            target = f"  (target {ratio.sign} {ratio.target:g}: {result})"
        print(f"   ratio {ratio_name(section, ratio):<78} {value:6.2f}{target}")


def print_memory(results: Sequence[MemoryResult]) -> None:
    print(f"\nMemory (peak RSS of a fresh process; limit {LIMIT_MB:g} MB)")
    for result in results:
        status = "ok" if memory_ok(result) else "OVER THE LIMIT"
        print(
            f"   {memory_label(result):<46} peak {result.peak_mb:6.1f} MB "
            f"(before streaming {result.baseline_mb:5.1f} MB)  "
            f"{result.rate:10,.0f} rows/s  {status}"
        )


def print_targets(run: Run) -> None:
    print("\nTargets")
    for section in run.sections:
        for ratio in section.ratios:
            if ratio.target is not None:
                value = section.ratio(ratio)
                status = verdict(ratio, value).replace("*", "")
                target = f"{ratio.target:<5g}"
                name = target_name(ratio)
                print(f"   {name:<48} {value:6.2f} {ratio.sign} {target} {status}")
    for memory in run.memory:
        if memory.mode == "ours":
            status = "met" if memory_ok(memory) else "missed"
            print(
                f"   {'memory, peak RSS (MB)':<48} {memory.peak_mb:6.1f} "
                f"<  {LIMIT_MB:<5g} {status}"
            )


def rounds_of(section: SectionResult) -> str:
    count = len(next(iter(section.samples.values()), []))
    return f"{count} round{'s' if count != 1 else ''}"


def memory_label(result: MemoryResult) -> str:
    if result.mode == "ours":
        return "this backend, chunked_cursor()"
    return "raw psycopg, named cursor"


# ##### Markdown #####


def targets_table(run: Run) -> list[str]:
    lines = ["| target | measured | result |", "| --- | --- | --- |"]
    for section in run.sections:
        for ratio in section.ratios:
            if ratio.target is None:
                continue
            value = section.ratio(ratio)
            what = f"{section.title}: {ratio_name(section, ratio)}"
            lines.append(
                f"| {what} {ratio.sign} {ratio.target:g} | {value:.2f} "
                f"| {verdict(ratio, value)} |"
            )
    for result in run.memory:
        if result.mode == "ours":
            lines.append(
                f"| Memory: {memory_label(result)}, {result.rows:,} rows, peak RSS "
                f"< {LIMIT_MB:g} MB | {result.peak_mb:.1f} MB "
                f"| {'met' if memory_ok(result) else '**missed**'} |"
            )
    return lines


def section_markdown(number: int, section: SectionResult) -> list[str]:
    keys = [c.key for c in section.contenders]
    cpu = any(section.cpu(key) is not None for key in keys)
    latency = any(section.p99(key) is not None for key in keys)
    median = any(section.p50(key) is not None for key in keys)
    head = f"| | {section.unit} (median) | min-max over rounds |"
    rule = "| --- | ---: | ---: |"
    if cpu:
        head += f" {section.cpu_label} |"
        rule += " ---: |"
    if median:
        head += " p50 latency |"
        rule += " ---: |"
    if latency:
        head += " p99 latency |"
        rule += " ---: |"
    where = (
        f"{section.seconds:.0f} s; 1-minute load average {section.load[0]:.2f} "
        f"at the start, {section.load[1]:.2f} at the end."
    )
    lines = [f"## {number}. {section.title}", "", section.description, where]
    lines += ["", head, rule]
    for contender in section.contenders:
        label = f"**{contender.label}**" if contender.ours else contender.label
        row = (
            f"| {label} | {section.median(contender.key):,.0f} "
            f"| {spread(section.rates(contender.key))} |"
        )
        if cpu:
            value = section.cpu(contender.key)
            row += f" {value:,.0f} |" if value is not None else " |"
        if median:
            p50 = section.p50(contender.key)
            row += f" {p50:.1f} ms |" if p50 is not None else " |"
        if latency:
            p99 = section.p99(contender.key)
            row += f" {p99:.1f} ms |" if p99 is not None else " |"
        lines.append(row)
    lines += ["", "| ratio | value | target |", "| --- | ---: | --- |"]
    for ratio in section.ratios:
        value = section.ratio(ratio)
        target = (
            f"{ratio.sign} {ratio.target:g}: {verdict(ratio, value)}"
            if ratio.target is not None
            else ratio.note
        )
        lines.append(f"| {ratio_name(section, ratio)} | {value:.2f} | {target} |")
    return [*lines, ""]


def memory_markdown(number: int, results: Sequence[MemoryResult]) -> list[str]:
    rows = results[0].rows if results else 0
    lines = [
        f"## {number}. Memory",
        "",
        f"{rows:,} rows of `(int, md5 text)` streamed with `async for` through a "
        "server-side cursor (psycopg's default `itersize`, 100 rows per fetch), "
        "in a fresh process; peak RSS is Linux's `VmHWM` (it includes the "
        f"interpreter, Django and psycopg). Limit: {LIMIT_MB:g} MB.",
        "",
        "| | peak RSS | peak RSS before streaming | rows/s |",
        "| --- | ---: | ---: | ---: |",
    ]
    for result in results:
        label = memory_label(result)
        label = f"**{label}**" if result.mode == "ours" else label
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
        "![Benchmark results](img/benchmarks.png)",
        "",
        "## Targets",
        "",
        *targets_table(run),
        "",
    ]
    for number, section in enumerate(run.sections, 1):
        lines += section_markdown(number, section)
        if section.key in NOTES:
            lines += [NOTES[section.key], ""]
    if run.memory:
        lines += memory_markdown(len(run.sections) + 1, run.memory)
    lines += [
        "## Running and profiling",
        "",
        "```bash",
        "python3 dev.py bench           # all of the above; rewrites this page",
        "python3 dev.py bench --quick   # a short run that only prints (CI runs it)",
        "python3 dev.py bench --only sequential,transactions --no-write",
        "# client CPU per operation, backend vs raw psycopg, and a profile:",
        "DATABASE_URL=postgresql://... .venv/bin/python -m benchmarks.profile \\",
        "    pool --pyinstrument",
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
    columns = 2
    rows = (panels + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(14, 3.8 * rows), squeeze=False)
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


def section_panel(ax: Axes, section: SectionResult) -> None:
    contenders = section.contenders[::-1]  # barh draws bottom-up
    labels = [c.label for c in contenders]
    values = [section.median(c.key) for c in contenders]
    lows = [min(section.rates(c.key)) for c in contenders]
    highs = [max(section.rates(c.key)) for c in contenders]
    colors = [OURS if c.ours else OTHERS for c in contenders]
    errors = [
        [v - lo for v, lo in zip(values, lows, strict=True)],
        [hi - v for v, hi in zip(values, highs, strict=True)],
    ]
    ax.barh(labels, values, color=colors, xerr=errors, capsize=3)
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
    rows = [
        (target_name(ratio), section.ratio(ratio), ratio)
        for section in run.sections
        for ratio in section.ratios
        if ratio.target is not None
    ][::-1]
    if not rows:
        ax.axis("off")
        return
    shares = [ratio.share(value) for _, value, ratio in rows]
    colors = [MET if share >= 1 else MISSED for share in shares]
    ax.barh([name for name, _, _ in rows], shares, color=colors)
    for y, (share, (_, value, ratio)) in enumerate(zip(shares, rows, strict=True)):
        label = f"  {value:.2f} (target {ratio.sign} {ratio.target:g})"
        ax.text(share, y, label, va="center", fontsize=8)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_title("Targets: how far each is from its target (≥ 1 is met)", fontsize=10)
    ax.tick_params(labelsize=8)
    ax.set_xlim(0, max(1.0, *shares) * 1.45)


def memory_panel(ax: Axes, results: Sequence[MemoryResult]) -> None:
    labels = [memory_label(r) for r in results][::-1]
    peaks = [r.peak_mb for r in results][::-1]
    colors = [OURS if r.mode == "ours" else OTHERS for r in results][::-1]
    ax.barh(labels, peaks, color=colors)
    for y, value in enumerate(peaks):
        ax.text(value, y, f" {value:.1f} MB", va="center", fontsize=8)
    ax.axvline(LIMIT_MB, color=MISSED, linestyle="--", linewidth=1)
    ax.text(LIMIT_MB, -0.45, f" {LIMIT_MB:g} MB limit", color=MISSED, fontsize=8)
    rows = results[0].rows if results else 0
    ax.set_title(
        f"Memory: peak RSS streaming {rows:,} rows (MB, lower is better)", fontsize=10
    )
    ax.set_xlim(0, LIMIT_MB * 1.25)
    ax.tick_params(labelsize=8)


def write(run: Run) -> None:
    chart(run, CHART)
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(markdown(run))
