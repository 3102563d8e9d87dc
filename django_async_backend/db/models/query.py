"""``AsyncQuerySet``: Django's async QuerySet API, run natively.

Each of Django's ``a*`` methods runs Django's own sync method (``aget`` runs
``get``, ``acreate`` runs ``create`` ...) through
:func:`~django_async_backend.utils.bridge.run_native`, so every query is
awaited on the task's async connection and joins its ``async_atomic()``
block. On a database alias of another ENGINE they are Django's own methods
(a thread per call).

The same functions are what ``ASYNC_BACKEND_NATIVE_ORM = True`` puts onto
Django's ``QuerySet`` (see :mod:`django_async_backend.db.models.switch`).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

from django.db import connections, router
from django.db.models import Model, QuerySet
from django.db.models.query import RawQuerySet, prefetch_related_objects

from django_async_backend.db.models.facade import is_native_alias
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
_django_raw_aiter = RawQuerySet.__dict__["__aiter__"]


def _write_alias(qs: Any) -> str:
    return qs._db or router.db_for_write(qs.model, **qs._hints)


def _native_method(
    name: str, sync_name: str, write: bool
) -> Callable[..., Coroutine[Any, Any, Any]]:
    original = _django[name]

    @functools.wraps(original)
    async def method(self: QuerySet[Any], /, *args: Any, **kwargs: Any) -> Any:
        alias = _write_alias(self) if write else self.db
        if not is_native_alias(alias):
            return await original(self, *args, **kwargs)
        return await run_native(getattr(self, sync_name), *args, **kwargs)

    return method


def _aiter(self: QuerySet[Any]) -> AsyncIterator[Any]:
    if not is_native_alias(self.db):
        return _django["__aiter__"](self)  # type: ignore[no-any-return]

    async def generator() -> AsyncIterator[Any]:
        await run_native(self._fetch_all)
        for item in self._result_cache:  # type: ignore[union-attr]
            yield item

    return generator()


async def _aiterator(self: QuerySet[Any], chunk_size: int = 2000) -> AsyncIterator[Any]:
    """Stream the rows through a server-side cursor, natively."""
    alias = self.db
    if not is_native_alias(alias):
        async for item in _django["aiterator"](self, chunk_size):
            yield item
        return
    if chunk_size <= 0:
        raise ValueError("Chunk size must be strictly positive.")
    chunked = not connections.settings[alias].get("DISABLE_SERVER_SIDE_CURSORS")
    items = iterate_native(
        lambda: self._iterator(chunked, chunk_size),  # type: ignore[attr-defined]
        chunk_size,
    )
    try:
        async for item in items:
            yield item
    finally:
        # Close the cursor in this task, not in a finalizer's task.
        await items.aclose()


def _raw_aiter(self: RawQuerySet[Any]) -> AsyncIterator[Any]:
    if not is_native_alias(self.db):
        return _django_raw_aiter(self)  # type: ignore[no-any-return]

    async def generator() -> AsyncIterator[Any]:
        await run_native(self._fetch_all)  # type: ignore[attr-defined]
        for item in self._result_cache:  # type: ignore[attr-defined]
            yield item

    return generator()


QUERYSET_METHODS: dict[str, Any] = {
    **{
        name: _native_method(name, sync, False)
        for name, sync in READ_METHODS.items()
        if name in _django
    },
    **{
        name: _native_method(name, sync, True)
        for name, sync in WRITE_METHODS.items()
        if name in _django
    },
    "__aiter__": _aiter,
    "aiterator": _aiterator,
}
RAW_QUERYSET_METHODS: dict[str, Any] = {"__aiter__": _raw_aiter}


class AsyncQuerySet(QuerySet[M]):
    """A QuerySet whose async API runs natively on this ENGINE's aliases.

    Subclass it for custom QuerySets (``MyQuerySet(AsyncQuerySet)``,
    ``MyQuerySet.as_manager()``).
    """

    def raw(self, *args: Any, **kwargs: Any) -> RawQuerySet[Any]:
        qs = super().raw(*args, **kwargs)
        qs.__class__ = AsyncRawQuerySet
        return qs


class AsyncRawQuerySet(RawQuerySet):
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
