"""Django's async ORM tests on Django's stock ENGINE, in the same test-case
mode as ``settings_native`` (``run.py --native-orm``), for comparison."""

from djsuite_common import suite_settings

globals().update(suite_settings("django.db.backends.postgresql", "nativestock"))
# TestCase without transactions, as in settings_native.
TEST_RUNNER = "djsuite_native.NativeModeRunner"
