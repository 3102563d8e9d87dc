"""loop_scope="class", and async fixtures that are methods of the class."""

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from testapp.models import Author


@pytest.mark.asyncio(loop_scope="class")
@pytest.mark.django_db
class TestClassLoop:
    author: Author

    @pytest_asyncio.fixture(loop_scope="class")
    async def named(self) -> AsyncIterator[None]:
        self.author = await Author.objects.acreate(name="class fixture")
        yield
        assert await Author.objects.filter(pk=self.author.pk).aexists()

    async def test_fixture_ran_on_this_instance(self, named: None) -> None:
        assert self.author.name == "class fixture"
        assert await Author.objects.acount() == 1

    async def test_rolled_back(self) -> None:
        assert await Author.objects.acount() == 0
