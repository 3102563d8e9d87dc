from __future__ import annotations

from django.apps import AppConfig


class BankConfig(AppConfig):
    name = "example.bank"
    label = "bank"
    verbose_name = "Demo bank"
