"""pytest plugin: pytest-django's database rules for async connections.

pytest loads it through the ``pytest11`` entry point ``django_async_backend``
(``-p no:django_async_backend`` turns it off); the package never imports it.
It does nothing unless pytest-django is active. Then:

* pytest-django's database blocker covers async connections: a test without
  the ``django_db`` mark (or the ``db``/``transactional_db`` fixtures) that
  opens one fails with pytest-django's own error (``_pytest_blocker``);
* with pytest-asyncio, an async test that uses the database gets the async
  connections isolated as pytest-django isolates the sync one: a transaction
  rolled back after the test, or real commits and a flush with
  ``transaction=True`` (``_pytest_isolation``).

Sync tests keep pytest-django's behaviour unchanged.
"""

from __future__ import annotations

import sys

import pytest

__all__ = ["pytest_configure", "pytest_load_initial_conftests"]

# The parts this plugin registers, under these names, when they apply.
BLOCKER = "django_async_backend.blocker"
ISOLATION = "django_async_backend.isolation"


@pytest.hookimpl(trylast=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """Turn the plugin on once the plugins are loaded, before the conftests.

    Registered this early, its autouse fixtures come before those of the
    conftests: async fixtures of a test then run inside its transaction.
    """
    _activate(early_config)


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """Turn the plugin on if a conftest brought pytest-django in."""
    _activate(config)


def _activate(config: pytest.Config) -> None:
    manager = config.pluginmanager
    if not _registered(config, "pytest_django.plugin"):
        return
    if not manager.has_plugin(BLOCKER):
        from django_async_backend.test import _pytest_blocker

        manager.register(_pytest_blocker, BLOCKER)
    if _registered(config, "pytest_asyncio.plugin") and not manager.has_plugin(
        ISOLATION
    ):
        from django_async_backend.test import _pytest_isolation

        manager.register(_pytest_isolation, ISOLATION)


def _registered(config: pytest.Config, module: str) -> bool:
    """Tell whether the plugin module ``module`` is loaded (under any name)."""
    plugin = sys.modules.get(module)
    return plugin is not None and config.pluginmanager.is_registered(plugin)
