"""``AsyncQuerySet``: Django's async QuerySet API, run natively.

Each of Django's ``a*`` methods runs Django's own sync method (``aget`` runs
``get``, ``acreate`` runs ``create`` ...) through
:func:`~django_async_backend.utils.bridge.run_native`, so every query is
awaited on the task's async connection and joins its ``async_atomic()``
block. On a database alias of another ENGINE they are Django's own methods
(a thread per call).

The same functions are what ``ASYNC_BACKEND_NATIVE_ORM = True`` puts onto
Django's ``QuerySet`` (see :mod:`django_async_backend.switch`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from django.db import connections
from django.db.models import Model, QuerySet
from django.db.models.query import RawQuerySet, prefetch_related_objects

from django_async_backend.db.models.native import (
    native_method,
    queryset_read_alias,
    queryset_write_alias,
)
from django_async_backend.db.utils import is_async_alias
from django_async_backend.utils import compat
from django_async_backend.utils.bridge import iterate_native, run_native

__all__ = [
    "QUERYSET_METHODS",
    "RAW_QUERYSET_METHODS",
    "AsyncQuerySet",
    "aprefetch_related_objects",
]

M = TypeVar("M", bound=Model)

# Django's async method -> the sync method it runs.
READ_METHODS = {
    "aaggregate": "aggregate",
    "acount": "count",
    "aget": "get",
    "aearliest": "earliest",
    "alatest": "latest",
    "afirst": "first",
    "alast": "last",
    "ain_bulk": "in_bulk",
    "aexists": "exists",
    "acontains": "contains",
    "aexplain": "explain",
}
WRITE_METHODS = {
    "acreate": "create",
    "abulk_create": "bulk_create",
    "abulk_update": "bulk_update",
    "aget_or_create": "get_or_create",
    "aupdate_or_create": "update_or_create",
    "aupdate": "update",
    "adelete": "delete",
}

# Django's own functions, taken before the switch replaces them.
_django: dict[str, Any] = {
    name: QuerySet.__dict__[name]
    for name in [*READ_METHODS, *WRITE_METHODS, "__aiter__", "aiterator"]
    if name in QuerySet.__dict__
}


def _native_aiter(original: Callable[[Any], AsyncIterator[Any]]) -> Any:
    """``async for`` over a QuerySet or RawQuerySet: its query run natively."""

    def __aiter__(self: Any) -> AsyncIterator[Any]:
        if not is_async_alias(self.db):
            return original(self)

        async def generator() -> AsyncIterator[Any]:
            for item in await run_native(compat.fetch_all, self):
                yield item

        return generator()

    return __aiter__


async def _aiterator(self: QuerySet[Any], chunk_size: int = 2000) -> AsyncIterator[Any]:
    """Stream the rows through a server-side cursor, natively."""
    alias = self.db
    if not is_async_alias(alias):
        async for item in _django["aiterator"](self, chunk_size):
            yield item
        return
    if chunk_size <= 0:
        raise ValueError("Chunk size must be strictly positive.")
    chunked = not connections.settings[alias].get("DISABLE_SERVER_SIDE_CURSORS")
    items = iterate_native(
        lambda: compat.iterate_queryset(self, chunked, chunk_size), chunk_size
    )
    try:
        async for item in items:
            yield item
    finally:
        # Close the cursor in this task, not in a finalizer's task.
        await items.aclose()


QUERYSET_METHODS: dict[str, Any] = {
    **{
        name: native_method(_django[name], sync, queryset_read_alias)
        for name, sync in READ_METHODS.items()
        if name in _django
    },
    **{
        name: native_method(_django[name], sync, queryset_write_alias)
        for name, sync in WRITE_METHODS.items()
        if name in _django
    },
    "__aiter__": _native_aiter(_django["__aiter__"]),
    "aiterator": _aiterator,
}
RAW_QUERYSET_METHODS: dict[str, Any] = {
    "__aiter__": _native_aiter(RawQuerySet.__dict__["__aiter__"])
}


class AsyncQuerySet(QuerySet[M]):
    """A QuerySet whose async API runs natively on this ENGINE's aliases.

    Subclass it for custom QuerySets (``MyQuerySet(AsyncQuerySet)``,
    ``MyQuerySet.as_manager()``).
    """

    def raw(self, *args: Any, **kwargs: Any) -> RawQuerySet[Any]:
        qs = super().raw(*args, **kwargs)
        qs.__class__ = AsyncRawQuerySet
        return qs


if TYPE_CHECKING:  # generic in django-stubs only
    _RawQuerySet = RawQuerySet[Any]
else:
    _RawQuerySet = RawQuerySet


class AsyncRawQuerySet(_RawQuerySet):
    """``AsyncQuerySet.raw()``: ``async for`` runs natively."""


for _name, _method in QUERYSET_METHODS.items():
    setattr(AsyncQuerySet, _name, _method)
for _name, _method in RAW_QUERYSET_METHODS.items():
    setattr(AsyncRawQuerySet, _name, _method)


async def aprefetch_related_objects(
    model_instances: list[Any], *related_lookups: Any
) -> None:
    """Django's ``prefetch_related_objects``, with its queries awaited natively."""
    await run_native(prefetch_related_objects, model_instances, *related_lookups)
