"""The pytest11 entry point loads the plugin without -p."""

import pytest


def test_the_plugin_is_loaded(pytestconfig: pytest.Config) -> None:
    manager = pytestconfig.pluginmanager
    assert manager.has_plugin("django_async_backend")
    assert manager.has_plugin("django_async_backend.blocker")
    assert manager.has_plugin("django_async_backend.isolation")
