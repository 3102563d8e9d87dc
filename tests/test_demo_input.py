"""The demo under hostile input: every malformed request gets a clear 4xx.

The demo (``example/``) is served by uvicorn in a child process, on a
database of its own (dropped afterwards), and reached over HTTP as a browser
or a script would. Each test sends one family of hostile input (NUL bytes,
lone surrogates, huge strings and numbers, wrong JSON types, bodies that are
not UTF-8, wrong content types…) through every path that reads it: the
transfer form, the batch form, the JSON transfer and batch endpoints, query
strings and the URL. It asserts the status, that the message names what is
wrong, that the echo of what was sent stays short, and that a refused request
wrote nothing: the balances and the transfer log are unchanged.
"""

from __future__ import annotations

import functools
import html
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
from psycopg.conninfo import make_conninfo

import support
from test_demo import drop_database, server_url

ROOT = Path(__file__).resolve().parent.parent
URL_LINE = re.compile(r"The async bank is at http://127\.0\.0\.1:(\d+)/")
HOST = "127.0.0.1"
OK_LEG = {"source": "alice", "destination": "bob", "amount": "1.00"}
LONG = 100_000  # characters of a name or a path
MAX_ECHO_PAGE = 4_000  # bytes: an error page is ~2.6 kB, whatever was sent
TAG = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"


# --- the demo server ---------------------------------------------------------


@dataclass
class Demo:
    """The demo served by uvicorn in a child process, on its own database."""

    database: str = f"example_demo_input_{TAG}"
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = Path(tempfile.gettempdir()) / f"example_demo_input_{TAG}.log"
    books_conn: psycopg.Connection[Any] | None = None

    def start(self) -> None:
        env = dict(os.environ, DATABASE_URL=server_url())
        command = [sys.executable, "-m", "example.demo", "--port=0"]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [*command, f"--database={self.database}"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.port = self.wait_for_url()
        conninfo = make_conninfo(support.server_dsn(), dbname=self.database)
        self.books_conn = psycopg.connect(conninfo, autocommit=True)

    def wait_for_url(self) -> int:
        """The port the demo printed (it binds a free one), polled (bounded)."""
        assert self.process is not None
        for _ in range(1200):
            found = URL_LINE.search(self.log())
            if found:
                return int(found.group(1))
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"the demo did not start:\n{self.log()}")

    def stop(self) -> None:
        if self.books_conn is not None:
            self.books_conn.close()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_path.unlink(missing_ok=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def books(self) -> tuple[Any, ...]:
        """Every balance and the number of transfers: what a write changes."""
        assert self.books_conn is not None
        row = self.books_conn.execute(
            "SELECT array_agg(balance ORDER BY name),"
            " (SELECT count(*) FROM bank_transfer) FROM bank_account"
        ).fetchone()
        assert row is not None
        return tuple(row)


DEMO = Demo()


def setUpModule() -> None:
    try:
        DEMO.start()
        CLIENT.fetch_csrf()
    except BaseException:
        tearDownModule()
        raise


def tearDownModule() -> None:
    # pytest does not run unittest.addModuleCleanup()'s cleanups.
    try:
        DEMO.stop()
    finally:
        drop_database(DEMO.database)


# --- an HTTP client ----------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def is_json(self) -> bool:
        return self.headers.get("content-type", "").startswith("application/json")

    def json(self) -> Any:
        return json.loads(self.body)

    def says(self) -> str:
        """All the answer says: the error, and each refused leg's reason."""
        if self.is_json:
            data = self.json()
            legs = [leg["error"]["message"] for leg in data.get("legs", [])]
            return "\n".join([data["error"]["message"], *legs])
        return html.unescape(re.sub(r"<[^>]*>", " ", self.body.decode()))

    def title_and_message(self) -> tuple[str, str]:
        """The error's title and message, from the JSON or from the page."""
        if self.is_json:
            error = self.json()["error"]
            return error["title"], error["message"]
        page = self.body.decode()
        found = re.search(r'<h1 class="bad">(.*?)</h1>\s*<p>(.*?)</p>', page, re.S)
        assert found, f"not an error page: {page[:300]!r}"
        return html.unescape(found.group(1)), html.unescape(found.group(2))

    def summary(self) -> str:
        return f"HTTP {self.status}: {self.body[:300]!r}"


@dataclass
class Client:
    cookie: str = ""
    token: str = ""

    def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        connection = http.client.HTTPConnection(HOST, DEMO.port, timeout=120)
        try:
            # skip_host: a test may send a Host of its own.
            connection.putrequest(method, path, skip_host=True)
            sent = {"Host": f"{HOST}:{DEMO.port}", **(headers or {})}
            sent["Content-Length"] = str(len(body))
            for name, value in sent.items():
                connection.putheader(name, value)
            connection.endheaders(body)
            response = connection.getresponse()
            content = response.read()
            heads = {k.lower(): v for k, v in response.getheaders()}
            return Answer(response.status, heads, content)
        finally:
            connection.close()

    def fetch_csrf(self) -> None:
        """Take the CSRF cookie and the form token from the home page."""
        answer = self.request("GET", "/")
        found = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', answer.body)
        assert answer.status == 200 and found, answer.summary()
        self.token = found.group(1).decode()
        self.cookie = answer.headers["set-cookie"].split(";")[0]

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> Answer:
        return self.request("GET", path, headers=headers)

    def form(self, path: str, fields: Mapping[str, str]) -> Answer:
        """POST a form as the page does (urlencoded UTF-8, with its token)."""
        return self.raw_form(path, urlencode(fields).encode())

    def raw_form(
        self,
        path: str,
        body: bytes,
        content_type: str = "application/x-www-form-urlencoded",
    ) -> Answer:
        """POST ``body`` as it is, with the CSRF cookie and header."""
        headers = {
            "Content-Type": content_type,
            "Cookie": self.cookie,
            "X-CSRFToken": self.token,
        }
        return self.request("POST", path, body, headers)

    def json(self, path: str, value: Any) -> Answer:
        return self.raw_json(path, json.dumps(value).encode())

    def raw_json(
        self, path: str, body: bytes, content_type: str = "application/json"
    ) -> Answer:
        return self.request("POST", path, body, {"Content-Type": content_type})


CLIENT = Client()


# --- the four ways a transfer's fields reach the demo ------------------------


def via_transfer_form(leg: Mapping[str, Any]) -> Answer:
    return CLIENT.form("/transfer/", leg)


def via_batch_form(leg: Mapping[str, Any]) -> Answer:
    line = f"{leg['source']} {leg['destination']} {leg['amount']}"
    return CLIENT.form("/batch/", {"legs": line})


def via_json_transfer(leg: Mapping[str, Any]) -> Answer:
    return CLIENT.json("/api/transfers/", leg)


def via_json_batch(leg: Mapping[str, Any]) -> Answer:
    return CLIENT.json("/api/batches/", {"legs": [leg]})


FORM_ROUTES = (via_transfer_form, via_batch_form)
JSON_ROUTES = (via_json_transfer, via_json_batch)
ROUTES = FORM_ROUTES + JSON_ROUTES
# How each route names a field in its messages.
LABELS: dict[Callable[[Mapping[str, Any]], Answer], str] = {
    via_transfer_form: "{}",
    via_batch_form: "Line 1: {}",
    via_json_transfer: "{}",
    via_json_batch: "legs[0].{}",
}


def with_field(name: str, value: Any) -> dict[str, Any]:
    return {**OK_LEG, name: value}


class HostileInputCase(unittest.TestCase):
    """Assertions shared by the families below."""

    def refused(self, send: Callable[[], Answer], status: int, *phrases: str) -> Answer:
        """Send; assert the status, the phrases and that nothing was written."""
        before = DEMO.books()
        log_before = len(DEMO.log())
        answer = send()
        self.assertEqual(answer.status, status, answer.summary())
        answer.title_and_message()  # our error page, or our JSON error
        says = answer.says()
        for phrase in phrases:
            self.assertIn(phrase, says, answer.summary())
        self.assertEqual(DEMO.books(), before, "a refused request wrote something")
        self.assertNotIn("Traceback", DEMO.log()[log_before:])
        return answer

    def each_route(
        self,
        routes: tuple[Callable[[Mapping[str, Any]], Answer], ...],
        names: tuple[str, ...],
        value: Any,
        status: int,
        phrase: str,
    ) -> None:
        """Send ``value`` as each of ``names`` through each of ``routes``."""
        for route in routes:
            for name in names:
                with self.subTest(route=route.__name__, field=name, value=value):
                    send = functools.partial(route, with_field(name, value))
                    label = LABELS[route].format(name)
                    self.refused(send, status, f"{label} {phrase}")


# --- the families ------------------------------------------------------------


def transfer_json(amount: str) -> bytes:
    """A JSON transfer whose amount is written as it is (a bare number…)."""
    return b'{"source": "alice", "destination": "bob", "amount": %s}' % amount.encode()


def batch_json(amount: str) -> bytes:
    leg = b'{"source": "alice", "destination": "bob", "amount": %s}' % amount.encode()
    return b'{"legs": [%s]}' % leg


def with_token(body: bytes) -> bytes:
    return body + b"&csrfmiddlewaretoken=" + quote(CLIENT.token).encode()


class ControlCharacterTests(HostileInputCase):
    """A NUL byte (which PostgreSQL cannot store) or another control character."""

    def test_in_an_account_name_through_every_route(self) -> None:
        # (Not \x1c-\x1f: str.split() cuts a batch line there, into more words.)
        for bad in ("al\x00ice", "\x00", "bob\x01", "x\x1by", "\x7f", "a\x9bb"):
            self.each_route(
                ROUTES, ("source", "destination"), bad, 400, "contains a control"
            )

    def test_in_an_amount(self) -> None:
        for route in ROUTES:
            with self.subTest(route=route.__name__):
                send = functools.partial(route, with_field("amount", "1\x00"))
                answer = self.refused(send, 400, "must be a number such as 12.50")
                self.assertNotIn("\x00", answer.body.decode())  # shown escaped

    def test_in_the_url_and_the_query(self) -> None:
        answer = self.refused(functools.partial(CLIENT.get, "/%00/"), 404)
        self.assertIn("Nothing lives at '/\\x00/'.", answer.says())
        for path in ("/parallel/?delay=%00", "/api/parallel/?delay=0%00"):
            with self.subTest(path=path):
                self.refused(functools.partial(CLIENT.get, path), 400, "delay must be")


class SurrogateTests(HostileInputCase):
    """A lone UTF-16 surrogate: only a JSON escape makes one, and it is no text."""

    def test_in_an_account_name_through_the_api(self) -> None:
        for escape in ("\\ud800", "al\\udfffice", "\\udbff\\udbff"):
            for name in ("source", "destination"):
                leg = json.dumps(with_field(name, "@")).replace("@", escape)
                for path, body in (
                    ("/api/transfers/", leg),
                    ("/api/batches/", f'{{"legs": [{leg}]}}'),
                ):
                    with self.subTest(path=path, field=name, escape=escape):
                        send = functools.partial(CLIENT.raw_json, path, body.encode())
                        self.refused(send, 400, f"{name} contains a lone surrogate")

    def test_in_other_fields(self) -> None:
        for path, body, phrase in (
            ("/api/transfers/", transfer_json('"\\ud800"'), "not '\\ud800'"),
            ("/api/burst/", b'{"count": "\\ud800"}', "count must be"),
            (
                "/api/batches/",
                json.dumps({"legs": [OK_LEG], "all_or_nothing": "@"})
                .replace("@", "\\udc00")
                .encode(),
                "all_or_nothing must be true or false, not a string.",
            ),
            ("/api/transfers/", b'{"\\ud800": 1, "\\ud800": 2}', "twice"),
        ):
            with self.subTest(path=path, body=body):
                send = functools.partial(CLIENT.raw_json, path, body)
                self.refused(send, 400, phrase)

    def test_a_paired_surrogate_is_text(self) -> None:
        raw = b'{"source": "\\ud83d\\ude00", "destination": "bob", "amount": 1}'
        answer = self.refused(
            functools.partial(CLIENT.raw_json, "/api/transfers/", raw),
            404,
            "There is no account named '\U0001f600'.",
        )
        self.assertEqual(answer.json()["error"]["code"], "unknown_account")

    def test_encoded_in_a_form_it_is_not_utf8(self) -> None:
        for path, body in (
            ("/transfer/", b"source=%ED%A0%80&destination=bob&amount=1"),
            ("/batch/", b"legs=%ED%A0%80+bob+1"),
        ):
            with self.subTest(path=path):
                send = functools.partial(CLIENT.raw_form, path, with_token(body))
                self.refused(send, 400, "The form is not UTF-8 text")


class HugeStringTests(HostileInputCase):
    """Megabytes where a short string is due: refused, and echoed short."""

    def test_a_long_account_name_is_unknown_and_echoed_short(self) -> None:
        for route in ROUTES:
            size = 1_000_000 if route in JSON_ROUTES else LONG
            for name in ("source", "destination"):
                with self.subTest(route=route.__name__, field=name):
                    send = functools.partial(route, with_field(name, "x" * size))
                    echo = f"'{'x' * 40}'… ({size:,} characters)."
                    answer = self.refused(send, 404, f"account named {echo}")
                    self.assertLess(len(answer.body), MAX_ECHO_PAGE)

    def test_a_long_amount_is_echoed_short(self) -> None:
        for route in ROUTES:
            with self.subTest(route=route.__name__):
                send = functools.partial(route, with_field("amount", "1x" * LONG))
                answer = self.refused(send, 400, f"({2 * LONG:,} characters)")
                self.assertLess(len(answer.body), MAX_ECHO_PAGE)

    def test_a_long_path_is_echoed_short(self) -> None:
        for path in ("/" + "x" * LONG + "/", "/api/" + "x" * LONG):
            with self.subTest(api=path.startswith("/api/")):
                send = functools.partial(CLIENT.get, path)
                answer = self.refused(send, 404, "Nothing lives at '/", "characters)")
                self.assertLess(len(answer.body), MAX_ECHO_PAGE)

    def test_a_huge_batch_is_refused_whole(self) -> None:
        fields = {"legs": "alice bob 1\n" * LONG}
        self.refused(
            functools.partial(CLIENT.form, "/batch/", fields),
            400,
            f"A batch has 1 to 20 transfers, not {LONG}.",
        )
        self.refused(
            functools.partial(CLIENT.json, "/api/batches/", {"legs": [OK_LEG] * 21}),
            400,
            "A batch has 1 to 20 transfers, not 21.",
        )

    def test_a_body_over_the_upload_limit(self) -> None:
        big = b" " * 3_000_000
        for send in (
            functools.partial(CLIENT.raw_json, "/api/transfers/", big),
            functools.partial(CLIENT.raw_form, "/transfer/", b"a=" + big),
        ):
            answer = self.refused(send, 413, "The body is larger than 2,621,440 bytes")
            self.assertEqual(answer.title_and_message()[0], "Too large")

    def test_too_many_form_fields(self) -> None:
        body = "&".join(f"f{i}=1" for i in range(1_500)).encode()
        self.refused(
            functools.partial(CLIENT.raw_form, "/batch/", body),
            400,
            "The form has more than 1,000 fields",
        )


class HugeNumberTests(HostileInputCase):
    """Thousands of digits, or exponents beyond what any number type holds."""

    def test_a_5000_digit_amount_through_every_route(self) -> None:
        digits = "9" * 5_000
        self.each_route(ROUTES, ("amount",), digits, 400, "is more than this bank")
        # As a bare JSON number (once "not valid JSON": int() stops at 4,300).
        for path, body in (
            ("/api/transfers/", transfer_json(digits)),
            ("/api/batches/", batch_json(digits)),
        ):
            with self.subTest(path=path):
                self.refused(
                    functools.partial(CLIENT.raw_json, path, body),
                    400,
                    "amount is more than this bank will ever hold",
                )

    def test_a_number_beyond_any_exponent(self) -> None:
        for number in ("1e9999999999999999999", "-1e-9999999999999999999"):
            for body in (transfer_json(number), batch_json(number)):
                with self.subTest(number=number, body=body[:5]):
                    self.refused(
                        functools.partial(CLIENT.raw_json, "/api/transfers/", body),
                        400,
                        "is too large or too small to read",
                    )

    def test_a_huge_count(self) -> None:
        body = b'{"count": ' + b"9" * 5_000 + b"}"
        answer = self.refused(
            functools.partial(CLIENT.raw_json, "/api/burst/", body),
            400,
            "count must be a whole number from 1 to 500",
        )
        self.assertLess(len(answer.body), MAX_ECHO_PAGE)

    def test_a_huge_delay(self) -> None:
        for path in ("/parallel/?delay=", "/api/parallel/?delay="):
            with self.subTest(path=path):
                send = functools.partial(CLIENT.get, path + "9" * 5_000)
                answer = self.refused(send, 400, "delay must be a number of seconds")
                self.assertLess(len(answer.body), MAX_ECHO_PAGE)

    def test_a_huge_transfer_number(self) -> None:
        for digits in (20, 4_000):
            with self.subTest(digits=digits):
                send = functools.partial(CLIENT.get, f"/transfers/{'9' * digits}/")
                answer = self.refused(send, 404, "There is no transfer #999")
                self.assertLess(len(answer.body), MAX_ECHO_PAGE)
        # More digits than Python's int() reads from a string: no such page.
        send = functools.partial(CLIENT.get, f"/transfers/{'9' * 5_000}/")
        answer = self.refused(send, 404, "Nothing lives at '/transfers/999")
        self.assertLess(len(answer.body), MAX_ECHO_PAGE)


class AmountTests(HostileInputCase):
    """Amounts that are not a positive number of cents."""

    def test_not_positive(self) -> None:
        for value in ("0", "-5", "-0.01", "0.00", "+0"):
            self.each_route(ROUTES, ("amount",), value, 400, "must be more than 0.00")
        for number in (0, -5, -0.5):
            self.each_route(JSON_ROUTES, ("amount",), number, 400, "must be more")

    def test_more_than_two_decimals(self) -> None:
        for value in ("0.001", "12.345", "1.0000001"):
            self.each_route(ROUTES, ("amount",), value, 400, "has more than 2 decimals")
        self.each_route(JSON_ROUTES, ("amount",), 0.125, 400, "has more than 2")

    def test_not_a_plain_number(self) -> None:
        # Decimal() takes most of these: exponents, NaN, other scripts' digits…
        for value in (
            *(
                "1e3",
                "NaN",
                "Infinity",
                "sNaN",
                "1_000",
                "\u0661\u0662",
                "1,,0",
                "12,34",
            ),
            *("0x10", "ten", "1.2.3", ".", "1 000"),
        ):
            # A space splits a batch line: that is another error.
            routes = ROUTES if " " not in value else (*JSON_ROUTES, via_transfer_form)
            self.each_route(routes, ("amount",), value, 400, "must be a number such")

    def test_nan_and_infinity_are_not_json(self) -> None:
        for literal in ("NaN", "Infinity", "-Infinity"):
            for path, body in (
                ("/api/transfers/", transfer_json(literal)),
                ("/api/batches/", batch_json(literal)),
            ):
                with self.subTest(path=path, literal=literal):
                    send = functools.partial(CLIENT.raw_json, path, body)
                    self.refused(send, 400, f"{literal} is not JSON")

    def test_missing_or_empty(self) -> None:
        routes = (via_transfer_form, *JSON_ROUTES)
        self.each_route(routes, ("amount",), "", 400, "must be a number such as")
        leg = {"source": "alice", "destination": "bob"}
        for send in (
            functools.partial(CLIENT.form, "/transfer/", leg),
            functools.partial(CLIENT.json, "/api/transfers/", leg),
            functools.partial(CLIENT.json, "/api/batches/", {"legs": [leg]}),
        ):
            self.refused(send, 400, "amount is missing")
        self.refused(
            functools.partial(CLIENT.form, "/batch/", {"legs": "alice bob"}),
            400,
            "Line 1: write 'from to amount'",
        )


WRONG_TYPES: dict[str, Any] = {
    "null": None,
    "true": True,
    "false": False,
    "a list": [1],
    "an object": {"a": 1},
}


class JsonTypeTests(HostileInputCase):
    """A JSON value of the wrong type where a number, string or list is due."""

    def test_names(self) -> None:
        for kind, value in {**WRONG_TYPES, "a number": 5}.items():
            self.each_route(
                JSON_ROUTES,
                ("source", "destination"),
                value,
                400,
                f'must be an account name (a string such as "alice"), not {kind}.',
            )

    def test_amounts(self) -> None:
        for kind, value in WRONG_TYPES.items():
            self.each_route(
                JSON_ROUTES,
                ("amount",),
                value,
                400,
                f'must be a number, or a string such as "12.50", not {kind}.',
            )

    def test_counts(self) -> None:
        # A boolean is no count (Python's True is an int: 1).
        for kind, value in {**WRONG_TYPES, "a string": "5"}.items():
            with self.subTest(count=value):
                send = functools.partial(CLIENT.json, "/api/burst/", {"count": value})
                self.refused(
                    send,
                    400,
                    f"count must be a whole number from 1 to 500, not {kind}.",
                )
        for value in (0, -1, 501, 2.5, 1e3):
            with self.subTest(count=value):
                send = functools.partial(CLIENT.json, "/api/burst/", {"count": value})
                self.refused(send, 400, "count must be a whole number from 1 to 500")

    def test_all_or_nothing_must_be_a_boolean(self) -> None:
        # "false" is a non-empty string: read loosely, it would mean true.
        for kind, value in (("a string", "false"), ("a number", 0), ("null", None)):
            with self.subTest(value=value):
                body = {"legs": [OK_LEG], "all_or_nothing": value}
                send = functools.partial(CLIENT.json, "/api/batches/", body)
                self.refused(
                    send, 400, f"all_or_nothing must be true or false, not {kind}."
                )
        for value in ("yes", "true", "off", ""):
            with self.subTest(checkbox=value):
                fields = {"legs": "alice bob 1", "all_or_nothing": value}
                send = functools.partial(CLIENT.form, "/batch/", fields)
                self.refused(send, 400, "all_or_nothing must be on (the box ticked)")

    def test_legs(self) -> None:
        for kind, value in (*WRONG_TYPES.items(), ("a string", "alice bob 1")):
            if kind == "a list":
                continue
            with self.subTest(legs=value):
                send = functools.partial(CLIENT.json, "/api/batches/", {"legs": value})
                self.refused(
                    send,
                    400,
                    "legs must be a list of {source, destination, amount} objects,"
                    f" not {kind}.",
                )
        for kind, value in (*WRONG_TYPES.items(), ("a string", "x")):
            if kind == "an object":
                continue
            with self.subTest(leg=value):
                body = {"legs": [OK_LEG, value]}
                send = functools.partial(CLIENT.json, "/api/batches/", body)
                self.refused(
                    send,
                    400,
                    f"legs[1] must be an object {{source, destination, amount}},"
                    f" not {kind}.",
                )
        send = functools.partial(CLIENT.json, "/api/batches/", {})
        self.refused(send, 400, "legs is missing")

    def test_the_body_must_be_an_object(self) -> None:
        for kind, value in (*WRONG_TYPES.items(), ("a string", "x"), ("a number", 1)):
            if kind == "an object":
                continue
            for path in ("/api/transfers/", "/api/batches/", "/api/burst/"):
                with self.subTest(path=path, body=value):
                    send = functools.partial(CLIENT.json, path, value)
                    self.refused(
                        send,
                        400,
                        f"The body must be a JSON object ({{...}}), not {kind}.",
                    )

    def test_missing_and_empty_names(self) -> None:
        for name in ("source", "destination"):
            leg = {k: v for k, v in OK_LEG.items() if k != name}
            for send in (
                functools.partial(CLIENT.json, "/api/transfers/", leg),
                functools.partial(CLIENT.json, "/api/batches/", {"legs": [leg]}),
                functools.partial(CLIENT.form, "/transfer/", leg),
            ):
                with self.subTest(missing=name, send=send.args[0]):
                    self.refused(send, 400, f"{name} is missing")
        routes = (via_transfer_form, *JSON_ROUTES)
        self.each_route(routes, ("source", "destination"), "", 400, "is empty")


API_POSTS = ("/api/transfers/", "/api/batches/", "/api/burst/")


class BodyTests(HostileInputCase):
    """Bodies that are not what their content type says, or of the wrong type."""

    def test_not_utf8(self) -> None:
        for encoding, body in (
            ("latin-1", '{"source": "é"}'.encode("latin-1")),
            ("utf-16", json.dumps(OK_LEG).encode("utf-16")),
            ("a stray byte", b'{"source": "alice\xff"}'),
        ):
            for path in API_POSTS:
                with self.subTest(path=path, encoding=encoding):
                    send = functools.partial(CLIENT.raw_json, path, body)
                    self.refused(send, 400, "The body is not UTF-8 text")
        for path, body in (
            ("/transfer/", b"source=%FF&destination=bob&amount=1"),
            ("/transfer/", b"source=alice&destination=b\xe9b&amount=1"),
            ("/batch/", b"legs=alice+b%E9b+1"),
        ):
            with self.subTest(path=path, form=body):
                send = functools.partial(CLIENT.raw_form, path, with_token(body))
                self.refused(send, 400, "The form is not UTF-8 text")

    def test_a_byte_order_mark_is_allowed(self) -> None:
        body = b"\xef\xbb\xbf" + json.dumps({"count": 0}).encode()
        send = functools.partial(CLIENT.raw_json, "/api/burst/", body)
        self.refused(send, 400, "count must be a whole number")

    def test_not_json(self) -> None:
        for body in (b"{", b"{'count': 1}", b'{"count": 1,}', b"count=1", b"{} x"):
            for path in API_POSTS:
                with self.subTest(path=path, body=body):
                    send = functools.partial(CLIENT.raw_json, path, body)
                    self.refused(send, 400, "The body is not valid JSON: ", "(line 1")

    def test_nested_too_deeply(self) -> None:
        for body in (
            b"[" * 100_000 + b"]" * 100_000,
            b'{"a": ' * 50_000 + b"1" + b"}" * 50_000,
        ):
            for path in API_POSTS:
                with self.subTest(path=path, body=body[:6]):
                    send = functools.partial(CLIENT.raw_json, path, body)
                    self.refused(send, 400, "The JSON is nested too deeply")

    def test_a_key_or_a_field_sent_twice(self) -> None:
        for path, body, phrase in (
            ("/api/transfers/", b'{"amount": "1", "amount": "9"}', "'amount' twice"),
            ("/api/batches/", b'{"legs": [{"source": 1, "source": 2}]}', "'source'"),
        ):
            with self.subTest(path=path):
                send = functools.partial(CLIENT.raw_json, path, body)
                self.refused(send, 400, f"The JSON has {phrase}")
        for path, body, name in (
            ("/transfer/", b"source=alice&destination=bob&amount=1&amount=9", "amount"),
            ("/batch/", b"legs=alice+bob+1&legs=alice+bob+9", "legs"),
        ):
            with self.subTest(path=path):
                send = functools.partial(CLIENT.raw_form, path, body)
                self.refused(send, 400, f"'{name}' was sent 2 times: send it once.")
        for path in ("/parallel/?delay=0&delay=1", "/api/parallel/?delay=0&delay=0"):
            with self.subTest(path=path):
                send = functools.partial(CLIENT.get, path)
                self.refused(send, 400, "delay was sent 2 times")

    def test_the_api_takes_json_only(self) -> None:
        for content_type in (
            *("text/plain", "application/x-www-form-urlencoded", "application/jsonx"),
            *("multipart/form-data; boundary=x", ""),
        ):
            for path in API_POSTS:
                with self.subTest(path=path, content_type=content_type):
                    send = functools.partial(CLIENT.raw_json, path, b"{}", content_type)
                    answer = self.refused(send, 415, "Content-Type: application/json")
                    code = answer.json()["error"]["code"]
                    self.assertEqual(code, "unsupported_media_type")

    def test_the_forms_take_urlencoded_only(self) -> None:
        body = (
            b'--x\r\nContent-Disposition: form-data; name="legs"\r\n\r\n'
            b"alice bob 1\r\n--x--\r\n"
        )
        for content_type in (
            *("application/json", "text/plain", "multipart/form-data; boundary=x"),
        ):
            for path in ("/transfer/", "/batch/"):
                with self.subTest(path=path, content_type=content_type):
                    send = functools.partial(CLIENT.raw_form, path, body, content_type)
                    self.refused(
                        send, 415, "Content-Type: application/x-www-form-urlencoded"
                    )

    def test_a_garbled_multipart_form(self) -> None:
        for path in ("/transfer/", "/batch/"):
            with self.subTest(path=path):
                send = functools.partial(
                    CLIENT.raw_form, path, b"garbage", "multipart/form-data"
                )
                self.refused(send, 400, "The multipart body could not be read")

    def test_a_foreign_host(self) -> None:
        for path in ("/", "/api/totals/", "/transfer/"):
            with self.subTest(path=path):
                send = functools.partial(CLIENT.get, path, {"Host": "evil.example"})
                self.refused(send, 400, "answers for 127.0.0.1 and localhost only")


class BatchOutcomeTests(HostileInputCase):
    """A batch none of whose transfers went through is not 'committed'."""

    def test_nothing_went_through(self) -> None:
        answer = self.refused(
            functools.partial(CLIENT.form, "/batch/", {"legs": "alice mallory 1"}),
            404,
            "The batch's only transfer was refused, so nothing was committed.",
            "There is no account named 'mallory'.",
        )
        self.assertEqual(answer.title_and_message()[0], "Nothing went through")
        self.assertNotIn(b"Batch committed", answer.body)
        body = {"legs": [with_field("destination", "mallory")]}
        answer = self.refused(
            functools.partial(CLIENT.json, "/api/batches/", body),
            404,
            "nothing was committed",
            "There is no account named 'mallory'.",
        )
        self.assertEqual(answer.json()["error"]["code"], "nothing_committed")
        self.assertEqual([leg["committed"] for leg in answer.json()["legs"]], [False])

    def test_refused_for_different_reasons(self) -> None:
        legs = "alice mallory 1\nalice bob 9999999"
        answer = self.refused(
            functools.partial(CLIENT.form, "/batch/", {"legs": legs}),
            409,
            "All 2 transfers were refused, so nothing was committed.",
            "No such account",
            "Insufficient funds",
        )
        self.assertEqual(answer.title_and_message()[0], "Nothing went through")

    def test_long_names_in_the_rows_are_cut(self) -> None:
        name = "y" * LONG
        fields = {"legs": f"alice {name} 1\n{name} bob 1"}
        answer = self.refused(
            functools.partial(CLIENT.form, "/batch/", fields),
            404,
            "All 2 transfers were refused",
        )
        self.assertLess(len(answer.body), 2 * MAX_ECHO_PAGE)


class QueryParameterTests(HostileInputCase):
    """The parallel pages' delay: a number of seconds from 0 to 2."""

    def test_bad_delays(self) -> None:
        for value in (
            "nan",
            "inf",
            "-1",
            "2.5",
            "1e0",
            "\u0661",
            "1_0",
            "",
            "0x1",
            "%FF",
        ):
            for path in ("/parallel/", "/api/parallel/"):
                with self.subTest(path=path, delay=value):
                    send = functools.partial(
                        CLIENT.get, f"{path}?delay={quote(value, safe='%')}"
                    )
                    self.refused(send, 400, "delay must be a number of seconds from 0")


class WellFormedInputTests(HostileInputCase):
    """The strict readers still take what a person or a script would send."""

    def test_transfers_go_through(self) -> None:
        before = DEMO.books()
        form = {"source": "grace", "destination": "heidi", "amount": " 10.00 "}
        answers = [
            CLIENT.form("/transfer/", form),
            CLIENT.json("/api/transfers/", {**form, "amount": 10} | BACK),
            CLIENT.json("/api/transfers/", {**form, "amount": 12.1}),
            CLIENT.raw_json(
                "/api/transfers/",
                json.dumps({**form, "amount": "12.10"} | BACK).encode(),
                "application/json; charset=utf-8",
            ),
        ]
        statuses = [answer.status for answer in answers]
        self.assertEqual(statuses, [303, 201, 201, 201], answers[0].summary())
        amounts = [answer.json()["transfer"]["amount"] for answer in answers[1:]]
        self.assertEqual(amounts, [1000, 1210, 1210])
        balances, transfers = DEMO.books()
        self.assertEqual((balances, transfers), (before[0], before[1] + 4))
        # Grouped thousands are read (and refused for want of funds).
        self.refused(
            functools.partial(
                CLIENT.form, "/transfer/", form | {"amount": "1,000,000"}
            ),
            409,
            "not enough to send 1,000,000.00",
        )

    def test_batches_go_through(self) -> None:
        fields = {
            "legs": "\n grace heidi 1 \r\n\nheidi grace 1\n",
            "all_or_nothing": "on",
        }
        answer = CLIENT.form("/batch/", fields)
        self.assertEqual(answer.status, 200, answer.summary())
        self.assertIn(b"Batch committed: 2 of 2 transfers", answer.body)
        legs = [with_field("amount", 2), {**OK_LEG, "amount": "2"} | BACK_AB]
        body = {"legs": legs, "all_or_nothing": False}
        answer = CLIENT.json("/api/batches/", body)
        self.assertEqual(answer.status, 200, answer.summary())
        self.assertEqual(
            [leg["committed"] for leg in answer.json()["legs"]], [True] * 2
        )

    def test_reads_and_a_burst(self) -> None:
        for path in (
            *("/", "/live/", "/api/totals/", "/api/accounts/"),
            *("/parallel/?delay=0", "/api/parallel/?delay=.0"),
        ):
            with self.subTest(path=path):
                self.assertEqual(CLIENT.get(path).status, 200)
        answer = CLIENT.json("/api/burst/", {"count": 2.0})  # a whole number
        self.assertEqual(answer.status, 200, answer.summary())
        self.assertEqual(answer.json()["committed"] + answer.json()["refused"], 2)


class LiveStreamTests(HostileInputCase):
    """The live page's stream of server-sent events (``/api/events/``)."""

    def test_the_stream_takes_get_only(self) -> None:
        for method in ("POST", "PUT", "DELETE"):
            with self.subTest(method=method):
                send = functools.partial(CLIENT.request, method, "/api/events/")
                answer = self.refused(send, 405, "Use GET.")
                self.assertEqual(answer.headers["allow"], "GET")

    def test_the_stream_opens_with_the_totals_whatever_the_query(self) -> None:
        connection = http.client.HTTPConnection(HOST, DEMO.port, timeout=120)
        try:
            connection.request("GET", "/api/events/?x=%00&y=" + "z" * 10_000)
            response = connection.getresponse()
            self.assertEqual(response.status, 200)
            self.assertEqual(response.getheader("Content-Type"), "text/event-stream")
            self.assertEqual(response.getheader("Cache-Control"), "no-cache")
            lines: list[bytes] = []
            while len(lines) < 3 or lines[-1] != b"\n":
                lines.append(response.readline())
        finally:
            connection.close()
        self.assertEqual(lines[:3], [b"retry: 2000\n", b"\n", b"event: totals\n"])
        totals = json.loads(lines[3].removeprefix(b"data: "))
        balances, _ = DEMO.books()
        self.assertEqual(totals["total"], sum(balances))
        self.assertGreaterEqual(totals["listeners"], 1)


BACK = {"source": "heidi", "destination": "grace"}
BACK_AB = {"source": "bob", "destination": "alice"}


if __name__ == "__main__":
    unittest.main()
