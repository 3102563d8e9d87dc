"""LISTEN/NOTIFY: ``connection.listen()`` blocks and ``notify()``.

Listeners run on the listener connection of their alias (one per event
loop, shared by every block, never the task's connection nor a pool slot),
which closes when the last block ends, when its task ends or is cancelled,
and at loop shutdown. ``notify()`` runs on the task's connection: inside
``async_atomic()`` PostgreSQL delivers at COMMIT and drops on rollback. A
killed session or a restarted server ends ``reconnect=False`` blocks with
``OperationalError`` and is survived by ``reconnect=True`` ones; behind
PgBouncer ``listen()`` refuses, naming the direct alias to use.

The listener alias points at PostgreSQL itself even when the suite runs
behind PgBouncer (``DAB_SERVER_URL``): what docs/listen-notify.md tells
users to do. Notifications are sent on ``default`` (through PgBouncer then).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import textwrap
import unittest
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import psycopg
from django.conf import settings
from django.db import NotSupportedError, OperationalError
from django.db.transaction import TransactionManagementError

from aliases import backend_pid, temporary_alias
from cluster import Cluster, find_bindir
from django_async_backend.db import async_connections
from django_async_backend.db.backends.postgresql.base import AsyncDatabaseWrapper
from django_async_backend.db.notifications import Notification, listen, notify
from django_async_backend.db.transaction import async_atomic
from django_async_backend.utils.loops import loop_state
from support import outside, poll, settle_background, terminate

ROOT = Path(__file__).resolve().parent.parent
SENDER = "default"


def wrapper(alias: str) -> AsyncDatabaseWrapper:
    """The task's wrapper of ``alias`` (this ENGINE's class, for the types)."""
    return async_connections[alias]


def direct_overrides() -> dict[str, Any]:
    """HOST/PORT of PostgreSQL itself (not PgBouncer, when behind it)."""
    if not settings.DAB_SERVER_URL:
        return {}
    server = urlsplit(settings.DAB_SERVER_URL)
    return {"HOST": server.hostname or "127.0.0.1", "PORT": str(server.port or 5432)}


def sessions(application_name: str) -> int:
    """Sessions of ``application_name`` on the server (not via PgBouncer)."""
    rows = outside(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
        (application_name,),
    )
    return int(rows[0][0])


class ListenCase(unittest.IsolatedAsyncioTestCase):
    alias = "listener"
    alias_options: dict[str, Any] = {}

    def setUp(self) -> None:
        self.app = f"dab-listen-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        options = {"application_name": self.app, **self.alias_options}
        self.enterContext(
            temporary_alias(self.alias, OPTIONS=options, **direct_overrides())
        )
        self.channel = f"ch_{uuid.uuid4().hex[:12]}"

    async def asyncTearDown(self) -> None:
        await settle_background()
        await async_connections.close_all()
        await loop_state().close_pools()

    def listen(self, *channels: str, **options: Any) -> Any:
        return wrapper(self.alias).listen(*(channels or (self.channel,)), **options)

    async def listener_gone(self) -> bool:
        return await poll(lambda: sessions(self.app) == 0)


class ListenTests(ListenCase):
    async def test_a_notification_arrives_with_channel_payload_and_pid(self) -> None:
        async with self.listen() as notifications:
            await notify(self.channel, "hello", using=SENDER)
            sender = await backend_pid(async_connections[SENDER])
            received = await notifications.get(timeout=10)
        if settings.DAB_SERVER_URL:  # the sender's server session is PgBouncer's
            assert received is not None
            sender = received.pid
        self.assertEqual(received, Notification(self.channel, "hello", sender))

    async def test_any_payload_is_sent_as_a_bound_parameter(self) -> None:
        payloads = ["it's", '"; DROP TABLE x; --', "$$ $x$", "\\", "é ✓ 😀", ""]
        async with self.listen() as notifications:
            for payload in payloads:
                await notify(self.channel, payload, using=SENDER)
            got = [await notifications.get(timeout=10) for _ in payloads]
        self.assertEqual([n.payload for n in got if n is not None], payloads)

    async def test_async_for_ends_after_stop_after_or_timeout(self) -> None:
        async with self.listen(stop_after=2) as notifications:
            for number in range(3):
                await notify(self.channel, str(number), using=SENDER)
            self.assertEqual([n.payload async for n in notifications], ["0", "1"])
        async with self.listen(timeout=0.2) as notifications:
            self.assertEqual([n async for n in notifications], [])

    async def test_get_returns_none_after_its_timeout(self) -> None:
        async with self.listen() as notifications:
            self.assertIsNone(await notifications.get(timeout=0.05))

    async def test_a_block_gets_only_its_own_channels(self) -> None:
        other = f"{self.channel}_other"
        async with self.listen() as mine, self.listen(other) as theirs:
            await notify(other, "theirs", using=SENDER)
            await notify(self.channel, "mine", using=SENDER)
            first = await mine.get(timeout=10)
            second = await theirs.get(timeout=10)
        self.assertEqual((first and first.payload, second and second.payload),
                         ("mine", "theirs"))  # fmt: skip

    async def test_channel_names_are_case_sensitive_on_both_sides(self) -> None:
        channel = f"Upper_{self.channel}"
        async with self.listen(channel) as notifications:
            await notify(channel, "x", using=SENDER)
            received = await notifications.get(timeout=10)
        self.assertEqual(received and received.channel, channel)


class SharedConnectionTests(ListenCase):
    async def test_blocks_on_one_loop_share_one_listener_connection(self) -> None:
        started, release = asyncio.Event(), asyncio.Event()
        pids: list[int | None] = []

        async def page(number: int) -> str:
            channel = self.channel if number % 2 else f"{self.channel}_b"
            async with self.listen(self.channel, channel) as notifications:
                pids.append(notifications.backend_pid)
                if len(pids) == 20:
                    started.set()
                received = await notifications.get(timeout=10)
                await release.wait()
                return received.payload if received else "none"

        pages = [asyncio.create_task(page(n)) for n in range(20)]
        await started.wait()
        self.assertEqual(sessions(self.app), 1)
        self.assertEqual(len(set(pids)), 1)
        await notify(self.channel, "to all", using=SENDER)
        release.set()
        self.assertEqual(await asyncio.gather(*pages), ["to all"] * 20)
        self.assertTrue(await self.listener_gone())

    async def test_the_listener_is_not_the_tasks_connection(self) -> None:
        own = await backend_pid(async_connections[self.alias])
        async with self.listen() as notifications:
            self.assertNotEqual(notifications.backend_pid, own)
            self.assertEqual(await backend_pid(async_connections[self.alias]), own)

    async def test_the_connection_closes_when_the_last_block_exits(self) -> None:
        async with self.listen():
            async with self.listen():
                pass
            self.assertEqual(sessions(self.app), 1)
        self.assertTrue(await self.listener_gone())
        self.assertNotIn(self.alias, loop_state().listeners)

    async def test_a_cancelled_listener_frees_its_task_and_connection(self) -> None:
        listening = asyncio.Event()

        async def stream() -> None:
            async with self.listen() as notifications:
                listening.set()
                async for _ in notifications:
                    pass

        task = asyncio.create_task(stream())
        await listening.wait()
        task.cancel()
        with self.assertRaises(asyncio.CancelledError):
            await task
        self.assertTrue(await self.listener_gone())

    async def test_a_task_that_ends_inside_its_block_leaves_it(self) -> None:
        async def enter_only() -> Any:
            notifications = self.listen()
            await notifications.__aenter__()  # and never exits it
            return notifications

        notifications = await asyncio.create_task(enter_only())
        self.assertTrue(await self.listener_gone())
        with self.assertRaisesRegex(RuntimeError, "block has ended"):
            await notifications.get(timeout=0)

    async def test_a_reader_that_falls_behind_gets_an_error(self) -> None:
        async with self.listen(max_pending=3) as notifications:
            for number in range(5):
                await notify(self.channel, str(number), using=SENDER)
            got = [await notifications.get(timeout=10) for _ in range(3)]
            with self.assertRaisesRegex(OperationalError, "fell behind"):
                await notifications.get(timeout=10)
        self.assertEqual([n and n.payload for n in got], ["0", "1", "2"])

    def test_loop_shutdown_closes_the_listener_connection(self) -> None:
        script = textwrap.dedent(SCRIPT.format(
            paths=[str(ROOT / "tests"), str(ROOT)], alias=self.alias,
            app=self.app, direct=direct_overrides(),
        ))  # fmt: skip
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "settings"}
        env.pop("PYTHONDEVMODE", None)
        done = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True, text=True, timeout=60, env=env, cwd=ROOT,
        )  # fmt: skip
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(done.stdout.strip(), "listening\ndone")
        self.assertEqual(done.stderr.strip(), "")
        self.assertTrue(asyncio.run(self.listener_gone()))


SCRIPT = """
import asyncio, sys
sys.path[:0] = {paths!r}
import settings
settings.DATABASES[{alias!r}] = {{
    **settings.DATABASES["default"], **{direct!r},
    "OPTIONS": {{**settings.DATABASES["default"]["OPTIONS"],
                "application_name": {app!r}}},
}}
import django
django.setup()
from django_async_backend.db import async_connections


async def forever(listening):
    async with async_connections[{alias!r}].listen("forever") as notifications:
        print("listening", flush=True)
        listening.set()
        async for _ in notifications:
            pass


async def main():
    listening = asyncio.Event()
    asyncio.create_task(forever(listening))  # the loop's end stops it
    await listening.wait()


asyncio.run(main())
print("done")
"""


class PooledListenTests(ListenCase):
    """A pooled alias: the listener takes no pool slot."""

    alias_options = {"pool": {"min_size": 1, "max_size": 1}}

    async def test_a_listener_takes_no_pool_slot(self) -> None:
        async with self.listen() as notifications:
            # The pool's only connection runs a transaction meanwhile.
            async with async_atomic(using=self.alias):
                await notify(self.channel, "pooled", using=self.alias)
            received = await notifications.get(timeout=10)
        self.assertEqual(received and received.payload, "pooled")


class TransactionTests(ListenCase):
    async def test_a_notify_inside_async_atomic_arrives_at_commit(self) -> None:
        async with self.listen() as notifications:
            async with async_atomic(using=SENDER):
                await notify(self.channel, "committed", using=SENDER)
                self.assertIsNone(await notifications.get(timeout=0.3))
            received = await notifications.get(timeout=10)
        self.assertEqual(received and received.payload, "committed")

    async def test_a_rolled_back_notify_is_dropped(self) -> None:
        async with self.listen() as notifications:
            with self.assertRaises(ValueError):
                async with async_atomic(using=SENDER):
                    await notify(self.channel, "rolled back", using=SENDER)
                    raise ValueError
            async with async_atomic(using=SENDER):
                await notify(self.channel, "kept", using=SENDER)
                with self.assertRaises(ValueError):
                    async with async_atomic(using=SENDER):  # a savepoint
                        await notify(self.channel, "savepoint", using=SENDER)
                        raise ValueError
            received = await notifications.get(timeout=10)
            self.assertIsNone(await notifications.get(timeout=0.3))
        self.assertEqual(received and received.payload, "kept")

    async def test_listen_inside_async_atomic_names_the_fix(self) -> None:
        async with async_atomic(using=self.alias):
            with self.assertRaisesRegex(
                TransactionManagementError, "before the async_atomic"
            ):
                async with self.listen():
                    pass
        self.assertEqual(sessions(self.app), 1)  # only the transaction's

    async def test_listen_inside_async_atomic_of_another_alias_is_fine(self) -> None:
        async with async_atomic(using=SENDER), self.listen() as notifications:
            self.assertIsNotNone(notifications.backend_pid)


class InputTests(ListenCase):
    async def test_channels_that_are_not_identifiers_are_refused(self) -> None:
        for channel in ("my channel", "1st", "a-b", "", "x" * 64, 'a"b', "é"):
            with self.subTest(channel=channel):
                with self.assertRaisesRegex(ValueError, "not a channel name"):
                    self.listen(channel)
                with self.assertRaisesRegex(ValueError, "such as 'bank_transfers'"):
                    await notify(channel, "x", using=SENDER)
        self.listen("x" * 63)  # the longest name

    async def test_listen_needs_a_channel(self) -> None:
        with self.assertRaisesRegex(TypeError, "at least one channel"):
            wrapper(self.alias).listen()

    async def test_a_payload_over_postgresqls_limit_names_the_fix(self) -> None:
        with self.assertRaisesRegex(ValueError, "notify its key"):
            await notify(self.channel, "x" * 8000, using=SENDER)
        with self.assertRaisesRegex(ValueError, "8,000 bytes"):
            await notify(self.channel, "é" * 4000, using=SENDER)  # 8,000 bytes
        async with self.listen() as notifications:
            await notify(self.channel, "x" * 7999, using=SENDER)
            received = await notifications.get(timeout=10)
        self.assertEqual(len(received.payload) if received else 0, 7999)

    async def test_payloads_postgresql_cannot_carry_are_refused(self) -> None:
        with self.assertRaisesRegex(ValueError, "NUL"):
            await notify(self.channel, "a\x00b", using=SENDER)
        with self.assertRaisesRegex(TypeError, "json.dumps"):
            await notify(self.channel, {"a": 1}, using=SENDER)  # type: ignore[arg-type]

    async def test_the_module_function_listens_on_an_alias(self) -> None:
        async with listen(self.channel, using=self.alias) as notifications:
            await notify(self.channel, "via listen()", using=SENDER)
            received = await notifications.get(timeout=10)
        self.assertEqual(received and received.payload, "via listen()")

    async def test_an_unreachable_server_fails_the_block_at_once(self) -> None:
        with temporary_alias("nowhere", PORT="1", OPTIONS={"connect_timeout": 2}):
            with self.assertRaises(OperationalError) as caught:
                async with wrapper("nowhere").listen(self.channel):
                    pass
        self.assertIsInstance(caught.exception.__cause__, psycopg.OperationalError)


class KilledSessionTests(ListenCase):
    async def test_a_killed_session_ends_the_block_with_operational_error(
        self,
    ) -> None:
        async with self.listen() as notifications:
            pid = notifications.backend_pid
            assert pid is not None
            await asyncio.to_thread(terminate, pid)
            with self.assertRaisesRegex(OperationalError, "was lost") as caught:
                async for _ in notifications:
                    pass
        self.assertIsInstance(caught.exception.__cause__, psycopg.OperationalError)
        self.assertIn("reconnect=True", str(caught.exception))
        self.assertTrue(await self.listener_gone())

    async def test_with_reconnect_a_killed_session_is_replaced(self) -> None:
        async with self.listen(reconnect=True) as notifications:
            pid = notifications.backend_pid
            assert pid is not None
            await asyncio.to_thread(terminate, pid)
            self.assertTrue(await poll(lambda: notifications.reconnects == 1))
            self.assertNotIn(notifications.backend_pid, (None, pid))
            await notify(self.channel, "after", using=SENDER)
            received = await notifications.get(timeout=10)
        self.assertEqual(received and received.payload, "after")
        self.assertTrue(await self.listener_gone())


class RestartTests(unittest.IsolatedAsyncioTestCase):
    """A throwaway server (tests/cluster.py), stopped and started again."""

    cluster: Cluster

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        bindir = find_bindir()
        if bindir is None:  # only where there are no PostgreSQL binaries at all
            raise unittest.SkipTest("no PostgreSQL binaries (initdb, pg_ctl)")
        cls.cluster = Cluster(bindir)
        cls.addClassCleanup(cls.cluster.destroy)
        cls.cluster.start()

    def setUp(self) -> None:
        self.app = f"dab-restart-{uuid.uuid4().hex[:8]}"
        options = {"application_name": self.app, "connect_timeout": 2}
        self.enterContext(
            temporary_alias("restarted", **self.cluster.database(OPTIONS=options))
        )

    async def asyncTearDown(self) -> None:
        if not self.cluster.running:
            await self.cluster.astart()
        await async_connections.close_all()

    async def test_a_restart_ends_the_block_with_operational_error(self) -> None:
        async with wrapper("restarted").listen("jobs") as notifications:
            await self.cluster.astop()
            with self.assertRaisesRegex(OperationalError, "was lost"):
                await notifications.get(timeout=30)

    async def test_with_reconnect_the_block_listens_again_after_a_restart(
        self,
    ) -> None:
        connection = wrapper("restarted")
        async with connection.listen("jobs", reconnect=True) as notifications:
            await self.cluster.astop()
            await self.cluster.astart()
            self.assertTrue(await poll(lambda: notifications.reconnects == 1, 1500))
            await notify("jobs", "back", using="restarted")
            received = await notifications.get(timeout=10)
        self.assertEqual(received and received.payload, "back")


def pgbouncer_binary() -> str | None:
    from tests_pgbouncer.harness import SEARCH_PATH

    return shutil.which("pgbouncer", path=SEARCH_PATH)


class PgBouncerTests(unittest.IsolatedAsyncioTestCase):
    """Behind PgBouncer (transaction pooling) listen() refuses to run.

    Behind ``python3 dev.py test --pgbouncer`` the ``default`` alias is
    PgBouncer; otherwise the test starts one in front of the server.
    """

    bounced = "default"

    def setUp(self) -> None:
        if settings.DAB_SERVER_URL:
            return  # "default" goes through PgBouncer already
        if pgbouncer_binary() is None:
            self.skipTest("no pgbouncer binary (apt-get install pgbouncer)")
        from tests_pgbouncer.harness import pgbouncer

        config = settings.DATABASES["default"]
        if str(config["HOST"]).startswith("/") and os.geteuid() == 0:
            self.skipTest(
                "the server listens on a socket directory of root's (the embedded "
                "server), which PgBouncer, run as an unprivileged user, cannot "
                "reach; the PgBouncer run and the other cells cover this"
            )
        # host and port as parameters: HOST may be a socket directory, which
        # a URL's host part cannot hold.
        where = urlencode(
            {"host": config["HOST"] or "127.0.0.1", "port": config["PORT"] or "5432"}
        )
        server = f"postgresql://{quote(config['USER'])}@/{config['NAME']}?{where}"
        url = urlsplit(self.enterContext(pgbouncer(server, pool_size=2)))
        self.bounced = self.enterContext(
            temporary_alias("bounced", HOST=url.hostname, PORT=str(url.port))
        )

    async def asyncTearDown(self) -> None:
        await async_connections.close_all()

    async def test_listen_behind_pgbouncer_names_the_direct_alias(self) -> None:
        with self.assertRaisesRegex(NotSupportedError, "points straight at PostgreSQL"):
            async with wrapper(self.bounced).listen("jobs"):
                pass
        self.assertNotIn(self.bounced, loop_state().listeners)

    async def test_notify_through_pgbouncer_reaches_a_direct_listener(self) -> None:
        with temporary_alias("direct", **direct_overrides()):
            async with wrapper("direct").listen("jobs") as notifications:
                await notify("jobs", "through the pooler", using=self.bounced)
                received = await notifications.get(timeout=10)
        self.assertEqual(received and received.payload, "through the pooler")


if __name__ == "__main__":
    unittest.main()
