"""Where one contender's time goes: cProfile over one run of it.

    python -m benchmarks.profile SECTION [CONTENDER] [--quick] [--sort KEY]

Sets SECTION up as ``python -m benchmarks`` does and runs CONTENDER (a key;
without one, the section's keys are listed) once as a warm-up, printing its
rate and client CPU per operation, then once more under cProfile, printing
the functions that took the most time (``--sort``: a pstats key). Only this
thread is profiled (not ``sync_to_async``'s). SECTION: any but ``asgi``,
whose contenders run in the uvicorn server, and ``memory``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
from collections.abc import Sequence

from benchmarks.common import QUICK, Config, database_url, setup_django
from benchmarks.run import SECTIONS

CHOICES = [name for name in SECTIONS if name not in ("asgi", "memory")]


async def profile(args: argparse.Namespace) -> None:
    factory = SECTIONS[args.section]
    assert factory is not None
    async with factory(database_url(), QUICK if args.quick else Config()) as section:
        found = [c for c in section.contenders if c.key == args.contender]
        if not found:
            for contender in section.contenders:
                print(f"{contender.key:<26} {contender.label}")
            return
        contender = found[0]
        sample = await contender.run()
        print(
            f"{contender.label}: {sample.rate:,.0f} {section.unit}, "
            f"client CPU {sample.cpu:,.1f} µs/op (not profiled)"
        )
        profiler = cProfile.Profile()
        profiler.enable()
        await contender.run()
        profiler.disable()
    pstats.Stats(profiler).sort_stats(args.sort).print_stats(args.lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile")
    parser.add_argument("section", choices=CHOICES)
    parser.add_argument("contender", nargs="?", default="")
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--sort", default="tottime", help="default: tottime")
    parser.add_argument("--lines", type=int, default=40, help="default: 40")
    args = parser.parse_args(argv)
    setup_django()
    asyncio.run(profile(args))


if __name__ == "__main__":
    main()
