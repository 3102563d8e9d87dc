"""Django's test runner (manage.py test) runs the async test cases."""

import os
import subprocess
import sys
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent


class DjangoRunnerTests(unittest.TestCase):
    def test_manage_py_test_uses_the_test_database(self) -> None:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "settings",
            "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)]),
        }
        completed = subprocess.run(
            [sys.executable, "-m", "django", "test", "runner_sample", "--noinput"],
            cwd=HERE,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        output = completed.stdout + completed.stderr
        self.assertEqual(completed.returncode, 0, output)
        self.assertIn("Ran 2 tests", output)
        self.assertIn("Creating test database", output)


if __name__ == "__main__":
    unittest.main()
