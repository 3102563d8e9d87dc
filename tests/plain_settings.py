"""The test settings without any opted-in model (tests/test_patches.py)."""

from settings import *  # noqa: F403

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django_async_backend",
]
