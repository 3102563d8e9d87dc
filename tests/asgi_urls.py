"""URLconf for test_asgi: async views that use ``async_connections``."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import path

from django_async_backend.db import async_connections


async def backend_pid_view(request: HttpRequest) -> JsonResponse:
    """Run a query on the request's own connection; report its server pid."""
    async with async_connections["default"].cursor() as cursor:
        await cursor.execute(
            "SELECT pg_backend_pid(), current_setting('application_name')"
        )
        row = await cursor.fetchone()
    pid, application_name = row
    return JsonResponse({"pid": pid, "application_name": application_name})


urlpatterns = [
    path("pid/", backend_pid_view),
]
