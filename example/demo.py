"""The demo: a small async bank served over ASGI (``python3 dev.py demo``).

    python -m example.demo [--port 8000] [--database example_demo] [--reset]
    python -m example.demo --smoke [--requests 3000] [--concurrency 64]
                           [--port 0] [--database example_demo_smoke]

The server is ``DATABASE_URL`` (dev.py exports it), else 127.0.0.1:5432; the
demo creates its own database there if missing, migrates it (Django's stock
sync machinery), adds eight accounts of 1,000.00, then serves
``example.asgi`` with uvicorn on 127.0.0.1 and prints the URL.

``--smoke`` resets its database, serves the app in a child process, drives
``--requests`` requests at it over ``--concurrency`` keep-alive connections
(loopback only) while four live pages listen to its server-sent events,
prints requests/s and p50/p99 latency, then checks that no money was created
or lost, that every committed transfer was answered, recorded, announced and
pushed to every page exactly once, and that the pages shared one listener
connection, freed when they closed. It exits 0 when every check holds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from example import pages

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"  # loopback only: the settings are not fit for a network
ACCOUNTS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")
START_BALANCE = 1000_00  # cents
RESULT_PREFIX = "smoke-result "


def say(message: str) -> None:
    print(f"demo: {message}", flush=True)


# --- database ------------------------------------------------------------------


def server_conninfo(database: str | None = None) -> str:
    """libpq conninfo of ``database``, by default the one of DATABASE_URL."""
    from psycopg.conninfo import make_conninfo

    from example.settings import SERVER

    params = {
        "dbname": database or SERVER["NAME"],
        "user": SERVER["USER"],
        "password": SERVER["PASSWORD"] or None,
        "host": SERVER["HOST"],
        "port": SERVER["PORT"] or None,
        **SERVER["OPTIONS"],
    }
    return make_conninfo(**{k: v for k, v in params.items() if v is not None})


def ensure_database(name: str) -> None:
    """CREATE DATABASE ``name`` unless it exists."""
    import psycopg
    from psycopg import errors, sql

    from example.settings import SERVER

    where = SERVER["HOST"] + (f":{SERVER['PORT']}" if SERVER["PORT"] else "")
    try:
        with psycopg.connect(server_conninfo(), autocommit=True) as conn:
            found = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [name]
            ).fetchone()
            if found:
                return
            # template0 takes no connections: another CREATE DATABASE running
            # at the same time (test databases…) cannot make this one fail.
            create = "CREATE DATABASE {} TEMPLATE template0"
            try:
                conn.execute(sql.SQL(create).format(sql.Identifier(name)))
            except errors.DuplicateDatabase:
                return  # created meanwhile by another process
    except psycopg.Error as exc:
        message = f"demo: cannot create database {name!r} on {where}: {exc}"
        raise SystemExit(message) from None
    say(f"created database {name!r} on {where}")


def configure(database: str) -> None:
    """Point Django at the demo's settings and database; set it up."""
    os.environ["DEMO_DATABASE"] = database
    os.environ["DJANGO_SETTINGS_MODULE"] = "example.settings"
    import django
    from django.conf import settings

    django.setup()
    assert settings.DATABASES["default"]["NAME"] == database, "settings read too early"


def prepare(database: str, *, reset: bool) -> None:
    """Create, migrate and seed the database (sync Django, before serving)."""
    configure(database)
    ensure_database(database)
    from django.core.management import call_command
    from django.db import connections, transaction
    from django.db.backends.postgresql.base import DatabaseWrapper as PostgresWrapper

    from example.bank.models import Account, Transfer

    try:
        call_command("migrate", verbosity=0, interactive=False)
        with transaction.atomic():
            if reset:
                Transfer.objects.all().delete()
                Account.objects.all().delete()
            if not Account.objects.exists():
                Account.objects.bulk_create(
                    [Account(name=name, balance=START_BALANCE) for name in ACCOUNTS],
                    ignore_conflicts=True,  # another process seeding at once
                )
    finally:
        # Leave no connection (or sync pool) behind in this process.
        connection = connections["default"]
        connection.close()
        if isinstance(connection, PostgresWrapper):
            connection.close_pool()
    say(f"database {database!r} migrated" + (" and reset" if reset else ""))


# --- serving -------------------------------------------------------------------


def listen(port: int, *, fallback: bool) -> socket.socket:
    """A socket listening on HOST:port (another free port if taken and
    ``fallback``)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError as exc:
        if not fallback:
            sock.close()
            raise SystemExit(f"demo: cannot listen on {HOST}:{port}: {exc}") from None
        say(f"port {port} is taken; using a free one")
        sock.bind((HOST, 0))
    sock.listen(2048)
    return sock


def run_server(sock: socket.socket, *, quiet: bool) -> None:
    """Serve example.asgi with uvicorn on ``sock`` until SIGINT/SIGTERM."""
    import uvicorn

    config = uvicorn.Config(
        "example.asgi:application",
        lifespan="off",  # Django's ASGI handler speaks HTTP only
        log_level="warning" if quiet else "info",
        access_log=not quiet,
    )
    # uvicorn shuts down gracefully on SIGINT and SIGTERM, then raises the
    # signal again: make both a KeyboardInterrupt, which ends serving.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run(sockets=[sock])


def serve(args: argparse.Namespace) -> int:
    prepare(args.database, reset=args.reset)
    sock = listen(args.port, fallback=True)
    url = f"http://{HOST}:{sock.getsockname()[1]}/"
    print(
        f"\n  The async bank is at {url}\n\n"
        f"    {url}           accounts, a transfer, a batch of nested transfers\n"
        f"    {url}parallel/  independent queries in parallel: wall time vs sum\n"
        f"    {url}live/      totals that never change while money moves\n\n"
        "  Ctrl-C stops it. Load test: python3 dev.py demo -- --smoke\n",
        flush=True,
    )
    try:
        run_server(sock, quiet=False)
    finally:
        sock.close()
    say("stopped")
    return 0


def serve_fd(args: argparse.Namespace) -> int:
    """The smoke test's server: the listening socket is inherited."""
    configure(args.database)
    run_server(socket.socket(fileno=args.serve_fd), quiet=True)
    return 0


# --- smoke: an HTTP/1.1 client on asyncio streams -------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection to the demo server."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(
        self, method: str, path: str, payload: Any = None
    ) -> tuple[int, bytes]:
        if self.streams is None:
            self.streams = await asyncio.open_connection(HOST, self.port)
        reader, writer = self.streams
        body = b"" if payload is None else json.dumps(payload).encode()
        head = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{self.port}"]
        if payload is not None:
            head.append("Content-Type: application/json")
        head.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()
        status = int((await reader.readuntil(b"\r\n")).split()[1])
        headers: dict[str, str] = {}
        while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            content = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            content = await read_chunked(reader)
        else:
            content = await reader.read()
            headers["connection"] = "close"
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, content

    async def close(self) -> None:
        if self.streams is not None:
            writer = self.streams[1]
            self.streams = None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)
    while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
        pass
    return b"".join(chunks)


@dataclass(frozen=True)
class Planned:
    kind: str
    method: str
    path: str
    payload: Any = None


# kind -> weight in the mix
MIX = {
    "transfer": 35,
    "totals": 25,
    "accounts": 10,
    "page": 10,
    "batch": 10,
    "parallel": 4,
    "overdraft": 3,
    "missing": 2,
    "unknown_account": 1,
}


READS = {
    "totals": "/api/totals/",
    "accounts": "/api/accounts/",
    "page": "/",
    "parallel": "/api/parallel/?delay=0",  # six independent connections each
    "missing": "/no-such-page/",
}


def plan(count: int, names: Sequence[str], seed: int) -> list[Planned]:
    """A reproducible mix of reads, transfers, batches and error cases."""
    rng = random.Random(seed)

    def amount(high: int) -> str:
        cents = rng.randint(1, high)
        return f"{cents // 100}.{cents % 100:02d}"

    def leg(high: int) -> dict[str, Any]:
        source, destination = rng.sample(list(names), 2)
        return {"source": source, "destination": destination, "amount": amount(high)}

    def request(kind: str) -> Planned:
        if kind == "transfer":
            return Planned(kind, "POST", "/api/transfers/", leg(300_00))
        if kind == "overdraft":  # more than the whole bank holds
            overdraft = {**leg(1), "amount": "1000000.00"}
            return Planned(kind, "POST", "/api/transfers/", overdraft)
        if kind == "unknown_account":
            unknown = {**leg(100_00), "destination": "mallory"}
            return Planned(kind, "POST", "/api/transfers/", unknown)
        if kind == "batch":
            batch = {
                "legs": [leg(500_00) for _ in range(3)],
                "all_or_nothing": rng.random() < 0.5,
            }
            return Planned(kind, "POST", "/api/batches/", batch)
        return Planned(kind, "GET", READS[kind])

    kinds = rng.choices(list(MIX), weights=list(MIX.values()), k=count)
    return [request(kind) for kind in kinds]


@dataclass
class Load:
    """What the client saw."""

    expected_total: int
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    committed: int = 0  # transfers the responses say were committed
    refused: int = 0  # transfers refused for insufficient funds
    total_reads: int = 0
    total_mismatches: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def problem(self, text: str) -> None:
        self.problems.append(text)


def check_response(load: Load, item: Planned, status: int, body: bytes) -> None:
    """Account for one response; note anything unexpected."""
    load.statuses[f"{item.kind} {status}"] += 1
    is_json = item.path.startswith("/api/")
    data: Any = {}
    if is_json:
        try:
            data = json.loads(body)
        except ValueError:
            load.problem(f"{item.kind}: HTTP {status}, body is not JSON: {body[:80]!r}")
            return
    code = data.get("error", {}).get("code") if isinstance(data, dict) else None
    if b"Traceback" in body:
        load.problem(f"{item.kind}: a traceback reached the client")
    answer = (item.kind, status, code)
    if answer == ("transfer", 201, None):
        load.committed += 1
    elif answer in (
        ("transfer", 409, "insufficient_funds"),
        ("overdraft", 409, "insufficient_funds"),
        ("batch", 409, "batch_rolled_back"),
    ):
        load.refused += 1
    elif answer == ("batch", 200, None):
        load.committed += sum(1 for leg in data["legs"] if leg["committed"])
        load.refused += sum(1 for leg in data["legs"] if not leg["committed"])
    elif answer == ("batch", 409, "nothing_committed"):  # every leg refused
        load.refused += len(data["legs"])
    elif answer == ("totals", 200, None):
        load.total_reads += 1
        if data["total"] != load.expected_total:
            load.total_mismatches += 1
            load.problem(f"a live read saw a total of {data['total']} cents")
    elif answer == ("missing", 404, None):
        if b"Page not found" not in body:
            load.problem(f"missing: the 404 page is not ours: {body[:120]!r}")
    elif answer not in (
        ("unknown_account", 404, "unknown_account"),
        ("accounts", 200, None),
        ("page", 200, None),
        ("parallel", 200, None),
    ):
        load.problem(f"{item.kind}: unexpected HTTP {status}: {body[:120]!r}")


async def drive(
    port: int, planned: list[Planned], concurrency: int, load: Load
) -> None:
    """Send the planned requests over ``concurrency`` connections at once."""
    queue = iter(planned)

    async def worker() -> None:
        connection = Connection(port)
        try:
            for item in queue:
                started = time.perf_counter()
                try:
                    status, body = await asyncio.wait_for(
                        connection.request(item.method, item.path, item.payload), 60
                    )
                except Exception as exc:  # refused, reset, timed out, garbled…
                    # A POST without an answer may or may not have committed.
                    load.problem(f"{item.kind}: no response ({exc!r})")
                    await connection.close()
                    continue
                load.latencies.append(time.perf_counter() - started)
                check_response(load, item, status, body)
        finally:
            await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    load.seconds = time.perf_counter() - started


async def fetch_totals(port: int) -> dict[str, Any]:
    connection = Connection(port)
    try:
        async with asyncio.timeout(60):
            status, body = await connection.request("GET", "/api/totals/")
    finally:
        await connection.close()
    if status != 200:
        raise RuntimeError(f"/api/totals/ answered HTTP {status}: {body[:200]!r}")
    data: dict[str, Any] = json.loads(body)
    return data


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[round(fraction * (len(sorted_values) - 1))]


def database_checks(expected_total: int) -> dict[str, Any]:
    """The books, read straight from the database once the server is gone."""
    import psycopg

    from example.settings import DEMO_DATABASE

    with psycopg.connect(server_conninfo(DEMO_DATABASE), autocommit=True) as conn:

        def scalar(query: str, params: Sequence[Any] = ()) -> int:
            row = conn.execute(query, params).fetchone()
            assert row is not None
            return int(row[0])

        total = scalar("SELECT coalesce(sum(balance), 0) FROM bank_account")
        rows = scalar("SELECT count(*) FROM bank_transfer")
        # Each balance must be its start plus what the transfer log moved in
        # and out of it: no transfer was committed in part.
        replay_mismatches = scalar(
            "SELECT count(*) FROM bank_account a WHERE a.balance <> %s"
            " + (SELECT coalesce(sum(amount), 0) FROM bank_transfer"
            "    WHERE destination_id = a.id)"
            " - (SELECT coalesce(sum(amount), 0) FROM bank_transfer"
            "    WHERE source_id = a.id)",
            [START_BALANCE],
        )
        negative = scalar("SELECT count(*) FROM bank_account WHERE balance < 0")
        for _ in range(50):  # the server's sessions end as it exits
            sessions_left = scalar(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            if sessions_left == 0:
                break
            time.sleep(0.1)
    return {
        "total_after": total,
        "transfer_rows": rows,
        "replay_mismatches": replay_mismatches,
        "negative_balances": negative,
        "sessions_left": sessions_left,
        "total_unchanged": total == expected_total,
    }


def stop_server(server: subprocess.Popen[bytes]) -> int:
    """SIGTERM (uvicorn shuts down gracefully), then SIGKILL after 20 s."""
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            return server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
            return -9
    return server.returncode


MAX_REQUESTS = 100_000
PAGES = 4  # live pages open during the smoke run (server-sent events)
MAX_CONCURRENCY = 500


def smoke(args: argparse.Namespace) -> int:
    if not (
        0 < args.requests <= MAX_REQUESTS and 0 < args.concurrency <= MAX_CONCURRENCY
    ):
        raise SystemExit(
            f"demo: --requests must be 1..{MAX_REQUESTS},"
            f" --concurrency 1..{MAX_CONCURRENCY}"
        )
    prepare(args.database, reset=True)
    sock = listen(args.port, fallback=False)
    port = sock.getsockname()[1]
    say(
        f"smoke: {args.requests} requests over {args.concurrency} connections"
        f" to http://{HOST}:{port}/ (server in a child process, seed {args.seed})"
    )
    child = [sys.executable, "-m", "example.demo", "--database", args.database]
    server = subprocess.Popen(
        [*child, "--serve-fd", str(sock.fileno())],
        cwd=ROOT,
        pass_fds=[sock.fileno()],
    )
    sock.close()  # the child holds the listening socket now
    try:
        before = asyncio.run(fetch_totals(port))
        names = [account["name"] for account in before["accounts"]]
        load = Load(expected_total=before["total"])
        planned = plan(args.requests, names, args.seed)
        pushed = asyncio.run(
            pages.watched(
                port,
                PAGES,
                lambda: drive(port, planned, args.concurrency, load),
                lambda: load.committed,
                lambda: fetch_totals(port),
            )
        )
        after = asyncio.run(fetch_totals(port))
    except (OSError, RuntimeError, ValueError, EOFError, TimeoutError) as exc:
        say(f"smoke: FAILED: the server did not answer as expected: {exc!r}")
        return 1
    finally:
        server_exit = stop_server(server)
    books = database_checks(load.expected_total)
    return report(args, load, after, books, pushed, server_exit)


def report(
    args: argparse.Namespace,
    load: Load,
    after: dict[str, Any],
    books: dict[str, Any],
    pushed: dict[str, Any],
    server_exit: int,
) -> int:
    latencies = sorted(load.latencies)
    responses = len(latencies)
    rps = responses / load.seconds if load.seconds else 0.0
    p50, p99 = percentile(latencies, 0.50) * 1000, percentile(latencies, 0.99) * 1000
    checks = {
        "every request answered as expected": not load.problems,
        "total balance unchanged": books["total_unchanged"],
        "every live read saw the same total": load.total_mismatches == 0,
        "committed transfers = rows = on_commit announcements": (
            load.committed == books["transfer_rows"] == after["announced"]
        ),
        "balances replay from the transfer log": books["replay_mismatches"] == 0,
        "every open live page was pushed each committed transfer once": (
            pushed["pushed_min"] == pushed["pushed_max"] == load.committed
            and pushed["pushed_twice"] == 0
            and not pushed["page_problems"]
        ),
        "the open live pages shared one listener connection": (
            pushed["pages_listening"] == PAGES and pushed["listener_connections"] == 1
        ),
        "a closed live page freed its listener at once": (
            pushed["listeners_after_close"] == 0
        ),
        "no negative balance": books["negative_balances"] == 0,
        "no server session left after shutdown": books["sessions_left"] == 0,
        "server exited cleanly": server_exit == 0,
    }
    ok = all(checks.values())
    say(
        f"smoke: {responses} responses in {load.seconds:.2f} s: {rps:.0f} req/s,"
        f" p50 {p50:.1f} ms, p99 {p99:.1f} ms"
    )
    say(
        f"smoke: total balance {load.expected_total / 100:,.2f} before,"
        f" {books['total_after'] / 100:,.2f} after,"
        f" the same in all {load.total_reads} live reads: "
        + ("yes" if load.total_mismatches == 0 else "NO")
    )
    say(
        f"smoke: transfers committed {load.committed} (responses),"
        f" {books['transfer_rows']} (rows), {after['announced']} (on_commit);"
        f" {load.refused} refused (insufficient funds or batch rolled back)"
    )
    say(
        f"smoke: {PAGES} live pages on {pushed['listener_connections']} listener"
        f" connection(s) were each pushed {pushed['pushed_min']}"
        f"-{pushed['pushed_max']} transfers; push latency p50"
        f" {pushed['push_latency_p50_ms']} ms"
    )
    for problem in load.problems[:10]:
        say(f"smoke: problem: {problem}")
    if len(load.problems) > 10:
        say(f"smoke: … and {len(load.problems) - 10} more problems")
    for name, passed in checks.items():
        say(f"smoke: [{'ok' if passed else 'FAILED'}] {name}")
    result = {
        "ok": ok,
        "requests": args.requests,
        "responses": responses,
        "concurrency": args.concurrency,
        "seconds": round(load.seconds, 3),
        "requests_per_second": round(rps, 1),
        "p50_ms": round(p50, 2),
        "p99_ms": round(p99, 2),
        "total_before": load.expected_total,
        "total_reads": load.total_reads,
        "committed": load.committed,
        "refused": load.refused,
        "announced": after["announced"],
        "problems": len(load.problems),
        "live_pages": pushed,
        "statuses": dict(sorted(load.statuses.items())),
        "checks": checks,
        **books,
    }
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    say("smoke: OK" if ok else "smoke: FAILED")
    return 0 if ok else 1


# --- command line ----------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m example.demo", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--smoke", action="store_true", help="run the load test")
    parser.add_argument("--port", type=int, help="8000 (serve), a free one (smoke)")
    parser.add_argument("--database", help="example_demo (example_demo_smoke)")
    parser.add_argument("--reset", action="store_true", help="restore the accounts")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--serve-fd", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        say("interrupted")
        return 130


def run(args: argparse.Namespace) -> int:
    if args.serve_fd is not None:
        return serve_fd(args)
    if args.smoke:
        args.port = 0 if args.port is None else args.port
        args.database = args.database or "example_demo_smoke"
        return smoke(args)
    args.port = 8000 if args.port is None else args.port
    args.database = args.database or "example_demo"
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
