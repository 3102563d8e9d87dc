"""``AsyncManager``: a model manager whose async API runs natively."""

from __future__ import annotations

from django.db import models

from django_async_backend.db.models.query import AsyncQuerySet

__all__ = ["AsyncManager"]


class AsyncManager(models.Manager.from_queryset(AsyncQuerySet)):  # type: ignore[misc]
    """``Manager`` over :class:`AsyncQuerySet`; subclass it for custom managers.

    ``objects = AsyncManager()`` gives the model Django's async QuerySet API
    (``aget``, ``acreate``, ``async for`` ...) on the task's async connection.
    """
