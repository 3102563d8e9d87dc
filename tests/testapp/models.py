from django.db import models


class Account(models.Model):
    name = models.CharField(max_length=100, unique=True)
    balance = models.IntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name} ({self.balance})"


class Item(models.Model):
    name = models.CharField(max_length=100)
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name
