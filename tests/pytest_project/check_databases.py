"""The mark's `databases`: other aliases refused, listed ones isolated."""

import pytest
from django.test.testcases import (  # type: ignore[attr-defined]  # no stub
    DatabaseOperationForbidden,
)
from inner_support import add_account, count

pytestmark = pytest.mark.asyncio


@pytest.mark.django_db
async def test_unlisted_alias_is_refused() -> None:
    with pytest.raises(DatabaseOperationForbidden, match="'other'"):
        await count("testapp_account", alias="other")


@pytest.mark.django_db(databases=["default", "other"])
async def test_listed_aliases_each_have_a_transaction() -> None:
    await add_account("other", alias="other")
    assert await count("testapp_account", alias="other") == 1
    # Another connection, another transaction: not visible here.
    assert await count("testapp_account") == 0


@pytest.mark.django_db(databases="__all__")
async def test_all_aliases() -> None:
    await add_account("pooled", alias="pooled")
    assert await count("testapp_account", alias="pooled") == 1


@pytest.mark.django_db(databases=["default", "other", "pooled"])
async def test_listed_aliases_are_rolled_back() -> None:
    for alias in ("default", "other", "pooled"):
        assert await count("testapp_account", alias=alias) == 0
