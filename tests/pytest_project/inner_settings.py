"""Settings of the inner pytest projects: the suite's, with a test database
of their own (pytest-django creates it) and a pooled alias."""

from typing import Any

from settings import *  # noqa: F403  (tests/settings.py)
from settings import DATABASES as SUITE_DATABASES
from settings import TEST_DATABASE_NAME

PYTEST_DATABASE_NAME = f"{TEST_DATABASE_NAME}_pytest"


def _alias(base: dict[str, Any], **options: Any) -> dict[str, Any]:
    return {
        **base,
        "OPTIONS": {**base["OPTIONS"], **options},
        "TEST": {"NAME": PYTEST_DATABASE_NAME},
    }


DATABASES = {
    "default": _alias(SUITE_DATABASES["default"]),
    "other": _alias(SUITE_DATABASES["other"]),
    # The same database again, through a pool (one per event loop).
    "pooled": _alias(SUITE_DATABASES["default"], pool={"min_size": 1, "max_size": 2}),
}
