from __future__ import annotations

from django.db import models

from django_async_backend.db.models import (
    AsyncManager,
    AsyncModelMixin,
    AsyncQuerySet,
)


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


# ##### Native async ORM (docs/orm.md) #####
# Opted in with AsyncModelMixin (which installs AsyncManager as `objects`) or
# with an AsyncQuerySet-based manager. Account and Item above stay plain.


class Author(AsyncModelMixin, models.Model):
    name = models.CharField(max_length=100, unique=True)
    born = models.DateField(null=True, blank=True)

    def __str__(self) -> str:
        return self.name


class Profile(AsyncModelMixin, models.Model):
    author = models.OneToOneField(Author, models.CASCADE, related_name="profile")
    bio = models.TextField(blank=True, default="")


class Tag(AsyncModelMixin, models.Model):
    name = models.CharField(max_length=50, unique=True)

    def __str__(self) -> str:
        return self.name


class BookQuerySet(AsyncQuerySet["Book"]):
    """A custom QuerySet on top of AsyncQuerySet."""

    def long(self) -> BookQuerySet:
        return self.filter(pages__gte=300)


class LongBooks(AsyncManager):
    """A custom manager on top of AsyncManager."""

    def get_queryset(self) -> AsyncQuerySet[Book]:
        queryset: AsyncQuerySet[Book] = super().get_queryset()
        return queryset.filter(pages__gte=300)


class Book(AsyncModelMixin, models.Model):
    title = models.CharField(max_length=200)
    author = models.ForeignKey(Author, models.CASCADE, related_name="books")
    editor = models.ForeignKey(
        Author,
        models.SET_NULL,
        null=True,
        blank=True,
        related_name="edited_books",
    )
    tags = models.ManyToManyField(Tag, related_name="books", blank=True)
    pages = models.IntegerField(default=0)
    published = models.DateField(null=True, blank=True)

    objects = BookQuerySet.as_manager()
    long_books = LongBooks()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.title


class Novel(Book):
    """Multi-table inheritance: a Book with a genre."""

    genre = models.CharField(max_length=50, default="")


class Chapter(AsyncModelMixin, models.Model):
    book = models.ForeignKey(Book, models.CASCADE, related_name="chapters")
    number = models.IntegerField()
    title = models.CharField(max_length=200, default="")

    class Meta:
        ordering = ["book_id", "number"]


class Loan(AsyncModelMixin, models.Model):
    """A book on loan cannot be deleted (on_delete=PROTECT)."""

    book = models.ForeignKey(Book, models.PROTECT, related_name="loans")
    borrower = models.CharField(max_length=100)
