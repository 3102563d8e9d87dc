"""The bank's operations: raw SQL on the request's async connection.

``transfer()`` is one ``async_atomic`` block. Called on its own it is the
transaction (BEGIN … COMMIT); called inside ``run_batch()``'s block it is a
savepoint, so a refused leg is rolled back alone and the batch carries on.
Its ``on_commit`` callback announces the transfer only once the outermost
block has committed: a rolled-back leg or batch announces nothing. Its
NOTIFY on ``CHANNEL`` (sent inside the block) follows the same rule, by
PostgreSQL's own: delivered at COMMIT, dropped with a rollback; the live
pages' streams (``events.py``) listen to it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from django.db import IntegrityError

from django_async_backend.db import async_connections
from django_async_backend.db.backends.utils import AsyncCursorWrapper
from django_async_backend.db.notifications import notify
from django_async_backend.db.transaction import async_atomic

ALIAS = "default"
CHANNEL = "bank_transfers"  # each committed transfer is NOTIFYed on it
OVERDRAFT = "balance_not_negative"  # the CHECK constraint of bank_account
MAX_CENTS = 10**12
NAME_MAX = 40  # bank_account.name is varchar(40): no longer name exists
# What PostgreSQL cannot store in a text column (NUL) or psycopg cannot encode
# as UTF-8 (a lone surrogate, which only a JSON "\ud800" escape can produce).
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
SURROGATE = re.compile(r"[\ud800-\udfff]")

logger = logging.getLogger("example.bank")


class BankError(Exception):
    """A refused operation, shown to the user (page or JSON), never a 500."""

    status = 400
    code = "invalid"
    title = "That did not work"


class InvalidRequest(BankError):
    title = "Invalid request"


class UnknownAccount(BankError):
    status = 404
    code = "unknown_account"
    title = "No such account"


class InsufficientFunds(BankError):
    status = 409
    code = "insufficient_funds"
    title = "Insufficient funds"


class RolledBack(BankError):
    """A leg that had succeeded, undone with its all-or-nothing batch."""

    status = 409
    code = "rolled_back"
    title = "Rolled back with the batch"


class BatchRefused(BankError):
    """An all-or-nothing batch whose leg failed: nothing was committed."""

    status = 409
    code = "batch_rolled_back"
    title = "Batch rolled back"

    def __init__(self, message: str, results: list[LegResult]) -> None:
        super().__init__(message)
        self.results = results


@dataclass(frozen=True)
class Account:
    id: int
    name: str
    balance: int


@dataclass(frozen=True)
class TransferRecord:
    id: int
    source: str
    destination: str
    amount: int
    created_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source,
            "destination": self.destination,
            "amount": self.amount,
            "amount_display": money(self.amount),
            "created_at": self.created_at.isoformat(),
        }


class Leg(NamedTuple):
    source: str
    destination: str
    amount: int


@dataclass(frozen=True)
class LegResult:
    leg: Leg
    record: TransferRecord | None = None
    error: BankError | None = None

    def as_json(self) -> dict[str, Any]:
        if self.record is not None:
            return {"committed": True, "transfer": self.record.as_json()}
        assert self.error is not None
        return {"committed": False, **error_json(self.error)}


@dataclass
class Feed:
    """What the on_commit callbacks announced, in this server process."""

    committed: int = 0
    recent: deque[TransferRecord] = field(default_factory=lambda: deque(maxlen=12))

    def announce(self, record: TransferRecord) -> None:
        self.committed += 1
        self.recent.appendleft(record)
        logger.debug("transfer #%s committed", record.id)


FEED = Feed()


def money(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    whole, rest = divmod(abs(cents), 100)
    return f"{sign}{whole:,}.{rest:02d}"


def shown(text: str, limit: int = 40) -> str:
    """Quote ``text`` for a message: escaped, and cut after ``limit`` characters.

    The echo stays short whatever was sent (a name of a megabyte), and control
    characters show as escapes instead of reaching the page raw.
    """
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text):,} characters)"


def could_exist(name: str) -> bool:
    """Whether ``name`` could be an account's: short enough and storable."""
    return (
        len(name) <= NAME_MAX
        and CONTROL.search(name) is None
        and SURROGATE.search(name) is None
    )


def error_json(error: BankError) -> dict[str, Any]:
    return {"error": {"code": error.code, "title": error.title, "message": str(error)}}


def cursor() -> AsyncCursorWrapper:
    """A cursor on this task's connection (its own, or the block's)."""
    return async_connections[ALIAS].cursor()


async def lock_accounts(names: Iterable[str]) -> dict[str, Account]:
    """Lock the named accounts (FOR UPDATE) in id order; return those found.

    Every transaction takes its locks in the same (id) order, so concurrent
    transfers queue up behind each other and never deadlock.
    """
    # A name no account can have is not sent: it is simply not found (a
    # megabyte-long name stays out of the query, a NUL out of PostgreSQL).
    wanted = sorted({name for name in names if could_exist(name)})
    async with cursor() as cur:
        await cur.execute(
            "SELECT id, name, balance FROM bank_account"
            " WHERE name = ANY(%s) ORDER BY id FOR UPDATE",
            [wanted],
        )
        rows = await cur.fetchall()
    return {name: Account(pk, name, balance) for pk, name, balance in rows}


async def transfer(
    source: str,
    destination: str,
    amount: int,
    *,
    receipts: list[TransferRecord] | None = None,
) -> TransferRecord:
    """Move ``amount`` cents; announce it (on_commit) once it is committed."""
    if source == destination:
        raise InvalidRequest("Pick two different accounts.")
    if not 0 < amount <= MAX_CENTS:
        raise InvalidRequest("The amount must be positive.")
    connection = async_connections[ALIAS]
    try:
        async with async_atomic():
            accounts = await lock_accounts([source, destination])
            for name in (source, destination):
                if name not in accounts:
                    raise UnknownAccount(f"There is no account named {shown(name)}.")
            async with cursor() as cur:
                # No balance check here: the CHECK constraint refuses an
                # overdraft, and this block (a savepoint in a batch) rolls
                # back the failed statement without dooming the transaction.
                await cur.execute(
                    "UPDATE bank_account SET balance = balance - %s WHERE id = %s",
                    [amount, accounts[source].id],
                )
                await cur.execute(
                    "UPDATE bank_account SET balance = balance + %s WHERE id = %s",
                    [amount, accounts[destination].id],
                )
                await cur.execute(
                    "INSERT INTO bank_transfer (source_id, destination_id, amount)"
                    " VALUES (%s, %s, %s) RETURNING id, created_at",
                    [accounts[source].id, accounts[destination].id, amount],
                )
                pk, created_at = await cur.fetchone()
            record = TransferRecord(pk, source, destination, amount, created_at)
            # In the transaction: the live pages hear of it at COMMIT, and
            # never of a leg or batch that rolls back.
            payload = {**record.as_json(), "sent": time.time()}
            await notify(CHANNEL, json.dumps(payload), using=ALIAS)

            async def announce() -> None:
                FEED.announce(record)
                if receipts is not None:
                    receipts.append(record)

            await connection.on_commit(announce)
    except IntegrityError as exc:
        diag = getattr(exc.__cause__, "diag", None)
        if getattr(diag, "constraint_name", None) != OVERDRAFT:
            raise
        balance = money(accounts[source].balance)
        raise InsufficientFunds(
            f"{source} has {balance}, not enough to send {money(amount)}."
        ) from None
    return record


async def run_batch(
    legs: Sequence[Leg], *, all_or_nothing: bool
) -> tuple[list[LegResult], list[TransferRecord]]:
    """Run the legs in one transaction, each in a savepoint.

    A refused leg is rolled back to its savepoint and the others commit
    together, unless ``all_or_nothing``: then the first refusal rolls back
    everything and raises ``BatchRefused``. Returns the results and the
    transfers that the on_commit callbacks announced after COMMIT.
    """
    results: list[LegResult] = []
    receipts: list[TransferRecord] = []
    try:
        async with async_atomic():
            # Lock every account of the batch up front, in id order: the
            # legs then reuse those locks, and batches cannot deadlock.
            await lock_accounts([name for leg in legs for name in leg[:2]])
            for number, leg in enumerate(legs, 1):
                try:
                    record = await transfer(*leg, receipts=receipts)
                except BankError as exc:
                    results.append(LegResult(leg, error=exc))
                    if all_or_nothing:
                        raise BatchRefused(
                            f"Transfer {number} was refused: {exc} So the whole"
                            " batch was rolled back, and nothing was announced.",
                            results,
                        ) from None
                else:
                    results.append(LegResult(leg, record=record))
    except BatchRefused as exc:
        # The leg that failed is the last result; the ones before it were
        # rolled back with the batch.
        undone = RolledBack("it went through, then the batch was undone.")
        exc.results = [LegResult(r.leg, error=r.error or undone) for r in results]
        raise
    return results, receipts


@dataclass(frozen=True)
class Snapshot:
    accounts: list[Account]
    transfers: int

    @property
    def total(self) -> int:
        return sum(account.balance for account in self.accounts)


async def snapshot() -> Snapshot:
    """Every balance and the transfer count, read by ONE statement.

    A single statement sees a single snapshot, so the balances add up to the
    same total whatever transfers are committing meanwhile.
    """
    async with cursor() as cur:
        await cur.execute(
            "SELECT a.id, a.name, a.balance, t.n FROM bank_account a"
            " CROSS JOIN (SELECT count(*) AS n FROM bank_transfer) t"
            " ORDER BY a.name"
        )
        rows = await cur.fetchall()
    count = int(rows[0][3]) if rows else 0
    return Snapshot([Account(pk, name, bal) for pk, name, bal, _ in rows], count)


async def recent_transfers(limit: int = 10) -> list[TransferRecord]:
    async with cursor() as cur:
        await cur.execute(
            "SELECT t.id, s.name, d.name, t.amount, t.created_at"
            " FROM bank_transfer t"
            " JOIN bank_account s ON s.id = t.source_id"
            " JOIN bank_account d ON d.id = t.destination_id"
            " ORDER BY t.id DESC LIMIT %s",
            [limit],
        )
        rows = await cur.fetchall()
    return [TransferRecord(*row) for row in rows]


async def get_transfer(pk: int) -> TransferRecord | None:
    async with cursor() as cur:
        await cur.execute(
            "SELECT t.id, s.name, d.name, t.amount, t.created_at"
            " FROM bank_transfer t"
            " JOIN bank_account s ON s.id = t.source_id"
            " JOIN bank_account d ON d.id = t.destination_id"
            " WHERE t.id = %s",
            [pk],
        )
        row = await cur.fetchone()
    return None if row is None else TransferRecord(*row)


# Reports for the parallel page: each runs on an independent connection.
REPORTS: dict[str, str] = {
    "total balance": "SELECT sum(balance) FROM bank_account",
    "accounts": "SELECT count(*) FROM bank_account",
    "transfers committed": "SELECT count(*) FROM bank_transfer",
    "volume moved": "SELECT coalesce(sum(amount), 0) FROM bank_transfer",
    "largest transfer": "SELECT coalesce(max(amount), 0) FROM bank_transfer",
    "richest account": (
        "SELECT name FROM bank_account ORDER BY balance DESC, name LIMIT 1"
    ),
}
MONEY_REPORTS = {"total balance", "volume moved", "largest transfer"}


@dataclass(frozen=True)
class Report:
    label: str
    value: str
    backend_pid: int
    seconds: float


async def run_report(label: str, delay: float) -> Report:
    """One report on a fresh connection, padded with pg_sleep(delay)."""
    started = time.perf_counter()
    async with async_connections.independent_connection():
        async with cursor() as cur:
            await cur.execute(
                f"SELECT pg_backend_pid(), ({REPORTS[label]}) FROM pg_sleep(%s)",
                [delay],
            )
            pid, value = await cur.fetchone()
    shown = money(int(value)) if label in MONEY_REPORTS else str(value)
    return Report(label, shown, int(pid), time.perf_counter() - started)


async def run_reports(delay: float) -> tuple[list[Report], float]:
    """All reports at once (asyncio.gather); returns them and the wall time."""
    started = time.perf_counter()
    reports = await asyncio.gather(*(run_report(label, delay) for label in REPORTS))
    return list(reports), time.perf_counter() - started


async def burst(count: int, seed: int | None = None) -> dict[str, Any]:
    """``count`` random transfers at once, each in a task of its own.

    Every task gets its own connection (from the pool) and its own
    transaction; the request's connection is not shared with them.
    """
    rng = random.Random(seed)
    names = [account.name for account in (await snapshot()).accounts]
    if len(names) < 2:
        raise InvalidRequest("The bank needs at least two accounts.")

    async def one() -> bool:
        source, destination = rng.sample(names, 2)
        try:
            await transfer(source, destination, rng.randint(1, 400_00))
        except InsufficientFunds:
            return False
        return True

    started = time.perf_counter()
    outcomes = await asyncio.gather(*(one() for _ in range(count)))
    committed = sum(outcomes)
    return {
        "committed": committed,
        "refused": count - committed,
        "seconds": round(time.perf_counter() - started, 3),
    }
