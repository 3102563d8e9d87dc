"""The demo's load test (``python -m example.demo --smoke``) as a test.

The smoke mode runs in a subprocess, against the configured PostgreSQL
server, in a database of its own (dropped afterwards) and on a free loopback
port: it serves the demo app with uvicorn in a child process, drives a few
hundred concurrent requests at it (transfers, batches, reads, error pages)
and checks the books. The test asserts on its exit status and on the JSON
line it prints, never on timings.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import unittest
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psycopg
from django.conf import settings
from psycopg import sql

import support

ROOT = Path(__file__).resolve().parent.parent
REQUESTS = 400
CONCURRENCY = 24
RESULT_PREFIX = "smoke-result "


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_url() -> str:
    """DATABASE_URL for the server that the test settings point at."""
    config: dict[str, Any] = settings.DATABASES["default"]
    query = {
        key: str(config[name])
        for key, name in (
            ("host", "HOST"),
            ("port", "PORT"),
            ("user", "USER"),
            ("password", "PASSWORD"),
        )
        if config.get(name)
    }
    sslmode = config.get("OPTIONS", {}).get("sslmode")
    if sslmode:
        query["sslmode"] = sslmode
    return f"postgresql:///{config['NAME']}?{urlencode(query)}"


def drop_database(name: str) -> None:
    with psycopg.connect(support.server_dsn(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)
            )
        )


class DemoSmokeTests(unittest.TestCase):
    def test_smoke_keeps_the_books(self) -> None:
        database = f"example_demo_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.addCleanup(drop_database, database)
        env = dict(os.environ, DATABASE_URL=server_url())
        command = [
            sys.executable,
            "-m",
            "example.demo",
            "--smoke",
            f"--requests={REQUESTS}",
            f"--concurrency={CONCURRENCY}",
            f"--port={free_port()}",
            f"--database={database}",
        ]
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
        )
        output = done.stdout + done.stderr
        self.assertEqual(done.returncode, 0, output)
        self.assertNotIn("Traceback", output)
        lines = [x for x in done.stdout.splitlines() if x.startswith(RESULT_PREFIX)]
        self.assertEqual(len(lines), 1, output)
        result = json.loads(lines[0][len(RESULT_PREFIX) :])

        self.assertTrue(result["ok"], output)
        self.assertTrue(all(result["checks"].values()), result["checks"])
        # Every request got the answer it should have; none was lost.
        self.assertEqual(result["responses"], REQUESTS)
        self.assertEqual(result["problems"], 0, output)
        # No money created or lost, in the database and in every live read.
        self.assertEqual(result["total_after"], result["total_before"])
        self.assertGreater(result["total_reads"], 0)
        # Each committed transfer was answered, stored and announced once.
        self.assertGreater(result["committed"], 0)
        self.assertEqual(result["committed"], result["transfer_rows"])
        self.assertEqual(result["committed"], result["announced"])
        self.assertGreater(result["refused"], 0)  # overdrafts were refused
        self.assertEqual(result["replay_mismatches"], 0)
        self.assertEqual(result["negative_balances"], 0)
        self.assertEqual(result["sessions_left"], 0)
        # The live pages (server-sent events, pushed by NOTIFY): each got
        # every committed transfer once, on one shared listener connection,
        # and their listeners were gone once they closed.
        pages = result["live_pages"]
        self.assertEqual(pages["pages_listening"], pages["pages"])
        self.assertEqual(pages["listener_connections"], 1)
        self.assertEqual(pages["pushed_min"], result["committed"])
        self.assertEqual(pages["pushed_max"], result["committed"])
        self.assertEqual(pages["pushed_twice"], 0)
        self.assertEqual(pages["page_problems"], [])
        self.assertEqual(pages["listeners_after_close"], 0)


if __name__ == "__main__":
    unittest.main()
