"""Request lifecycle under Django's ASGI handler, and the ASGI system check.

``ASGIHandler`` is driven directly with ASGI ``scope``/``receive``/``send``
callables: no server is needed. The view (tests/asgi_urls.py) runs a query on
``async_connections["default"]``; Django runs each view in a task of its own,
so the connection must be released when that task ends.

The default alias gets a unique ``application_name`` for these tests, so that
session counts only see the sessions the requests opened.
"""

from __future__ import annotations

import asyncio
import json
import os
import unittest
import uuid
from collections.abc import Mapping
from typing import Any
from unittest import mock

from django.conf import settings
from django.core.checks import run_checks
from django.core.handlers.asgi import ASGIHandler
from django.db import connections
from django.test import override_settings

import support
from django_async_backend.db import async_connections
from django_async_backend.utils.loops import loop_state

REQUESTS = 1000
CONCURRENCY = 20


async def asgi_get(handler: ASGIHandler, path: str) -> tuple[int, Any]:
    """Send one GET request through ``handler``; return (status, JSON body)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }
    request_sent = False
    client_stays = asyncio.Event()  # never set: the client does not disconnect
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await client_stays.wait()
        return {"type": "http.disconnect"}

    async def send(message: Mapping[str, Any]) -> None:
        messages.append(dict(message))

    await handler(scope, receive, send)
    start = messages[0]
    assert start["type"] == "http.response.start", messages
    body = b"".join(
        m.get("body", b"") for m in messages if m["type"] == "http.response.body"
    )
    return start["status"], json.loads(body)


async def eventually(condition: Any) -> bool:
    """Poll ``condition`` a bounded number of times (never timed)."""
    return await support.poll(condition, attempts=150)


class ASGIRequestTests(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self) -> None:
        self.app = f"dab-asgi-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        options = mock.patch.dict(
            connections.settings["default"]["OPTIONS"], {"application_name": self.app}
        )
        options.start()
        self.addCleanup(options.stop)
        urls = override_settings(ROOT_URLCONF="asgi_urls", ALLOWED_HOSTS=["testserver"])
        urls.enable()
        self.addCleanup(urls.disable)
        self.handler = ASGIHandler()

    async def asyncTearDown(self) -> None:
        await async_connections.close_all()

    async def test_request_connection_is_closed_after_the_response(self) -> None:
        self.assertEqual(support.count_sessions(self.app), 0)
        # ASGI servers run each request in a task of its own (Django 6.1 runs
        # the view in that task; earlier versions in a child task of it).
        status, body = await asyncio.create_task(asgi_get(self.handler, "/pid/"))
        self.assertEqual(status, 200)
        self.assertEqual(body["application_name"], self.app)
        # Counted by this test's application_name: a pid alone may be reused
        # by another backend on a busy server.
        self.assertTrue(await eventually(lambda: support.count_sessions(self.app) == 0))

    async def test_many_requests_leave_no_session_behind(self) -> None:
        baseline = support.count_sessions(self.app)
        self.assertEqual(baseline, 0)
        semaphore = asyncio.Semaphore(CONCURRENCY)

        async def one() -> tuple[int, Any]:
            async with semaphore:
                return await asgi_get(self.handler, "/pid/")

        results = await asyncio.gather(*(one() for _ in range(REQUESTS)))

        self.assertEqual([status for status, _ in results], [200] * REQUESTS)
        self.assertEqual({body["application_name"] for _, body in results}, {self.app})
        self.assertTrue(
            await eventually(lambda: support.count_sessions(self.app) == baseline)
        )
        # Every request's scope was released: nothing is left to the loop's
        # shutdown hook.
        self.assertTrue(await eventually(lambda: not loop_state().scopes))


class ASGICheckTests(unittest.TestCase):
    CHECK_ID = "django_async_backend.W001"

    def ids(self) -> list[str | None]:
        return [message.id for message in run_checks()]

    def test_wsgi_only_project_is_warned(self) -> None:
        self.assertFalse(hasattr(settings, "ASGI_APPLICATION"))
        with override_settings(WSGI_APPLICATION="project.wsgi.application"):
            self.assertIn(self.CHECK_ID, self.ids())

    def test_asgi_project_is_not_warned(self) -> None:
        with override_settings(
            WSGI_APPLICATION="project.wsgi.application",
            ASGI_APPLICATION="project.asgi.application",
        ):
            self.assertNotIn(self.CHECK_ID, self.ids())


if __name__ == "__main__":
    unittest.main()
