"""Django's test runner (manage.py test) runs the async test cases."""

import unittest

from support import run_python


class DjangoRunnerTests(unittest.TestCase):
    def test_manage_py_test_uses_the_test_database(self) -> None:
        completed = run_python(["-m", "django", "test", "runner_sample", "--noinput"])
        output = completed.stdout + completed.stderr
        self.assertEqual(completed.returncode, 0, output)
        self.assertIn("Ran 2 tests", output)
        self.assertIn("Creating test database", output)


if __name__ == "__main__":
    unittest.main()
