"""What of Django the package replaces, and only when the project opts in.

Each scenario runs in a fresh process (patches last for the process): with
``django_async_backend`` installed but no model opted in and the setting off,
Django's classes are Django's own; an opted-in model (or ``run_sync``)
installs the bridge's documented hooks; ``ASYNC_BACKEND_NATIVE_ORM = True``
adds the native methods on Django's QuerySet and Model, exactly those.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Run in the child: set up Django (settings from argv), then report every
# attribute of Django's that is not Django's own any more.
PROBE = r"""
import asyncio, json, os, sys
sys.path[:0] = [os.environ["DAB_TESTS"], os.path.dirname(os.environ["DAB_TESTS"])]
os.environ["DJANGO_SETTINGS_MODULE"] = sys.argv[1]
from django.db.models import Model, signals
from django.db.models.fields import related_descriptors as rd
from django.db.models.query import QuerySet, RawQuerySet
from django.db.utils import ConnectionHandler
from django.dispatch import Signal

# Django's own, before the project is set up.
OWNERS = {
    "ConnectionHandler": (ConnectionHandler, ["__getitem__"]),
    "Signal": (Signal, ["connect", "send", "send_robust"]),
    "QuerySet": (
        QuerySet, [n for n in vars(QuerySet) if n.startswith("a") or n == "__aiter__"]
    ),
    "RawQuerySet": (RawQuerySet, ["__aiter__"]),
    "Model": (Model, ["asave", "adelete", "arefresh_from_db"]),
    "ForwardManyToOneDescriptor": (rd.ForwardManyToOneDescriptor, ["get_object"]),
    "ReverseOneToOneDescriptor": (rd.ReverseOneToOneDescriptor, ["get_queryset"]),
}
before = {
    (key, name): vars(owner).get(name) for key, (owner, names) in OWNERS.items()
    for name in names
}
factories = [
    "create_reverse_many_to_one_manager", "create_forward_many_to_many_manager"
]
before_factories = {name: getattr(rd, name) for name in factories}

import django
django.setup()
if sys.argv[2] == "run_sync":
    from django_async_backend.db.models import run_sync
    asyncio.run(run_sync(len)([1]))

replaced = [
    f"{key}.{name}" for (key, name), value in before.items()
    if vars(OWNERS[key][0]).get(name) is not value
]
replaced += [
    f"related_descriptors.{n}" for n, f in before_factories.items()
    if getattr(rd, n) is not f
]
replaced += [
    f"{name}.send" for name, s in vars(signals).items()
    if isinstance(s, Signal) and "send" in vars(s)
]
receivers = [
    str(r) for r in signals.class_prepared.receivers
    if "django_async_backend" in str(r)
]
print(json.dumps({"replaced": sorted(replaced), "class_prepared": receivers}))
"""

# What docs/orm.md ("What the package changes in Django") lists.
BRIDGE = ["ConnectionHandler.__getitem__", "Signal.send", "Signal.send_robust"]
OPTED_IN = [
    *BRIDGE,
    "ForwardManyToOneDescriptor.get_object",
    "ReverseOneToOneDescriptor.get_queryset",
    "related_descriptors.create_forward_many_to_many_manager",
    "related_descriptors.create_reverse_many_to_one_manager",
]


def probe(settings_module: str, action: str = "") -> dict[str, list[str]]:
    env = {**os.environ, "DAB_TESTS": str(HERE)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    completed = subprocess.run(
        [sys.executable, "-c", PROBE, settings_module, action],
        capture_output=True,
        text=True,
        env=env,
        cwd=HERE,
        timeout=120,
        check=False,
    )
    if completed.returncode != 0:
        raise AssertionError(completed.stderr)
    result: dict[str, list[str]] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


class PatchTests(unittest.TestCase):
    def test_nothing_is_replaced_when_nothing_opted_in(self) -> None:
        result = probe("plain_settings")
        self.assertEqual(result["replaced"], [])
        self.assertEqual(result["class_prepared"], [])

    def test_run_sync_installs_the_bridge_hook_only(self) -> None:
        self.assertEqual(probe("plain_settings", "run_sync")["replaced"], BRIDGE)

    def test_an_opted_in_model_installs_the_documented_hooks(self) -> None:
        replaced = probe("settings")["replaced"]
        self.assertEqual(sorted(replaced), sorted(OPTED_IN))

    def test_the_setting_adds_exactly_the_native_methods(self) -> None:
        replaced = set(probe("native_settings")["replaced"]) - set(OPTED_IN)
        native = {name.split(".")[0] for name in replaced}
        self.assertEqual(native, {"QuerySet", "RawQuerySet", "Model"})
        self.assertIn("QuerySet.aget", replaced)
        self.assertIn("QuerySet.__aiter__", replaced)
        self.assertIn("Model.asave", replaced)


if __name__ == "__main__":
    unittest.main()
