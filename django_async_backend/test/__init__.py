"""Test cases for async database code."""

from django_async_backend.test.testcases import (
    AsyncioTestCase,
    AsyncioTransactionTestCase,
)

__all__ = ["AsyncioTestCase", "AsyncioTransactionTestCase"]
