"""The bank's schema. Django's migrations create it (``migrate``, sync side);
the views read and write it with raw SQL on async connections.

Amounts are integers in cents. The database itself refuses an overdraft
(``balance_not_negative``) and a non-positive or self transfer.
"""

from __future__ import annotations

from django.db import models
from django.db.models.functions import Now


class Account(models.Model):
    name = models.CharField(max_length=40, unique=True)
    balance = models.BigIntegerField(default=0)

    objects: models.Manager[Account] = models.Manager()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(balance__gte=0), name="balance_not_negative"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Transfer(models.Model):
    source = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="transfers_out"
    )
    destination = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="transfers_in"
    )
    amount = models.BigIntegerField()
    created_at = models.DateTimeField(db_default=Now())

    objects: models.Manager[Transfer] = models.Manager()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(amount__gt=0), name="amount_positive"
            ),
            models.CheckConstraint(
                condition=~models.Q(source=models.F("destination")),
                name="not_to_self",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk}"
