"""A real primary and a streaming-replication standby (throwaway clusters).

The standby is made with ``pg_basebackup -R`` from the primary and streams
its WAL. Replica lag is made on purpose with ``pg_wal_replay_pause()`` on the
standby. The routers read from "replica" and write to "primary"; the tests
show that reads inside a transaction stay on the primary (they see the
transaction's writes and may lock rows, which a hot standby refuses), and
that reads outside one go to the standby, lag included.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import unittest
from typing import Any

from django.db import InternalError
from django.test import override_settings

from aliases import temporary_alias
from cluster import Cluster, find_bindir
from django_async_backend.db import async_connections
from django_async_backend.db.routing import db_for_read, db_for_write
from django_async_backend.db.transaction import async_atomic
from support import poll
from testapp.models import Account

TABLE = "CREATE TABLE replicated (id int PRIMARY KEY, note text NOT NULL)"


class PrimaryReplicaRouter:
    def db_for_read(self, model: Any, **hints: Any) -> str:
        return "replica"

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return "primary"


def make_standby(primary: Cluster) -> Cluster:
    """A cluster whose data directory is a base backup of ``primary``."""
    standby = Cluster(primary.bindir)
    try:
        shutil.rmtree(standby.data)
        argv = [str(primary.bindir / "pg_basebackup"), "-D", str(standby.data),
                "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
                "-R", "-X", "stream", "--no-sync"]  # fmt: skip
        user = standby.user
        subprocess.run(
            argv,
            check=True,
            capture_output=True,
            cwd=standby.base,
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
        )
        # The backup carries the primary's settings: its own port and socket.
        with (standby.data / "postgresql.conf").open("a") as config:
            config.write(f"port = '{standby.port}'\n")
            config.write(f"unix_socket_directories = '{standby.base}'\n")
        standby.start()
    except BaseException:
        standby.destroy()
        raise
    return standby


class StreamingReplicaTests(unittest.IsolatedAsyncioTestCase):
    primary: Cluster
    standby: Cluster

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        bindir = find_bindir()
        if bindir is None or not (bindir / "pg_basebackup").is_file():
            raise unittest.SkipTest("no PostgreSQL binaries with pg_basebackup")
        cls.primary = Cluster(bindir)
        cls.addClassCleanup(cls.primary.destroy)
        cls.primary.start()
        cls.primary.execute(TABLE)
        cls.standby = make_standby(cls.primary)
        cls.addClassCleanup(cls.standby.destroy)

    def setUp(self) -> None:
        self.enterContext(temporary_alias("primary", **self.primary.database()))
        self.enterContext(temporary_alias("replica", **self.standby.database()))
        self.enterContext(override_settings(DATABASE_ROUTERS=[PrimaryReplicaRouter()]))
        self.primary.execute("TRUNCATE replicated")
        self.assertTrue(self.wait_caught_up())

    async def asyncTearDown(self) -> None:
        await async_connections.close_all()
        self.standby.execute("SELECT pg_wal_replay_resume()")

    def caught_up(self) -> bool:
        """The standby has replayed everything the primary wrote so far."""
        (lsn,) = self.primary.execute("SELECT pg_current_wal_lsn()::text")[0]
        (done,) = self.standby.execute(
            "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)
        )[0]
        return bool(done)

    def wait_caught_up(self) -> bool:
        """Poll ``caught_up`` a bounded number of times (from sync code)."""
        for _ in range(500):
            if self.caught_up():
                return True
            time.sleep(0.02)
        return False

    async def notes(self, alias: str, lock: bool = False) -> list[str]:
        sql = "SELECT note FROM replicated ORDER BY id"
        async with async_connections[alias].cursor() as cursor:
            await cursor.execute(sql + (" FOR UPDATE" if lock else ""))
            return [row[0] for row in await cursor.fetchall()]

    async def insert(self, number: int, note: str) -> None:
        async with async_connections[db_for_write(Account)].cursor() as cursor:
            await cursor.execute(
                "INSERT INTO replicated (id, note) VALUES (%s, %s)", [number, note]
            )

    async def test_standby_is_in_recovery(self) -> None:
        async with async_connections["replica"].cursor() as cursor:
            await cursor.execute("SELECT pg_is_in_recovery()")
            self.assertEqual(await cursor.fetchone(), (True,))

    async def test_committed_writes_reach_the_replica_reads(self) -> None:
        await self.insert(1, "streamed")
        self.assertEqual(db_for_read(Account), "replica")
        self.assertTrue(await poll(self.caught_up))
        self.assertEqual(await self.notes(db_for_read(Account)), ["streamed"])

    async def test_lagging_replica_does_not_break_async_atomic(self) -> None:
        self.standby.execute("SELECT pg_wal_replay_pause()")
        async with async_atomic(using=db_for_write(Account)):
            await self.insert(1, "in the transaction")
            alias = db_for_read(Account)
            seen = await self.notes(alias)
        self.assertEqual(alias, "primary")
        self.assertEqual(seen, ["in the transaction"])
        # Committed, but the paused standby has not replayed it: the lag a
        # read outside the transaction may see.
        self.assertEqual(await self.notes(db_for_read(Account)), [])
        self.standby.execute("SELECT pg_wal_replay_resume()")
        self.assertTrue(await poll(self.caught_up))
        self.assertEqual(await self.notes("replica"), ["in the transaction"])

    async def test_locking_read_in_a_transaction_runs_on_the_primary(self) -> None:
        await self.insert(1, "locked")
        async with async_atomic(using=db_for_write(Account)):
            self.assertEqual(
                await self.notes(db_for_read(Account), lock=True), ["locked"]
            )

    async def test_the_standby_refuses_what_pinning_avoids(self) -> None:
        self.assertTrue(await poll(self.caught_up))
        with self.assertRaises(InternalError) as caught:
            async with async_atomic(using="replica"):
                await self.notes("replica", lock=True)
        self.assertIn("read-only", str(caught.exception))
