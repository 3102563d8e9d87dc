"""System checks: the async ENGINE is meant to be served over ASGI."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Tags, Warning, register
from django.db import connections

from django_async_backend.db.utils import is_async_alias


# Not a "database" check: those run only with `check --database`.
@register(Tags.compatibility)
def check_served_over_asgi(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    """Warn when a project using async connections is set up for WSGI only.

    Under WSGI every async view runs in a new event loop (asgiref's
    AsyncToSync wrapper), so async connections and pools cannot be reused between
    requests. The project declares ASGI with the ASGI_APPLICATION setting.
    """
    aliases = [alias for alias in connections.settings if is_async_alias(alias)]
    wsgi = getattr(settings, "WSGI_APPLICATION", None)
    if not aliases or not wsgi or getattr(settings, "ASGI_APPLICATION", None):
        return []
    return [
        Warning(
            f"DATABASES {', '.join(map(repr, aliases))} use the async ENGINE but "
            f"the project is set up for WSGI only (WSGI_APPLICATION={wsgi!r}).",
            hint=(
                "Serve the project with an ASGI server (uvicorn, granian, "
                "hypercorn) and set ASGI_APPLICATION = '<project>.asgi.application'"
                ". Under WSGI each async view gets a new event loop, so async "
                "connections are reopened on every request."
            ),
            id="django_async_backend.W001",
        )
    ]
