"""Django's async ORM API, run natively on the task's async connection.

``from django_async_backend.db.models import AsyncQuerySet, AsyncManager,
AsyncModelMixin``; see docs/orm.md.
"""

from django_async_backend.db.models.base import AsyncModelMixin
from django_async_backend.db.models.manager import AsyncManager
from django_async_backend.db.models.query import (
    AsyncQuerySet,
    AsyncRawQuerySet,
    aprefetch_related_objects,
)

__all__ = [
    "AsyncManager",
    "AsyncModelMixin",
    "AsyncQuerySet",
    "AsyncRawQuerySet",
    "aprefetch_related_objects",
]
