"""wrk, an HTTP load generator written in C, for the ASGI benchmark.

A load generator in Python shares the machine's two cores with the server it
measures and costs about as much CPU per request as the server; wrk (Debian
package ``wrk``, installed by ``python3 dev.py bench`` when run as root)
costs a fraction of that. Without it the benchmark falls back to
``benchmarks.httpclient`` and says so in the report.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from dataclasses import dataclass

__all__ = ["WrkResult", "find", "run_wrk", "version"]

UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
LATENCY = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m),", re.MULTILINE)
BAD = re.compile(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*")


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    p50: float  # seconds
    p99: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def find() -> str | None:
    return shutil.which("wrk")


def version(binary: str) -> str:
    """``wrk 4.1.0``, as ``wrk -v`` prints it (it exits 1 doing so)."""
    completed = subprocess.run([binary, "-v"], capture_output=True, text=True)
    first = (completed.stdout or completed.stderr).strip().splitlines()
    return " ".join(first[0].split()[:2]) if first else "wrk"


def parse(output: str) -> WrkResult:
    """Read the totals and the 50th/99th latency percentiles of a run."""
    bad = BAD.search(output)
    if bad is not None:
        raise RuntimeError(f"wrk: {bad.group(0)}\n{output}")
    total = TOTAL.search(output)
    latencies = {m[0]: float(m[1]) * UNITS[m[2]] for m in LATENCY.findall(output)}
    if total is None or set(latencies) != {"50", "99"}:
        raise RuntimeError(f"wrk: unexpected output\n{output}")
    seconds = float(total.group(2)) * UNITS[total.group(3)]
    return WrkResult(int(total.group(1)), seconds, latencies["50"], latencies["99"])


async def run_wrk(binary: str, url: str, clients: int, seconds: float) -> WrkResult:
    """One thread, ``clients`` keep-alive connections, for ``seconds``."""
    proc = await asyncio.create_subprocess_exec(
        binary,
        "-t1",
        f"-c{clients}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "30s",
        "--latency",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited {proc.returncode}\n{text}")
    return parse(text)
