"""Native related managers, and a loud error for lazy relations in async code.

Django builds the related managers (``book.tags``, ``author.book_set``) with
the factories of ``django.db.models.fields.related_descriptors`` and defines
their ``aadd``/``acreate``... inside the built class, each hopping to a
thread (asgiref's SyncToAsync). The factories are wrapped once (at
``ready()``, when a model opted in): the built classes get native ``a*``
methods (``native.native_method``), which run
Django's sync method (``add``, ``create`` ...) through ``run_native`` when
the manager belongs to an opted-in model (or the project-wide switch is on)
and the alias uses this ENGINE; otherwise Django's own method runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.apps import apps
from django.core.exceptions import SynchronousOnlyOperation
from django.db.models.fields import related_descriptors

from django_async_backend import switch
from django_async_backend.db.models.base import AsyncModelMixin
from django_async_backend.db.models.native import native_method, related_write_alias
from django_async_backend.db.models.query import AsyncQuerySet
from django_async_backend.utils import compat
from django_async_backend.utils.bridge import in_bridge

__all__ = ["install"]

RELATED_METHODS = (
    "aadd",
    "acreate",
    "aget_or_create",
    "aupdate_or_create",
    "aremove",
    "aclear",
    "aset",
)


def _opted_in(manager: Any) -> bool:
    return (
        switch.enabled
        or issubclass(compat.queryset_class(manager), AsyncQuerySet)
        or isinstance(manager.instance, AsyncModelMixin)
    )


def _nativize(manager_class: type) -> type:
    for name in RELATED_METHODS:
        original = manager_class.__dict__.get(name)
        if original is not None:
            method = native_method(original, name[1:], related_write_alias, _opted_in)
            setattr(manager_class, name, method)
    return manager_class


def _wrap_factory(factory: Callable[..., type]) -> Callable[..., type]:
    if getattr(factory, "_native_wrapped", False):
        return factory

    @functools.wraps(factory)
    def wrapper(*args: Any, **kwargs: Any) -> type:
        return _nativize(factory(*args, **kwargs))

    wrapper._native_wrapped = True  # type: ignore[attr-defined]
    return wrapper


def _lazy_get_object(original: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    @functools.wraps(original)
    def get_object(self: Any, instance: Any) -> Any:
        _refuse_lazy_access(type(instance), self.field.name, self.field.related_model)
        return original(self, instance)

    get_object._native_wrapped = True  # type: ignore[attr-defined]
    return get_object


def _refuse_lazy_access(model: type, name: str, target: type) -> None:
    """Raise if a relation would be loaded by a sync query in async code."""
    if (
        not in_bridge()
        and compat.running_loop() is not None
        and not compat.async_unsafe_allowed()
    ):
        raise SynchronousOnlyOperation(
            f"Accessing {model.__name__}.{name} in async code would run a query "
            "synchronously. Load it with the query instead: "
            f"select_related({name!r}) or prefetch_related({name!r}), or fetch "
            f"it with `await {target.__name__}.objects.aget(...)`."
        )


def _lazy_reverse_queryset(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def get_queryset(self: Any, **hints: Any) -> Any:
        instance = hints.get("instance")
        if instance is not None:
            _refuse_lazy_access(
                type(instance),
                self.related.get_accessor_name(),
                self.related.related_model,
            )
        return original(self, **hints)

    get_queryset._native_wrapped = True  # type: ignore[attr-defined]
    return get_queryset


def install() -> None:
    """Wrap the related-manager factories and the lazy FK access (once)."""
    module: Any = related_descriptors
    for name in (
        "create_reverse_many_to_one_manager",
        "create_forward_many_to_many_manager",
    ):
        setattr(module, name, _wrap_factory(getattr(module, name)))
    if apps.is_installed("django.contrib.contenttypes"):
        from django.contrib.contenttypes import fields as generic

        factory = "create_generic_related_manager"
        setattr(generic, factory, _wrap_factory(getattr(generic, factory)))
    forward: Any = related_descriptors.ForwardManyToOneDescriptor
    if not getattr(forward.get_object, "_native_wrapped", False):
        forward.get_object = _lazy_get_object(forward.get_object)
    # author.profile: its queryset is only built when the value is not cached.
    reverse: Any = related_descriptors.ReverseOneToOneDescriptor
    if not getattr(reverse.get_queryset, "_native_wrapped", False):
        reverse.get_queryset = _lazy_reverse_queryset(reverse.get_queryset)
