"""Run the benchmarks, print the results and write docs/benchmarks.md.

    python -m benchmarks [--quick] [--rounds N] [--only NAME,...] [--no-write]

(``python3 dev.py bench`` runs it in the project's .venv against the
PostgreSQL that ``dev.py test`` would use.) PostgreSQL comes from
``DATABASE_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``).
A full run writes ``docs/benchmarks.md`` and ``docs/img/benchmarks.png``; a
``--quick`` run only prints, unless ``--write`` is given; ``--write`` with
``--only`` replaces (or adds) only those sections in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from benchmarks import common, report, splice

SECTIONS = (
    "sequential", "concurrency", "transactions", "asgi", "memory", "orm", "copy",
    "pipeline",
)  # fmt: skip


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


def log(message: str) -> None:
    print(message, flush=True)


def server_description(url: str) -> str:
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as connection:
        row = connection.execute("SHOW server_version").fetchone()
        version = str(row[0]).split()[0] if row else "?"
        info = connection.info
        return f"{version} at {info.host}:{info.port} (database {info.dbname})"


async def run_sections(config: Config, only: Sequence[str], run: report.Run) -> None:
    from benchmarks import (
        bulk,
        concurrency,
        endtoend,
        memory,
        orm,
        sequential,
        transactions,
    )
    from benchmarks.project.settings import POOL_SIZE

    url = common.database_url()
    rounds = config.rounds
    if "sequential" in only:
        log(f"\n1. sequential round trips ({config.sequential:,} per run)")
        section = sequential.section(url, config.sequential)
        run.sections.append(await common.run_rounds(section, rounds, log))
    if "concurrency" in only:
        log(f"\n2. concurrency ({config.tasks} tasks x {config.per_task} queries)")
        bench = concurrency.Concurrency(url, config.tasks, config.per_task, POOL_SIZE)
        try:
            await bench.open()
            run.sections.append(await common.run_rounds(bench.section(), rounds, log))
        finally:
            await bench.close()
    if "transactions" in only:
        log(f"\n3. transactions ({config.transactions:,} per run)")
        section = transactions.section(url, config.transactions)
        run.sections.append(await common.run_rounds(section, rounds, log))
    if "asgi" in only:
        log(f"\n4. ASGI end to end ({config.asgi_seconds:g} s per run with wrk)")
        e2e = endtoend.EndToEnd(
            url, config.clients, config.requests, config.asgi_seconds
        )
        try:
            await e2e.open()
            run.sections.append(await common.run_rounds(e2e.section(), rounds, log))
        finally:
            await e2e.close()
    if "memory" in only:
        log(f"\n5. memory ({config.rows:,} rows through a server-side cursor)")
        for mode in ("ours", "psycopg"):
            result = memory.measure(mode, config.rows, url)
            log(f"  {mode:<8} peak RSS {result.peak_mb:6.1f} MB")
            run.memory.append(result)
    if "orm" in only:
        log(f"\n6. the ORM ({config.orm:,} calls per run, {orm.ROWS:,} rows)")
        orm.create_table(url)
        try:
            section = orm.section(config.orm)
            run.sections.append(await common.run_rounds(section, rounds, log))
        finally:
            orm.drop_table(url)
    if "copy" in only:
        log(f"\n7. bulk loading ({config.bulk_rows:,} rows per run)")
        bulk.create_table(url)
        try:
            section = bulk.copy_section(url, config.bulk_rows)
            run.sections.append(await common.run_rounds(section, rounds, log))
        finally:
            bulk.drop_table(url)
    if "pipeline" in only:
        log(f"\n8. pipelined INSERTs ({config.inserts:,} per run)")
        bulk.create_pipeline_table(url)
        try:
            with bulk.latency(url) as link:
                log(f"  +{link.added_ms:.2f} ms per round trip: {link.method}")
                section = bulk.pipeline_section(config.inserts, link)
                run.sections.append(await common.run_rounds(section, rounds, log))
        finally:
            bulk.drop_pipeline_table(url)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--rounds", type=int, help="rounds per benchmark")
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated benchmarks among {', '.join(SECTIONS)}",
    )
    write = parser.add_mutually_exclusive_group()
    write.add_argument("--write", action="store_true", help="write docs/ anyway")
    write.add_argument("--no-write", action="store_true", help="only print")
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    config = QUICK if args.quick else Config()
    if args.rounds:
        config = replace(config, rounds=args.rounds)
    only = [name for name in SECTIONS if name in args.only.split(",")]
    common.setup_django()
    url = common.database_url()
    started = time.monotonic()
    run = report.Run(
        started=datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        rounds=config.rounds,
        quick=args.quick,
        server=server_description(url),
        load_before=os.getloadavg(),
    )
    load = "/".join(f"{value:.2f}" for value in run.load_before)
    log(f"PostgreSQL {run.server}; {config.rounds} rounds; load average {load}")
    asyncio.run(run_sections(config, only, run))
    run.seconds = time.monotonic() - started
    run.load_after = os.getloadavg()
    for section in run.sections:
        report.print_section(section)
    if run.memory:
        report.print_memory(run.memory)
    report.print_targets(run)
    complete = only == list(SECTIONS)
    if args.write or (complete and not args.quick and not args.no_write):
        if complete:
            report.write(run)
            written = [str(path.relative_to(report.ROOT)) for path in report.OUTPUTS]
        else:  # only these sections change on the page; the chart stays
            splice.write(run)
            written = [str(report.DOC.relative_to(report.ROOT))]
        log(f"\nwrote {' and '.join(written)} ({run.seconds / 60:.1f} min)")
    return 0
