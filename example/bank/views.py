"""Async views: pages for people, JSON under /api/ for scripts and the live page.

Every database access goes through ``services`` (raw SQL on
``async_connections``). A refused operation (``BankError``) becomes a
friendly page or JSON error with a 4xx status; anything unexpected becomes
the 500 page (DEBUG is off), never a traceback.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Coroutine
from typing import Any

from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseRedirect,
    JsonResponse,
)
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt, csrf_protect

from . import services
from .services import BankError, InvalidRequest, Leg, money

View = Callable[..., Coroutine[Any, Any, HttpResponseBase]]

EXAMPLE_BATCH = "alice bob 25\nbob carol 5000\ncarol alice 10.50"


def is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def error_response(
    request: HttpRequest, status: int, title: str, message: str, code: str = "error"
) -> HttpResponse:
    """The one error rendering: JSON under /api/, else a page."""
    if is_api(request):
        body = {"error": {"code": code, "title": title, "message": message}}
        return JsonResponse(body, status=status)
    context = {"status": status, "title": title, "message": message}
    return render(request, "bank/error.html", context, status=status)


def bank_errors(*methods: str) -> Callable[[View], View]:
    """Allow only ``methods``; turn a BankError into a friendly error."""

    def decorate(view: View) -> View:
        @functools.wraps(view)
        async def wrapper(
            request: HttpRequest, *args: Any, **kwargs: Any
        ) -> HttpResponseBase:
            if request.method not in methods:
                allowed = ", ".join(methods)
                response = error_response(
                    request, 405, "Method not allowed", f"Use {allowed}.", "method"
                )
                response["Allow"] = allowed
                return response
            try:
                return await view(request, *args, **kwargs)
            except BankError as exc:
                return error_response(
                    request, exc.status, exc.title, str(exc), exc.code
                )

        return wrapper

    return decorate


def json_body(request: HttpRequest) -> dict[str, Any]:
    """The request's JSON object; the API accepts application/json only.

    Browsers cannot send that content type cross-site without CORS, which is
    why the JSON endpoints can do without a CSRF token.
    """
    if request.content_type != "application/json":
        raise InvalidRequest("Send a JSON body (Content-Type: application/json).")
    try:
        data = json.loads(request.body or b"{}")
    except ValueError:
        raise InvalidRequest("The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise InvalidRequest("Send a JSON object.")
    return data


def parse_legs(text: str) -> list[Leg]:
    """Lines of 'source destination amount'."""
    legs = []
    for number, line in enumerate(text.strip().splitlines(), 1):
        words = line.split()
        if not words:
            continue
        if len(words) != 3:
            raise InvalidRequest(f"Line {number}: write 'from to amount'.")
        legs.append(Leg(words[0], words[1], services.parse_amount(words[2])))
    return check_legs(legs)


def check_legs(legs: list[Leg]) -> list[Leg]:
    if not 1 <= len(legs) <= 20:
        raise InvalidRequest("A batch has 1 to 20 transfers.")
    return legs


def delay_param(request: HttpRequest) -> float:
    try:
        delay = float(request.GET.get("delay", "0.25"))
    except ValueError:
        raise InvalidRequest("delay must be a number of seconds.") from None
    if not 0 <= delay <= 2:
        raise InvalidRequest("delay must be between 0 and 2 seconds.")
    return delay


# --- pages -----------------------------------------------------------------


@csrf_protect
@bank_errors("GET")
async def home(request: HttpRequest) -> HttpResponse:
    snap = await services.snapshot()
    recent = await services.recent_transfers()
    context = {
        "snapshot": snap,
        "total": money(snap.total),
        "accounts": [(a.name, money(a.balance)) for a in snap.accounts],
        "recent": [(t, money(t.amount)) for t in recent],
        "example_batch": EXAMPLE_BATCH,
    }
    return render(request, "bank/home.html", context)


@csrf_protect
@bank_errors("POST")
async def transfer_form(request: HttpRequest) -> HttpResponseBase:
    amount = services.parse_amount(request.POST.get("amount", ""))
    record = await services.transfer(
        request.POST.get("source", ""), request.POST.get("destination", ""), amount
    )
    return HttpResponseRedirect(f"/transfers/{record.id}/", status=303)


@bank_errors("GET")
async def transfer_detail(request: HttpRequest, pk: int) -> HttpResponse:
    record = await services.get_transfer(pk)
    if record is None:
        return error_response(
            request, 404, "No such transfer", f"There is no transfer #{pk}."
        )
    announced = any(r.id == record.id for r in services.FEED.recent)
    context = {"record": record, "amount": money(record.amount), "announced": announced}
    return render(request, "bank/transfer.html", context)


@csrf_protect
@bank_errors("POST")
async def batch_form(request: HttpRequest) -> HttpResponse:
    legs = parse_legs(request.POST.get("legs", ""))
    all_or_nothing = request.POST.get("all_or_nothing") == "on"
    try:
        results, receipts = await services.run_batch(
            legs, all_or_nothing=all_or_nothing
        )
        failure = ""
    except services.BatchRefused as exc:
        results, receipts, failure = exc.results, [], str(exc)
    rows = [
        (
            r.leg,
            money(r.leg.amount),
            r.record,
            r.error and f"{r.error.title}: {r.error}",
        )
        for r in results
    ]
    context = {
        "rows": rows,
        "receipts": receipts,
        "failure": failure,
        "all_or_nothing": all_or_nothing,
        "committed": sum(1 for r in results if r.record),
    }
    status = 409 if failure else 200
    return render(request, "bank/batch.html", context, status=status)


@bank_errors("GET")
async def parallel(request: HttpRequest) -> HttpResponse:
    delay = delay_param(request)
    reports, wall = await services.run_reports(delay)
    total = sum(r.seconds for r in reports)
    context = {
        "delay": delay,
        "reports": reports,
        "wall": wall,
        "sum": total,
        "speedup": total / wall if wall else 0,
        "pids": len({r.backend_pid for r in reports}),
    }
    return render(request, "bank/parallel.html", context)


@bank_errors("GET")
async def live(request: HttpRequest) -> HttpResponse:
    return render(request, "bank/live.html")


# --- JSON API ----------------------------------------------------------------


@bank_errors("GET")
async def api_totals(request: HttpRequest) -> JsonResponse:
    """What the live page polls: one consistent snapshot, plus the feed."""
    snap = await services.snapshot()
    return JsonResponse(
        {
            "total": snap.total,
            "total_display": money(snap.total),
            "transfers": snap.transfers,
            "announced": services.FEED.committed,
            "accounts": [
                {"name": a.name, "balance": a.balance, "display": money(a.balance)}
                for a in snap.accounts
            ],
            "recent": [r.as_json() for r in services.FEED.recent],
        }
    )


@bank_errors("GET")
async def api_accounts(request: HttpRequest) -> JsonResponse:
    snap = await services.snapshot()
    accounts = [{"name": a.name, "balance": a.balance} for a in snap.accounts]
    return JsonResponse({"accounts": accounts})


@csrf_exempt
@bank_errors("POST")
async def api_transfer(request: HttpRequest) -> JsonResponse:
    data = json_body(request)
    amount = services.parse_amount(data.get("amount", ""))
    record = await services.transfer(
        str(data.get("source", "")), str(data.get("destination", "")), amount
    )
    return JsonResponse({"transfer": record.as_json()}, status=201)


@csrf_exempt
@bank_errors("POST")
async def api_batch(request: HttpRequest) -> JsonResponse:
    data = json_body(request)
    raw = data.get("legs")
    if not isinstance(raw, list) or not all(isinstance(x, dict) for x in raw):
        raise InvalidRequest("legs: a list of {source, destination, amount}.")
    legs = check_legs(
        [
            Leg(
                str(x.get("source", "")),
                str(x.get("destination", "")),
                services.parse_amount(x.get("amount", "")),
            )
            for x in raw
        ]
    )
    all_or_nothing = bool(data.get("all_or_nothing", False))
    try:
        results, receipts = await services.run_batch(
            legs, all_or_nothing=all_or_nothing
        )
    except services.BatchRefused as exc:
        body = services.error_json(exc)
        body["legs"] = [r.as_json() for r in exc.results]
        return JsonResponse(body, status=exc.status)
    return JsonResponse(
        {
            "legs": [r.as_json() for r in results],
            "announced": [r.id for r in receipts],
        }
    )


@bank_errors("GET")
async def api_parallel(request: HttpRequest) -> JsonResponse:
    reports, wall = await services.run_reports(delay_param(request))
    return JsonResponse(
        {
            "wall_seconds": wall,
            "sum_seconds": sum(r.seconds for r in reports),
            "reports": [r.__dict__ for r in reports],
        }
    )


@csrf_exempt
@bank_errors("POST")
async def api_burst(request: HttpRequest) -> JsonResponse:
    data = json_body(request)
    count = data.get("count", 100)
    if not isinstance(count, int) or not 1 <= count <= 500:
        raise InvalidRequest("count: 1 to 500 transfers.")
    return JsonResponse(await services.burst(count))


# --- error handlers (DEBUG is off: these replace Django's plain pages) --------


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    return error_response(
        request, 404, "Page not found", f"Nothing lives at {request.path}.", "not_found"
    )


def server_error(request: HttpRequest) -> HttpResponse:
    return error_response(
        request,
        500,
        "Something went wrong",
        "The error was logged on the server. Nothing was half-done: a failed"
        " transfer is rolled back as a whole.",
        "server_error",
    )


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    return error_response(
        request, 400, "Bad request", "The server could not understand that request."
    )


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    return error_response(request, 403, "Forbidden", "You may not do that.")


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    return error_response(
        request,
        403,
        "Form expired",
        "The form's security token was missing or wrong; reload the page and"
        " try again.",
        "csrf",
    )
