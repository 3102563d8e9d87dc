"""Async database access: ``async_connections``, twin of ``django.db.connections``."""

from django_async_backend.db.utils import AsyncConnectionHandler

__all__ = ["async_connections"]

async_connections = AsyncConnectionHandler()
