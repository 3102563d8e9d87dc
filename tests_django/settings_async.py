"""Django's test suite on this package's ENGINE (``default`` and ``other``)."""

from djsuite_common import suite_settings

globals().update(suite_settings("django_async_backend.db.backends.postgresql", "async"))
