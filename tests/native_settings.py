"""The test settings with ASYNC_BACKEND_NATIVE_ORM on (tests/test_patches.py)."""

from settings import *  # noqa: F403

ASYNC_BACKEND_NATIVE_ORM = True
