"""An async-only middleware: no thread hop on the request path.

It does the part of Django's SecurityMiddleware/CommonMiddleware the demo
needs: refuse a Host outside ALLOWED_HOSTS (400) and set a few headers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from django.http import HttpRequest, HttpResponseBase
from django.utils.decorators import async_only_middleware

GetResponse = Callable[[HttpRequest], Awaitable[HttpResponseBase]]

HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@async_only_middleware
def security(get_response: GetResponse) -> GetResponse:
    async def middleware(request: HttpRequest) -> HttpResponseBase:
        request.get_host()  # DisallowedHost (-> the 400 page) unless allowed
        response = await get_response(request)
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    return middleware
