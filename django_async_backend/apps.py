"""Django app config: registers the system checks and the native ORM hooks."""

from django.apps import AppConfig


class AsyncBackendConfig(AppConfig):
    name = "django_async_backend"
    verbose_name = "Django async backend"

    def ready(self) -> None:
        from django_async_backend import (
            checks,  # noqa: F401 - registers checks
            switch,
        )

        switch.install()
