"""The one shape of every native async ORM method, and the aliases it acts on.

A native method is Django's async method (``QuerySet.aget``,
``Model.asave``, a related manager's ``aadd`` ...) that runs Django's own
sync method (``get``, ``save``, ``add`` ...) in the bridge, on the task's
async connection, when the alias it uses is one of this package's ENGINE;
on any other alias it is Django's own method, in a thread as usual.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any

from django.db import router

from django_async_backend.db.utils import is_async_alias
from django_async_backend.utils import compat
from django_async_backend.utils.bridge import run_native

__all__ = [
    "instance_read_alias",
    "instance_write_alias",
    "native_method",
    "queryset_read_alias",
    "queryset_write_alias",
    "related_write_alias",
]

AliasOf = Callable[[Any, dict[str, Any]], str]
Method = Callable[..., Coroutine[Any, Any, Any]]


def native_method(
    original: Method,
    sync_name: str,
    alias_of: AliasOf,
    applies: Callable[[Any], bool] | None = None,
) -> Method:
    """Django's async method ``original``, run natively where it applies.

    ``alias_of(self, kwargs)`` names the alias the call uses; ``applies(self)``
    (if given) tells whether the object opted in at all.
    """

    @functools.wraps(original)
    async def method(self: Any, /, *args: Any, **kwargs: Any) -> Any:
        if (applies is not None and not applies(self)) or not is_async_alias(
            alias_of(self, kwargs)
        ):
            return await original(self, *args, **kwargs)
        return await run_native(getattr(self, sync_name), *args, **kwargs)

    return method


# ##### The alias each call uses, as Django's own method picks it #####


def queryset_read_alias(queryset: Any, kwargs: dict[str, Any]) -> str:
    return queryset.db  # type: ignore[no-any-return]


def queryset_write_alias(queryset: Any, kwargs: dict[str, Any]) -> str:
    return compat.queryset_write_db(queryset)


def instance_write_alias(obj: Any, kwargs: dict[str, Any]) -> str:
    return kwargs.get("using") or router.db_for_write(type(obj), instance=obj)


def instance_read_alias(obj: Any, kwargs: dict[str, Any]) -> str:
    return (
        kwargs.get("using")
        or obj._state.db
        or router.db_for_read(type(obj), instance=obj)
    )


def related_write_alias(manager: Any, kwargs: dict[str, Any]) -> str:
    return compat.related_manager_db(manager) or router.db_for_write(
        manager.model, instance=manager.instance
    )
