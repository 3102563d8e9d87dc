"""The model of the ORM and bulk loading benchmarks (sections 5 and 6).

It opts in to the native async ORM with ``AsyncModelMixin`` (and so gets an
``AsyncManager``); on a stock alias the same calls fall back to Django's
own async ORM, which runs each one in a thread through ``sync_to_async``.
"""

from __future__ import annotations

from django.db import models

from django_async_backend.db.models import AsyncManager, AsyncModelMixin

TABLE = "bench_orm_item"


class Item(AsyncModelMixin, models.Model):
    value = models.IntegerField()
    name = models.CharField(max_length=40)

    objects = AsyncManager()

    class Meta:
        app_label = "project"
        db_table = TABLE
