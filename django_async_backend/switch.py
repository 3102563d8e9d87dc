"""What the package changes in Django, installed only when the project opts in.

At ``ready()`` (:func:`install`):

* ``ASYNC_BACKEND_NATIVE_ORM = True``: the bridge's hooks and the model hooks
  below, and :func:`enable` puts the very methods of ``AsyncQuerySet`` and
  ``AsyncModelMixin`` onto Django's ``QuerySet``, ``RawQuerySet`` and
  ``Model``;
* a model opted in (``AsyncModelMixin``, or a manager built on
  ``AsyncQuerySet``): the bridge's hooks (``connections[alias]`` routed to
  the task's async connection inside the bridge, bridge-aware
  ``Signal.send``) and the model hooks (native related managers, the loud
  error for a lazy relation read in async code);
* neither: nothing. The bridge's hooks are then installed when the bridge
  first runs code (``run_sync``, a sync on_commit callback).

docs/orm.md ("What the package changes in Django") lists them; tests/
test_patches.py checks that list in fresh processes. (A module of its own,
outside ``db.models``, so that deciding imports none of the native ORM.)
"""

from __future__ import annotations

import sys
from typing import Any

from django_async_backend.utils import bridge, compat

__all__ = ["SETTING", "enable", "enabled", "install", "install_bridge"]

SETTING = "ASYNC_BACKEND_NATIVE_ORM"

# Whether the project-wide switch is on (read by the related managers).
enabled = False


def install() -> None:
    """Install what the project opted into (at ``ready()``)."""
    from django.conf import settings

    native = bool(getattr(settings, SETTING, False))
    if native or _a_model_opted_in():
        install_bridge()
        from django_async_backend.db.models import related

        related.install()
    if native:
        enable()


def install_bridge() -> None:
    """Route Django's connections and signals to the bridge (idempotent)."""
    from django_async_backend.db.models import facade, signals

    facade.install()
    signals.install()


bridge.before_first_run(install_bridge)


def _a_model_opted_in() -> bool:
    """Tell whether a model of the project uses the native ORM."""
    if "django_async_backend.db.models.base" not in sys.modules:
        return False  # nobody imported the opt-in classes
    from django.apps import apps

    from django_async_backend.db.models.base import AsyncModelMixin
    from django_async_backend.db.models.query import AsyncQuerySet

    for model in apps.get_models(include_auto_created=True):
        if issubclass(model, AsyncModelMixin):
            return True
        managers = model._meta.managers
        if any(issubclass(compat.queryset_class(m), AsyncQuerySet) for m in managers):
            return True
    return False


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
