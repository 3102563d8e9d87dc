"""Without pytest-django the plugin does nothing: no blocker, no isolation."""

import django
import pytest

django.setup()  # pytest-django would have

from inner_support import backend_pid  # noqa: E402


@pytest.mark.asyncio
async def test_async_connections_are_not_blocked(pytestconfig: pytest.Config) -> None:
    manager = pytestconfig.pluginmanager
    assert manager.has_plugin("django_async_backend.test.pytest_plugin")
    assert not manager.has_plugin("django_async_backend.blocker")
    assert not manager.has_plugin("django_async_backend.isolation")
    assert await backend_pid() > 0
