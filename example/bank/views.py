"""Async views: pages for people, JSON under /api/ for scripts and the live page.

Every input is read by ``inputs``, strictly, and every database access goes
through ``services`` (raw SQL on ``async_connections``). Malformed input or a
refused operation (``BankError``) becomes a friendly page or JSON error with
a 4xx status; anything unexpected becomes the 500 page (DEBUG is off), never
a traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any

from django.conf import settings
from django.core.exceptions import (
    DisallowedHost,
    RequestDataTooBig,
    TooManyFieldsSent,
)
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.http.multipartparser import MultiPartParserError
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt, csrf_protect

from . import events, inputs, services
from .inputs import FORM, MISSING
from .services import BankError, LegResult, money, shown

View = Callable[..., Coroutine[Any, Any, HttpResponseBase]]

EXAMPLE_BATCH = "alice bob 25\nbob carol 5000\ncarol alice 10.50"
BIGINT_MAX = 2**63 - 1  # bank_transfer.id is a bigint: no larger one exists
MAX_DELAY = 2


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


def delay_param(request: HttpRequest) -> float:
    """Read ?delay= of the parallel pages (0.25 s unless given)."""
    delay = inputs.one(request.GET.getlist("delay"), "delay")
    return inputs.seconds(delay, "delay", "0.25", MAX_DELAY)


def refused_status(results: list[LegResult]) -> int:
    """The status of a batch none of whose legs committed.

    Their own status if they all agree (404 if every leg named an unknown
    account), else 409.
    """
    statuses = {r.error.status for r in results if r.error is not None}
    return statuses.pop() if len(statuses) == 1 else 409


def nothing_committed(results: list[LegResult]) -> str:
    """Say that none of a batch's legs went through."""
    if len(results) == 1:
        return "The batch's only transfer was refused, so nothing was committed."
    return f"All {len(results)} transfers were refused, so nothing was committed."


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
    record = await services.transfer(*inputs.leg(inputs.form_fields(request)))
    return HttpResponseRedirect(f"/transfers/{record.id}/", status=303)


@bank_errors("GET")
async def transfer_detail(request: HttpRequest, pk: int) -> HttpResponse:
    record = await services.get_transfer(pk) if pk <= BIGINT_MAX else None
    if record is None:
        number = str(pk) if pk <= BIGINT_MAX else f"{str(pk)[:19]}…"
        return error_response(
            request, 404, "No such transfer", f"There is no transfer #{number}."
        )
    announced = any(r.id == record.id for r in services.FEED.recent)
    context = {"record": record, "amount": money(record.amount), "announced": announced}
    return render(request, "bank/transfer.html", context)


@csrf_protect
@bank_errors("POST")
async def batch_form(request: HttpRequest) -> HttpResponse:
    fields = inputs.form_fields(request)
    legs = inputs.text_legs(inputs.field(fields, "legs"))
    all_or_nothing = inputs.checkbox(
        inputs.field(fields, "all_or_nothing"), "all_or_nothing"
    )
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
    committed = sum(1 for r in results if r.record)
    if failure:
        title, status = "Batch rolled back", 409
    elif not committed:
        title, status = "Nothing went through", refused_status(results)
        failure = nothing_committed(results)
    else:
        title, status = "", 200
    context = {
        "rows": rows,
        "receipts": receipts,
        "failure": failure,
        "failure_title": title,
        "all_or_nothing": all_or_nothing,
        "committed": committed,
    }
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
    """One consistent snapshot, the feed and the open live pages."""
    return JsonResponse(await events.totals_json())


@bank_errors("GET")
async def api_events(request: HttpRequest) -> StreamingHttpResponse:
    """The live page's stream of server-sent events (events.py)."""
    response = StreamingHttpResponse(events.stream(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # (a proxy in front must not buffer it)
    return response


@bank_errors("GET")
async def api_accounts(request: HttpRequest) -> JsonResponse:
    snap = await services.snapshot()
    accounts = [{"name": a.name, "balance": a.balance} for a in snap.accounts]
    return JsonResponse({"accounts": accounts})


@csrf_exempt
@bank_errors("POST")
async def api_transfer(request: HttpRequest) -> JsonResponse:
    record = await services.transfer(*inputs.leg(inputs.json_body(request)))
    return JsonResponse({"transfer": record.as_json()}, status=201)


@csrf_exempt
@bank_errors("POST")
async def api_batch(request: HttpRequest) -> JsonResponse:
    data = inputs.json_body(request)
    legs = inputs.json_legs(data.get("legs", MISSING))
    all_or_nothing = inputs.flag(data.get("all_or_nothing", MISSING), "all_or_nothing")
    try:
        results, receipts = await services.run_batch(
            legs, all_or_nothing=all_or_nothing
        )
    except services.BatchRefused as exc:
        body = services.error_json(exc)
        body["legs"] = [r.as_json() for r in exc.results]
        return JsonResponse(body, status=exc.status)
    legs_json = [r.as_json() for r in results]
    if not any(r.record for r in results):
        error = {
            "code": "nothing_committed",
            "title": "Nothing went through",
            "message": nothing_committed(results),
        }
        body = {"error": error, "legs": legs_json}
        return JsonResponse(body, status=refused_status(results))
    return JsonResponse({"legs": legs_json, "announced": [r.id for r in receipts]})


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
    data = inputs.json_body(request)
    count = inputs.whole_number(data.get("count", 100), "count", 1, 500)
    return JsonResponse(await services.burst(count))


# --- error handlers (DEBUG is off: these replace Django's plain pages) --------


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    where = shown(request.path, 80)
    return error_response(
        request, 404, "Page not found", f"Nothing lives at {where}.", "not_found"
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
    status, code, message = refusal(exception)
    title = "Too large" if status == 413 else "Bad request"
    return error_response(request, status, title, message, code)


def refusal(exception: Exception) -> tuple[int, str, str]:
    """Status, code and message for what Django refused before any view ran."""
    if isinstance(exception, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return 413, "too_large", f"The body is larger than {limit:,} bytes: send less."
    if isinstance(exception, TooManyFieldsSent):
        limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
        message = f"The form has more than {limit:,} fields: send the form's own."
        return 400, "too_many_fields", message
    if isinstance(exception, MultiPartParserError):
        message = f"The multipart body could not be read: send the form as {FORM}."
        return 400, "bad_multipart", message
    if isinstance(exception, DisallowedHost):
        message = (
            "This server answers for 127.0.0.1 and localhost only: open the URL"
            " that the demo printed."
        )
        return 400, "bad_host", message
    return 400, "bad_request", "The server could not understand that request."


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
