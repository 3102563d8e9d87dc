"""Django's async ORM API, run natively on the task's async connection.

``from django_async_backend.db.models import AsyncQuerySet, AsyncManager,
AsyncModelMixin, run_sync``; see docs/orm.md.
"""

from django_async_backend.db.models.base import AsyncModelMixin
from django_async_backend.db.models.manager import AsyncManager
from django_async_backend.db.models.query import (
    AsyncQuerySet,
    AsyncRawQuerySet,
    aprefetch_related_objects,
)
from django_async_backend.db.models.sync import run_sync

__all__ = [
    "AsyncManager",
    "AsyncModelMixin",
    "AsyncQuerySet",
    "AsyncRawQuerySet",
    "aprefetch_related_objects",
    "run_sync",
]
