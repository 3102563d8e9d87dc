"""``AsyncModelMixin``: ``asave``, ``adelete`` and ``arefresh_from_db``, native.

``class Book(AsyncModelMixin, models.Model)`` is the whole opt-in: a model
that declares no manager gets ``objects = AsyncManager()`` instead of Django's
plain ``Manager``; a model that declares its own managers should build them on
:class:`~django_async_backend.db.models.AsyncManager` (or
``AsyncQuerySet.as_manager()``).
"""

from __future__ import annotations

import functools
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.db.models.signals import class_prepared

from django_async_backend.db.models.manager import AsyncManager
from django_async_backend.db.models.native import (
    instance_read_alias,
    instance_write_alias,
    native_method,
)
from django_async_backend.utils import compat

__all__ = ["MODEL_METHODS", "AsyncModelMixin"]

# Django's own functions, taken before the switch replaces them.
_django: dict[str, Any] = {
    name: models.Model.__dict__[name]
    for name in ("asave", "adelete", "arefresh_from_db")
}

SAVE_PARAMS = {
    "force_insert": False,
    "force_update": False,
    "using": None,
    "update_fields": None,
}
_asave = native_method(_django["asave"], "save", instance_write_alias)


@functools.wraps(_django["asave"])
async def asave(self: models.Model, /, *args: Any, **kwargs: Any) -> Any:
    parse = compat.parse_save_params(self)
    if args and parse is not None:
        # Django 5.2's deprecated positional arguments: its own parser
        # (called from here, for the warning's stack level) names asave().
        params = {k: kwargs.pop(k, v) for k, v in SAVE_PARAMS.items()}
        values = parse(*args, method_name="asave", **params)
        args, kwargs = (), {**kwargs, **dict(zip(SAVE_PARAMS, values, strict=True))}
    return await _asave(self, *args, **kwargs)


MODEL_METHODS: dict[str, Any] = {
    "asave": asave,
    "adelete": native_method(_django["adelete"], "delete", instance_write_alias),
    "arefresh_from_db": native_method(
        _django["arefresh_from_db"], "refresh_from_db", instance_read_alias
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
    local = compat.local_managers(sender)
    auto = [m for m in local if m.auto_created and m.name == "objects"]
    if not auto or isinstance(auto[0], AsyncManager):
        return
    local.remove(auto[0])
    manager = AsyncManager()
    manager.auto_created = True
    sender.add_to_class("objects", manager)


class_prepared.connect(_install_manager, dispatch_uid="django_async_backend.models")
