"""Django's test suite on Django's stock PostgreSQL ENGINE, for comparison."""

from djsuite_common import suite_settings

globals().update(suite_settings("django.db.backends.postgresql", "stock"))
