"""What clients send, read strictly: form fields, JSON bodies, names, amounts.

Each reader returns a clean value or raises a ``BankError`` whose message
names the field, says what is wrong and what to send instead (400, or 415 for
a body of the wrong content type). Nothing malformed reaches the database: a
NUL byte or a lone surrogate would make the query itself fail (a 500).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Final
from urllib.parse import parse_qsl

from django.http import HttpRequest

from .services import (
    CONTROL,
    MAX_CENTS,
    SURROGATE,
    BankError,
    InvalidRequest,
    Leg,
    money,
    shown,
)

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
MAX_LEGS = 20
CENT = Decimal("0.01")
MAX_AMOUNT = Decimal(MAX_CENTS).scaleb(-2)
# Plain decimals only: ASCII digits, commas between groups of three, no
# exponent. Decimal() alone would also take '١٢', '1_0', '1e3' and 'NaN'.
AMOUNT = re.compile(
    r"[+-]?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]*)?|[+-]?\.[0-9]+"
)
SECONDS = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
A_NAME = 'an account name (a string such as "alice")'
AN_AMOUNT = 'a number, or a string such as "12.50"'


class UnsupportedMediaType(BankError):
    status = 415
    code = "unsupported_media_type"
    title = "Unsupported content type"


class Missing:
    """The value of a field that was not sent at all."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = Missing()


def kind(value: object) -> str:
    """Name the JSON type of ``value``: 'null', 'true', 'a list'…"""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float | Decimal):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def wrong(label: str, expected: str, value: object) -> InvalidRequest:
    """Build the error for ``value`` (maybe MISSING) where ``expected`` was due."""
    if value is MISSING:
        return InvalidRequest(f"{label} is missing: send {expected}.")
    return InvalidRequest(f"{label} must be {expected}, not {kind(value)}.")


# --- values ------------------------------------------------------------------


def account_name(value: object, label: str) -> str:
    """Check an account name: text PostgreSQL can store (a long one is unknown)."""
    if not isinstance(value, str):
        raise wrong(label, A_NAME, value)
    if not value:
        raise InvalidRequest(f"{label} is empty: send {A_NAME}.")
    if CONTROL.search(value):
        raise InvalidRequest(
            f"{label} contains a control character (such as NUL):"
            " send the account's name only."
        )
    if SURROGATE.search(value):
        raise InvalidRequest(
            f"{label} contains a lone surrogate (such as \\ud800), which is not"
            " text: send the name as valid Unicode."
        )
    return value


def amount(value: object, label: str) -> int:
    """Read an amount ('12.5', '1,000.00' or a JSON number) in cents."""
    if isinstance(value, str):
        text = value.strip()
        if not AMOUNT.fullmatch(text):
            raise InvalidRequest(
                f"{label} must be a number such as 12.50 or 1,000.00,"
                f" not {shown(value)}."
            )
        number = Decimal(text.replace(",", ""))
    elif isinstance(value, int | Decimal) and not isinstance(value, bool):
        number = Decimal(value)
    else:
        raise wrong(label, AN_AMOUNT, value)
    return cents(number, label)


def cents(number: Decimal, label: str) -> int:
    """Turn a positive amount of at most two decimals into cents."""
    if not number.is_finite() or number <= 0:
        raise InvalidRequest(f"{label} must be more than 0.00.")
    if number > MAX_AMOUNT:
        raise InvalidRequest(
            f"{label} is more than this bank will ever hold"
            f" (at most {money(MAX_CENTS)})."
        )
    if number != number.quantize(CENT):
        raise InvalidRequest(
            f"{label} has more than 2 decimals: send whole cents, such as 12.50."
        )
    return int(number * 100)


def whole_number(value: object, label: str, low: int, high: int) -> int:
    """Read a JSON whole number from ``low`` to ``high`` (never a boolean)."""
    expected = f"a whole number from {low} to {high}"
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise wrong(label, expected, value)
    number = Decimal(value)
    if not (
        number.is_finite()
        and low <= number <= high
        and number == number.to_integral_value()
    ):
        raise InvalidRequest(f"{label} must be {expected}, not {shown(str(value))}.")
    return int(number)


def seconds(value: str | Missing, label: str, default: str, high: int) -> float:
    """Read a number of seconds from 0 to ``high`` (a query parameter)."""
    text = default if isinstance(value, Missing) else value.strip()
    if not SECONDS.fullmatch(text) or Decimal(text) > high:
        raise InvalidRequest(
            f"{label} must be a number of seconds from 0 to {high}, such as"
            f" 0.25, not {shown(text)}."
        )
    return float(text)


def flag(value: object, label: str) -> bool:
    """Read a JSON boolean; left out, it is false."""
    if value is MISSING:
        return False
    if not isinstance(value, bool):
        raise wrong(label, "true or false", value)
    return value


def checkbox(value: str | Missing, label: str) -> bool:
    """Read a form's checkbox: 'on' when ticked, left out when not."""
    if isinstance(value, Missing):
        return False
    if value != "on":
        raise InvalidRequest(
            f"{label} must be on (the box ticked) or left out, not {shown(value)}."
        )
    return True


def one(values: list[str], label: str) -> str | Missing:
    """Return the one value of a query parameter (MISSING if not sent)."""
    if len(values) > 1:
        raise InvalidRequest(f"{label} was sent {len(values)} times: send it once.")
    return values[0] if values else MISSING


# --- transfers and batches ---------------------------------------------------


def leg(fields: Mapping[str, object], where: str = "") -> Leg:
    """Read source, destination and amount, from a form or a JSON object."""
    return Leg(
        account_name(fields.get("source", MISSING), f"{where}source"),
        account_name(fields.get("destination", MISSING), f"{where}destination"),
        amount(fields.get("amount", MISSING), f"{where}amount"),
    )


def batch_size(count: int) -> None:
    """Refuse a batch of no transfers, or of more than MAX_LEGS."""
    if not 1 <= count <= MAX_LEGS:
        raise InvalidRequest(f"A batch has 1 to {MAX_LEGS} transfers, not {count}.")


def text_legs(text: str | Missing) -> list[Leg]:
    """Read the batch form: lines of 'source destination amount'."""
    if isinstance(text, Missing):
        raise wrong("legs", "lines of 'from to amount'", text)
    lines = [
        (number, line.split())
        for number, line in enumerate(text.splitlines(), 1)
        if line.strip()
    ]
    batch_size(len(lines))  # before reading them: a huge batch is refused whole
    return [line_leg(number, words) for number, words in lines]


def line_leg(number: int, words: list[str]) -> Leg:
    """Read one line of the batch form, already split into words."""
    where = f"Line {number}: "
    if len(words) != 3:
        raise InvalidRequest(f"{where}write 'from to amount', such as 'bob carol 5'.")
    source, destination, value = words
    fields = {"source": source, "destination": destination, "amount": value}
    return leg(fields, where)


def json_legs(value: object) -> list[Leg]:
    """Read the batch API's legs: a list of {source, destination, amount}."""
    if not isinstance(value, list):
        raise wrong("legs", "a list of {source, destination, amount} objects", value)
    batch_size(len(value))
    return [json_leg(index, item) for index, item in enumerate(value)]


def json_leg(index: int, value: object) -> Leg:
    """Read one leg of the batch API."""
    where = f"legs[{index}]"
    if not isinstance(value, dict):
        raise wrong(where, "an object {source, destination, amount}", value)
    return leg(value, f"{where}.")


# --- bodies ------------------------------------------------------------------


def utf8(data: bytes, what: str) -> str:
    """Decode ``data`` as UTF-8 (a leading byte-order mark is allowed)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise not_utf8(what, exc) from None


def not_utf8(what: str, exc: UnicodeDecodeError) -> InvalidRequest:
    """Build the error for a body or a field that is not UTF-8."""
    byte = exc.object[exc.start]
    return InvalidRequest(
        f"{what} is not UTF-8 text (it has the byte 0x{byte:02x}):"
        " send it encoded as UTF-8."
    )


def content_type(request: HttpRequest, expected: str, what: str) -> None:
    """Refuse a body of another content type than ``expected`` (415)."""
    if request.content_type != expected:
        sent = shown(request.content_type) if request.content_type else "none"
        raise UnsupportedMediaType(
            f"Send {what} with Content-Type: {expected} (this request's: {sent})."
        )


def form_fields(request: HttpRequest) -> dict[str, str]:
    """Read the POSTed form: strictly UTF-8, each field sent at most once.

    Django's request.POST would turn bytes that are not UTF-8 into U+FFFD
    and keep the last of repeated fields; this reads the same body strictly.
    """
    content_type(request, FORM, "the page's form")
    text = utf8(request.body, "The form")
    try:
        pairs = parse_qsl(text, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError as exc:
        raise not_utf8("The form", exc) from None
    for key, count in Counter(key for key, _ in pairs).items():
        if count > 1:
            raise InvalidRequest(f"{shown(key)} was sent {count} times: send it once.")
    return dict(pairs)


def field(fields: Mapping[str, str], key: str) -> str | Missing:
    """Return a form field's value (MISSING if not sent)."""
    return fields.get(key, MISSING)


def json_body(request: HttpRequest) -> dict[str, Any]:
    """Read the request's JSON object; the API accepts application/json only.

    Browsers cannot send that content type cross-site without CORS, which is
    why the JSON endpoints can do without a CSRF token. Numbers are read as
    exact Decimals: 12.10 stays 12.10, and 5,000 digits are no error.
    """
    content_type(request, JSON, "a JSON body")
    text = utf8(request.body, "The body")
    if not text:
        return {}
    try:
        data = json.loads(
            text,
            parse_int=json_number,
            parse_float=json_number,
            parse_constant=not_a_number,
            object_pairs_hook=unique_keys,
        )
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"The body is not valid JSON: {exc.msg} (line {exc.lineno},"
            f" column {exc.colno})."
        ) from None
    except RecursionError:
        raise InvalidRequest(
            "The JSON is nested too deeply: send one object of fields."
        ) from None
    if not isinstance(data, dict):
        raise wrong("The body", "a JSON object ({...})", data)
    return data


def json_number(text: str) -> Decimal:
    """Read a JSON number exactly (json.loads' parse_int and parse_float)."""
    try:
        return Decimal(text)
    except InvalidOperation:  # an exponent beyond what Decimal can hold
        raise InvalidRequest(
            f"The number {shown(text)} is too large or too small to read."
        ) from None


def not_a_number(name: str) -> object:
    """Refuse NaN and Infinity, which Python's json module would accept."""
    raise InvalidRequest(f"{name} is not JSON: send a number such as 12.50.")


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Build a JSON object; a key sent twice is refused, not silently replaced."""
    data = dict(pairs)
    if len(data) < len(pairs):
        key = next(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)
        raise InvalidRequest(f"The JSON has {shown(key)} twice: send each key once.")
    return data
