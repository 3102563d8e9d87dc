"""``ASYNC_BACKEND_NATIVE_ORM = True``: every model's async API runs natively.

:func:`install` always runs at ``ready()``: it routes
``connections[alias]`` to the sync facade inside the bridge, makes signals
bridge-aware and wraps the related-manager factories, none of which changes
anything outside the bridge or for models that did not opt in.
:func:`enable` (the setting) puts the very methods of ``AsyncQuerySet`` and
``AsyncModelMixin`` onto Django's ``QuerySet``, ``RawQuerySet`` and
``Model``, and turns the related managers of every model native.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SETTING", "enable", "enabled", "install"]

SETTING = "ASYNC_BACKEND_NATIVE_ORM"

# Whether the project-wide switch is on (read by the related managers).
enabled = False

_installed = False


def install() -> None:
    """Install the bridge's hooks (idempotent); enable the switch if set."""
    global _installed
    from django.conf import settings

    if not _installed:
        from django_async_backend.db.models import facade, related, signals

        facade.install()
        signals.install()
        related.install()
        _installed = True
    if getattr(settings, SETTING, False):
        enable()


def enable() -> None:
    """Make Django's own async ORM API native on this ENGINE's aliases."""
    global enabled
    from django.db.models import Model
    from django.db.models.query import QuerySet, RawQuerySet

    from django_async_backend.db.models.base import MODEL_METHODS
    from django_async_backend.db.models.query import (
        QUERYSET_METHODS,
        RAW_QUERYSET_METHODS,
    )

    targets: list[tuple[Any, dict[str, Any]]] = [
        (QuerySet, QUERYSET_METHODS),
        (RawQuerySet, RAW_QUERYSET_METHODS),
        (Model, MODEL_METHODS),
    ]
    for cls, methods in targets:
        for name, method in methods.items():
            setattr(cls, name, method)
    enabled = True
