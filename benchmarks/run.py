"""Run the benchmarks, print the page and write docs/benchmarks.md.

    python -m benchmarks [--quick] [--rounds N] [--only NAME,...]
                         [--write | --no-write]

(``python3 dev.py bench`` runs it in the project's .venv against the
PostgreSQL that ``dev.py test`` would use.) PostgreSQL comes from
``DATABASE_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``).
Every run prints the page it measured; a full run (every section, not
``--quick``) also writes it, ``docs/benchmarks.md`` and
``docs/img/benchmarks.png``, unless ``--no-write``; ``--write`` writes any
run's, a partial or quick one too.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import time
from collections.abc import Sequence
from dataclasses import replace

from benchmarks import (
    bulk,
    concurrency,
    endtoend,
    memory,
    orm,
    report,
    sequential,
    transactions,
)
from benchmarks.common import (
    QUICK,
    Config,
    SectionFactory,
    database_url,
    run_rounds,
    setup_django,
)

# In the order they run (the page puts memory last).
SECTIONS: dict[str, SectionFactory | None] = {
    "sequential": sequential.section,
    "concurrency": concurrency.section,
    "transactions": transactions.section,
    "asgi": endtoend.section,
    "memory": None,  # a process of its own per measurement: see benchmarks.memory
    "orm": orm.section,
    "copy": bulk.copy_section,
    "pipeline": bulk.pipeline_section,
}


async def run_sections(config: Config, only: Sequence[str], run: report.Run) -> None:
    url = database_url()
    for name in only:
        factory = SECTIONS[name]
        print(f"\n{name}", flush=True)
        if factory is None:
            for mode in ("ours", "psycopg"):
                result = memory.measure(mode, config.rows, url)
                print(f"  {mode:<8} peak RSS {result.peak_mb:6.1f} MB", flush=True)
                run.memory.append(result)
            continue
        async with factory(url, config) as section:
            run.sections.append(await run_rounds(section, config.rounds))


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
    setup_django()
    started = time.monotonic()
    run = report.Run(
        started=datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        rounds=config.rounds,
        quick=args.quick,
        server=report.server(database_url()),
        load_before=os.getloadavg(),
    )
    load = "/".join(f"{value:.2f}" for value in run.load_before)
    print(f"PostgreSQL {run.server}; {config.rounds} rounds; load average {load}")
    asyncio.run(run_sections(config, only, run))
    run.seconds = time.monotonic() - started
    run.load_after = os.getloadavg()
    print("\n" + report.markdown(run), end="")
    complete = only == list(SECTIONS)
    if args.write or (complete and not args.quick and not args.no_write):
        report.write(run)
        minutes = run.seconds / 60
        print(f"\nwrote docs/{report.NAME}.md and its chart ({minutes:.1f} min)")
    return 0
