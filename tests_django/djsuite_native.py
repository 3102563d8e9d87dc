"""Django's async ORM tests with native execution switched on (``--native-orm``).

``run.py --native-orm`` runs the test apps of Django's suite that exercise its
async ORM API twice:

* ``settings_native``: ``default`` and ``other`` on this package's ENGINE,
  ``ASYNC_BACKEND_NATIVE_ORM = True`` and ``django_async_backend`` installed,
  so that ``aget``, ``acreate``, ``async for``, ``asave``... run natively on
  the test's async connection;
* ``settings_native_stock``: Django's stock ENGINE, Django's own async ORM
  (a thread per query), for comparison.

Both runs share one test-case mode, so that a difference between them is the
native ORM's doing: a ``TestCase`` class with ``async def test*`` methods
behaves as on a database without transactions
(``_databases_support_transactions()`` is False, Django's own supported
path). ``TestCase`` otherwise keeps ``setUpTestData`` rows and each test's
writes in an open transaction on the *sync* connection, which the async
connection, another session, cannot see. In this mode the rows are
committed, ``setUpTestData`` runs before each test, and the tables are
flushed after it, as for ``TransactionTestCase`` (``djsuite_flush``: the
same state as Django's ``flush``, at the cost of what the test wrote).
Classes without async tests keep Django's transactions (flushing after each
of their tests would only slow the run down).

``runtests.py`` sets ``INSTALLED_APPS`` itself, ignoring the settings
module's; the runner (``TEST_RUNNER``, built after ``runtests.py`` installed
the test apps) adds ``django_async_backend`` so that its ``ready()`` reads the
switch. ``--parallel`` workers are forked from that process (Linux, Python
3.11-3.13) and inherit both changes.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

from djsuite_flush import flush
from djsuite_runner import RecordingRunner

# The apps with Django's async ORM tests (issue 8), whether or not this Django
# version has async tests in each: they also show that switching native
# execution on leaves the sync ORM alone.
BASE_APPS = (
    "async",
    "basic",
    "get_or_create",
    "many_to_many",
    "many_to_one",
    "prefetch_related",
)
# Apps whose async tests match but exercise no ORM: the async cache API
# (DatabaseCache's a* methods are BaseCache's sync_to_async wrappers) and
# async views under Django's decorators.
NOT_ORM = ("cache", "decorators")
APP = "django_async_backend"
# An app has async ORM tests when one of its modules has both.
ASYNC_TEST = re.compile(r"async def test")
ASYNC_ORM_CALL = re.compile(r"await .*\.a[a-z_]+\(")


def native_orm_apps(tests_dir: Path) -> list[str]:
    """``BASE_APPS`` plus every app of ``tests_dir`` with async ORM tests."""
    found = set(BASE_APPS)
    for path in sorted(tests_dir.glob("*/**/*.py")):
        app = path.relative_to(tests_dir).parts[0]
        if app in found or app in NOT_ORM or app == "gis_tests":
            continue
        text = path.read_text(errors="replace")
        if ASYNC_TEST.search(text) and ASYNC_ORM_CALL.search(text):
            found.add(app)
    return sorted(found)


def has_async_tests(cls: type) -> bool:
    """Whether a test case class has ``async def test*`` methods."""
    found = cls.__dict__.get("_djsuite_async_tests")
    if found is None:
        found = any(
            inspect.iscoroutinefunction(getattr(cls, name, None))
            for name in dir(cls)
            if name.startswith("test")
        )
        setattr(cls, "_djsuite_async_tests", found)  # noqa: B010 - per class
    return bool(found)


def without_transactions() -> None:
    """Make Django's TestCase classes with async tests run as on a database
    without transactions; the other classes are left alone."""
    from django.test import TestCase

    original = TestCase.__dict__["_databases_support_transactions"].__func__

    def supports_transactions(cls: type[TestCase]) -> bool:
        return False if has_async_tests(cls) else bool(original(cls))

    original_teardown: Any = getattr(TestCase, "_fixture_teardown")  # noqa: B009

    def fixture_teardown(self: TestCase) -> None:
        if not has_async_tests(type(self)):
            original_teardown(self)
            return
        # TransactionTestCase's flush, at the cost of what the test wrote
        # (djsuite_flush).
        for alias in self._databases_names(include_mirrors=False):  # type: ignore[attr-defined]
            flush(alias)

    # Private methods of Django's TestCase (not in the stubs).
    setattr(  # noqa: B010
        TestCase, "_databases_support_transactions", classmethod(supports_transactions)
    )
    setattr(TestCase, "_fixture_teardown", fixture_teardown)  # noqa: B010


def install_app() -> None:
    """Add ``django_async_backend`` to the apps runtests.py installed."""
    from django.apps import apps
    from django.conf import settings

    installed = list(settings.INSTALLED_APPS)
    if APP in installed:
        return
    installed.append(APP)
    settings.INSTALLED_APPS = installed
    apps.set_installed_apps(installed)


class NativeModeRunner(RecordingRunner):
    """RecordingRunner with TestCase in the without-transactions mode."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        without_transactions()


class NativeOrmRunner(NativeModeRunner):
    """NativeModeRunner that also installs ``django_async_backend``, whose
    ``ready()`` switches native execution on (``ASYNC_BACKEND_NATIVE_ORM``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        install_app()

    def setup_databases(self, **kwargs: Any) -> Any:
        from django.apps import apps

        if not apps.is_installed(APP):
            raise RuntimeError(f"{APP} is not installed: native ORM mode is off")
        return super().setup_databases(**kwargs)
