"""``AsyncModelMixin``: ``asave``, ``adelete`` and ``arefresh_from_db``, native.

``class Book(AsyncModelMixin, models.Model)`` is the whole opt-in: a model
that declares no manager gets ``objects = AsyncManager()`` instead of Django's
plain ``Manager``; a model that declares its own managers should build them on
:class:`~django_async_backend.db.models.AsyncManager` (or
``AsyncQuerySet.as_manager()``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import models, router
from django.db.models.signals import class_prepared

from django_async_backend.db.models.facade import is_native_alias
from django_async_backend.db.models.manager import AsyncManager
from django_async_backend.utils.bridge import run_native

__all__ = ["MODEL_METHODS", "AsyncModelMixin"]

# Django's own functions, taken before the switch replaces them.
_django: dict[str, Any] = {
    name: models.Model.__dict__[name]
    for name in ("asave", "adelete", "arefresh_from_db")
}


def _write_alias(obj: models.Model, kwargs: dict[str, Any]) -> str:
    return kwargs.get("using") or router.db_for_write(type(obj), instance=obj)


def _read_alias(obj: models.Model, kwargs: dict[str, Any]) -> str:
    return (
        kwargs.get("using")
        or obj._state.db
        or router.db_for_read(type(obj), instance=obj)
    )


def _native_method(
    name: str, sync_name: str, alias_of: Callable[[models.Model, dict[str, Any]], str]
) -> Callable[..., Coroutine[Any, Any, Any]]:
    original = _django[name]

    @functools.wraps(original)
    async def method(self: models.Model, /, *args: Any, **kwargs: Any) -> Any:
        if not is_native_alias(alias_of(self, kwargs)):
            return await original(self, *args, **kwargs)
        return await run_native(getattr(self, sync_name), *args, **kwargs)

    return method


SAVE_PARAMS = {
    "force_insert": False,
    "force_update": False,
    "using": None,
    "update_fields": None,
}


def _native_asave() -> Callable[..., Coroutine[Any, Any, Any]]:
    original = _django["asave"]

    @functools.wraps(original)
    async def asave(self: models.Model, /, *args: Any, **kwargs: Any) -> Any:
        if args and hasattr(self, "_parse_save_params"):
            # Django 5.2's deprecated positional arguments: its own parser
            # (called from here, for the warning's stack level) names asave().
            params = {k: kwargs.pop(k, v) for k, v in SAVE_PARAMS.items()}
            values = self._parse_save_params(*args, method_name="asave", **params)
            args, kwargs = (), {**kwargs, **dict(zip(SAVE_PARAMS, values, strict=True))}
        if not is_native_alias(_write_alias(self, kwargs)):
            return await original(self, *args, **kwargs)
        return await run_native(self.save, *args, **kwargs)

    return asave


MODEL_METHODS: dict[str, Any] = {
    "asave": _native_asave(),
    "adelete": _native_method("adelete", "delete", _write_alias),
    "arefresh_from_db": _native_method(
        "arefresh_from_db", "refresh_from_db", _read_alias
    ),
}


class AsyncModelMixin:
    """Mix into a model for native ``asave``/``adelete``/``arefresh_from_db``."""


for _name, _method in MODEL_METHODS.items():
    setattr(AsyncModelMixin, _name, _method)


def _install_manager(sender: type[models.Model], **kwargs: Any) -> None:
    """Give an opted-in model without a manager of its own an AsyncManager."""
    if not issubclass(sender, AsyncModelMixin):
        return
    if any(getattr(sender, name) is _django[name] for name in MODEL_METHODS):
        raise ImproperlyConfigured(
            f"{sender.__qualname__}: put AsyncModelMixin before models.Model in "
            "the bases, or Django's own asave()/adelete()/arefresh_from_db() "
            "shadow the native ones."
        )
    if sender._meta.abstract:
        return
    opts = sender._meta
    auto = [m for m in opts.local_managers if m.auto_created and m.name == "objects"]
    if not auto or isinstance(auto[0], AsyncManager):
        return
    opts.local_managers.remove(auto[0])
    manager = AsyncManager()
    manager.auto_created = True
    sender.add_to_class("objects", manager)


class_prepared.connect(_install_manager, dispatch_uid="django_async_backend.models")
