"""Django's async ORM tests on this ENGINE with native execution switched on
(``run.py --native-orm``; see ``djsuite_native.py``)."""

from djsuite_common import suite_settings

globals().update(
    suite_settings("django_async_backend.db.backends.postgresql", "native")
)
ASYNC_BACKEND_NATIVE_ORM = True
# Installs django_async_backend (runtests.py sets INSTALLED_APPS itself) and
# runs TestCase without transactions.
TEST_RUNNER = "djsuite_native.NativeOrmRunner"
