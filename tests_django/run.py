#!/usr/bin/env python3
"""Run Django's own test suite on this ENGINE and on the stock one; compare.

    python tests_django/run.py [APP_OR_LABEL ...] [--ci] [--parallel N]
                               [--output DIR] [--no-rerun] [--fetch-only]
                               [--native-orm [--full]]

Run it with the Python whose installed Django (and this package) is to be
tested. It fetches that Django version's source distribution from PyPI
(``pip download --no-binary``; cached in ``tests_django/.cache/``), whose
``tests/`` holds Django's suite, runs ``tests/runtests.py`` twice with
``--parallel`` -- ``--settings=settings_async`` (``default`` and ``other`` on
``django_async_backend.db.backends.postgresql``), then ``settings_stock``
(``django.db.backends.postgresql``) -- and compares every test's outcome.

No label runs the whole suite; ``--ci`` runs the CI subset (``CI_APPS``).
``--native-orm`` runs the apps with Django's async ORM tests (or the labels)
with native async ORM execution switched on (``settings_native``) vs the
stock ENGINE, both with TestCase run without transactions (see
``djsuite_native.py``); ``--native-orm --full`` runs the whole suite so.
Tests whose outcome differs are re-run once, alone, on both ENGINEs: a
difference that does not reproduce is reported as flaky, not as a difference.
Writes ``comparison.md`` and ``comparison.json`` (plus each run's log and
outcomes) to ``--output`` (default ``tests_django/results/django-X.Y.Z-ci``,
``-full`` or ``-some``).
The server comes from DATABASE_URL or PG* (see ``djsuite_common.py``).

Exit status: 0 when both ENGINEs agree on every test and the async-side apps
(``MUST_PASS``) pass; 1 on a difference; 2 when a run broke down.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
RESULTS = HERE / "results"
SETTINGS = {"async": "settings_async", "stock": "settings_stock"}
# --native-orm: this ENGINE with ASYNC_BACKEND_NATIVE_ORM vs the stock one.
NATIVE_SETTINGS = {"async": "settings_native", "stock": "settings_native_stock"}
# What CI runs for every cell: the database-heavy apps and the async side.
CI_APPS = (
    "backends",
    "transactions",
    "transaction_hooks",
    "basic",
    "queries",
    "async",
    "asgi",
    "handlers",
    "select_for_update",
    "model_fields",
    "update",
    "delete",
    "bulk_create",
    "migrations",
    "schema",
    "postgres_tests",
    "test_utils",
    # More of the ORM's SQL, introspection, multi-db and time zones.
    "expressions",
    "aggregation",
    "lookup",
    "db_functions",
    "constraints",
    "indexes",
    "introspection",
    "inspectdb",
    "multiple_database",
    "fixtures",
    "get_or_create",
    "timezones",
)
# Django's apps that exercise the async side: they must pass on this ENGINE,
# not merely fail as they do on the stock one.
MUST_PASS = ("async", "asgi", "handlers")
# A test id as unittest reports a setUpClass/setUpModule (...) error.
HOLDER = re.compile(r"^\w+ \((?P<where>[\w.]+)\)$")
# More differences than this is no flakiness: do not spend time re-running.
MAX_RERUN = 300


def say(message: str) -> None:
    print(f"django-suite: {message}", flush=True)


# ---------------------------------------------------------------------------
# Django's tests/ from the source distribution
# ---------------------------------------------------------------------------


def django_version() -> str:
    return importlib.metadata.version("django")


def fetch_tests(version: str) -> Path:
    """``tests/`` of Django ``version``'s sdist, downloaded once and cached."""
    target = CACHE / f"django-{version}" / "tests"
    if (target / "runtests.py").is_file():
        return target
    sdist_dir = CACHE / "sdist"
    sdist_dir.mkdir(parents=True, exist_ok=True)
    archive = find_sdist(sdist_dir, version)
    if archive is None:
        say(f"downloading the Django {version} source distribution from PyPI")
        subprocess.run(
            [
                *(sys.executable, "-m", "pip", "download", "--quiet"),
                *("--disable-pip-version-check", "--no-deps"),
                *("--no-binary", ":all:", "--dest", str(sdist_dir)),
                f"django=={version}",
            ],
            check=True,
        )
        archive = find_sdist(sdist_dir, version)
        if archive is None:
            raise SystemExit(f"django-suite: no Django {version} sdist downloaded")
    say(f"unpacking tests/ from {archive.name}")
    staging = Path(tempfile.mkdtemp(prefix="unpack-", dir=CACHE))
    try:
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if is_tests_member(m.name)]
            if not members:
                raise SystemExit(f"django-suite: {archive.name} has no tests/")
            tar.extractall(staging, members=members, filter="data")
        top = members[0].name.split("/")[0]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        (staging / top / "tests").rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def find_sdist(folder: Path, version: str) -> Path | None:
    for path in folder.iterdir():
        if path.name.lower() == f"django-{version}.tar.gz":
            return path
    return None


def is_tests_member(name: str) -> bool:
    parts = name.split("/")
    return len(parts) > 2 and parts[1] == "tests"


# ---------------------------------------------------------------------------
# Running runtests.py
# ---------------------------------------------------------------------------


@dataclass
class Run:
    """One runtests.py run: its exit status, time and per-test outcomes."""

    engine: str
    code: int
    seconds: float
    outcomes: dict[str, str] | None
    log: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def broke(self) -> bool:
        return self.breakdown is not None

    @property
    def breakdown(self) -> str | None:
        """Why this run's outcomes are not a complete record, if they are not."""
        if self.outcomes is None:
            return f"no outcomes recorded (exit {self.code})"
        if self.extra.get("aborted"):
            return f"runtests.py aborted: {self.extra['aborted']}"
        if self.code < 0:
            return f"runtests.py stopped (exit {self.code})"
        return None

    @property
    def odd_exit(self) -> bool:
        """Exit status not explained by the outcomes (e.g. a teardown crash):
        runtests.py exits non-zero exactly when a test failed or errored."""
        outcomes = (self.outcomes or {}).values()
        failing = any(kind(o) in ("failed", "errors") for o in outcomes)
        return (self.code != 0) != failing


def run_suite(
    engine: str,
    tests_dir: Path,
    labels: Sequence[str],
    *,
    parallel: int,
    out: Path,
    name: str,
    timeout: float,
    stall: float,
) -> Run:
    """``runtests.py`` on one ENGINE; output to ``<name>.log``.

    Stopped after ``timeout`` seconds, or when its output has not grown for
    ``stall`` seconds (a --parallel worker that hangs holds the run forever).
    """
    results = out / f"{name}.json"
    log = out / f"{name}.log"
    results.unlink(missing_ok=True)
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(HERE), *filter(None, [env.get("PYTHONPATH")])]
    )
    env["DJSUITE_RESULTS"] = str(results)
    cmd = [
        *(sys.executable, "-u", str(tests_dir / "runtests.py")),
        *(f"--settings={SETTINGS[engine]}", f"--parallel={parallel}"),
        *("--noinput", "--verbosity=1", *labels),
    ]
    started = time.monotonic()
    with log.open("w") as fh:
        fh.write("$ " + " ".join(cmd[:6] + ["..."] * (len(cmd) > 6)) + "\n")
        fh.flush()
        proc = subprocess.Popen(
            cmd,
            cwd=tests_dir,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # so that a timeout can stop its workers too
        )
        try:
            code = watch(proc, log, started, timeout=timeout, stall=stall)
        except BaseException:
            stop_group(proc)
            raise
        if code is None:
            stop_group(proc)
            code = -1
            with log.open("a") as tail_fh:
                tail_fh.write(
                    "\ndjango-suite: stopped: no output for "
                    f"{stall:.0f}s, or {timeout:.0f}s in all\n"
                )
    seconds = time.monotonic() - started
    outcomes: dict[str, str] | None = None
    extra: dict[str, Any] = {}
    if results.is_file():
        data = json.loads(results.read_text())
        outcomes = data.pop("outcomes")
        extra = data
    return Run(engine, code, seconds, outcomes, log, extra)


def watch(
    proc: subprocess.Popen[Any],
    log: Path,
    started: float,
    *,
    timeout: float,
    stall: float,
) -> int | None:
    """Wait for ``proc``: its exit status, or None when it ran out of time."""
    size, changed = -1, time.monotonic()
    while True:
        try:
            return proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        current = log.stat().st_size
        if current != size:
            size, changed = current, now
        if now - changed > stall or now - started > timeout:
            return None


def stop_group(proc: subprocess.Popen[Any]) -> None:
    """Stop runtests.py and its worker processes (its own process group)."""
    for sig, grace in ((signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)


# ---------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------


def app_of(test_id: str) -> str:
    """The test app (first dotted component) a test id belongs to."""
    match = HOLDER.match(test_id)
    return (match.group("where") if match else test_id).split(".")[0]


def label_of(test_id: str) -> str:
    """A runtests.py label that re-runs ``test_id``."""
    match = HOLDER.match(test_id)
    return match.group("where") if match else test_id


KINDS = ("passed", "failed", "errors", "skipped")


def kind(outcome: str | None) -> str:
    """Outcome -> column of the per-app table."""
    return {
        "passed": "passed",
        "expected_failure": "passed",
        "failed": "failed",
        "unexpected_success": "failed",
        "error": "errors",
        "skipped": "skipped",
    }.get(outcome or "", "missing")


def per_app(outcomes: dict[str, str]) -> dict[str, Counter[str]]:
    table: dict[str, Counter[str]] = {}
    for test, outcome in outcomes.items():
        table.setdefault(app_of(test), Counter())[kind(outcome)] += 1
    return table


def differing(a: dict[str, str], b: dict[str, str]) -> list[str]:
    return sorted(t for t in a.keys() | b.keys() if a.get(t) != b.get(t))


@dataclass
class Comparison:
    version: str
    labels: list[str]
    runs: dict[str, Run]
    differences: list[str]  # confirmed: outcome differs, also when re-run
    flaky: dict[str, dict[str, str | None]]  # differed once, agreed re-run
    must_pass_failures: list[str]
    reruns: dict[str, Run] = field(default_factory=dict)
    # ENGINE -> why its first run broke down (it was run again).
    retried: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        bad = self.differences or self.must_pass_failures or self.broke
        return not (bad or self.exit_code_differs())

    @property
    def broke(self) -> bool:
        return any(run.broke for run in self.runs.values())

    def exit_code_differs(self) -> bool:
        """One run's exit status is odd and not the other's. (A plain
        failure shows in the outcomes; a flaky one must not count twice.)"""
        return len({run.odd_exit for run in self.runs.values()}) > 1

    def counts(self) -> dict[str, int]:
        """Parity totals: same outcome (or agreed when re-run) / differing /
        skipped on both."""
        a = self.runs["async"].outcomes or {}
        b = self.runs["stock"].outcomes or {}
        failed = len(self.differences) + len(self.must_pass_failures)
        failed += int(self.exit_code_differs())
        skipped = sum(
            1 for t, o in a.items() if o == "skipped" and b.get(t) == "skipped"
        )
        same = sum(1 for t, o in a.items() if b.get(t) == o) - skipped
        same -= len([t for t in self.must_pass_failures if a.get(t) == b.get(t)])
        same += len(self.flaky)  # they agreed when re-run
        if self.broke:
            failed += 1
        return {"passed": same, "failed": failed, "skipped": skipped}


def compare(
    version: str, labels: list[str], runs: dict[str, Run], reruns: dict[str, Run]
) -> Comparison:
    a = runs["async"].outcomes or {}
    b = runs["stock"].outcomes or {}
    first = differing(a, b) if not any(r.broke for r in runs.values()) else []
    differences: list[str] = []
    flaky: dict[str, dict[str, str | None]] = {}
    ra = reruns["async"].outcomes if "async" in reruns else None
    rb = reruns["stock"].outcomes if "stock" in reruns else None
    for test in first:
        again = (ra or {}).get(test), (rb or {}).get(test)
        if ra is not None and rb is not None and again[0] and again[0] == again[1]:
            flaky[test] = {
                "async": a.get(test),
                "stock": b.get(test),
                "rerun": again[0],
            }
        else:
            differences.append(test)
    must_pass = sorted(
        t for t, o in a.items() if app_of(t) in MUST_PASS and kind(o) != "passed"
    )
    must_pass = [t for t in must_pass if a[t] != "skipped"]
    return Comparison(version, labels, runs, differences, flaky, must_pass, reruns)


# ---------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------


def fmt_counts(counts: Counter[str] | None) -> str:
    if counts is None:
        return "-"
    return " / ".join(str(counts.get(k, 0)) for k in KINDS)


def totals(outcomes: dict[str, str] | None) -> Counter[str] | None:
    if outcomes is None:
        return None
    return Counter(kind(o) for o in outcomes.values())


def markdown(result: Comparison) -> str:
    runs = result.runs
    a_out, b_out = runs["async"].outcomes, runs["stock"].outcomes
    lines = [
        f"# Django {result.version} test suite: async ENGINE vs stock ENGINE",
        "",
        f"- Python {runs['async'].extra.get('python', sys.version.split()[0])}, "
        f"PostgreSQL {runs['async'].extra.get('server_version', '?')}",
        f"- labels: {' '.join(result.labels) or '(the whole suite)'}",
        f"- settings: {SETTINGS['async']} vs {SETTINGS['stock']}",
        f"- verdict: **{verdict(result)}**",
        "",
        "| run | DatabaseWrapper | exit | time | tests "
        "| passed / failed / errors / skipped |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    reruns = [(f"re-run {k}", v) for k, v in result.reruns.items()]
    for name, run in [*runs.items(), *reruns]:
        count = len(run.outcomes) if run.outcomes is not None else "-"
        lines.append(
            f"| {name} | `{run.extra.get('wrapper', '?')}` | {run.code} "
            f"| {run.seconds:.0f}s | {count} "
            f"| {fmt_counts(totals(run.outcomes))} |"
        )
    lines += ["", "## Differences", ""]
    for engine, reason in result.retried.items():
        lines.append(f"- The first {engine} run broke down ({reason}); run again.")
    if result.broke:
        for r in runs.values():
            if r.broke:
                lines.append(
                    f"- The {r.engine} run: {r.breakdown}; see `{r.log.name}`."
                )
    elif not result.differences:
        lines.append("None.")
    for test in result.differences:
        a = (a_out or {}).get(test)
        b = (b_out or {}).get(test)
        lines.append(f"- `{test}`: async {a or 'not run'}, stock {b or 'not run'}")
    if result.exit_code_differs():
        codes = ", ".join(f"{k} {r.code}" for k, r in runs.items())
        lines.append(
            f"- runtests.py exit status not explained by the outcomes: {codes}"
        )
    if result.flaky:
        lines += ["", "## Differed once, agreed when re-run (flaky)", ""]
        for test, seen in result.flaky.items():
            lines.append(
                f"- `{test}`: async {seen['async']}, stock {seen['stock']}; "
                f"re-run: {seen['rerun']} on both"
            )
    both = failing_on_both(result)
    if both:
        lines += ["", "## Not passing on either ENGINE (the same outcome)", ""]
        lines += [f"- `{t}`: {o}" for t, o in both.items()]
    if result.must_pass_failures:
        lines += ["", f"## Not passing on this ENGINE in {', '.join(MUST_PASS)}", ""]
        lines += [f"- `{t}`: {(a_out or {})[t]}" for t in result.must_pass_failures]
    lines += [
        "",
        "## Per app (passed / failed / errors / skipped)",
        "",
        "| app | async ENGINE | stock ENGINE | differ |",
        "| --- | --- | --- | ---: |",
    ]
    apps_a = per_app(a_out or {})
    apps_b = per_app(b_out or {})
    diff_apps = Counter(app_of(t) for t in result.differences)
    for app in sorted(apps_a.keys() | apps_b.keys()):
        lines.append(
            f"| {app} | {fmt_counts(apps_a.get(app))} | "
            f"{fmt_counts(apps_b.get(app))} | {diff_apps.get(app, 0)} |"
        )
    return "\n".join(lines) + "\n"


def failing_on_both(result: Comparison) -> dict[str, str]:
    """Tests that fail or error alike on both ENGINEs: not a difference."""
    a = result.runs["async"].outcomes or {}
    b = result.runs["stock"].outcomes or {}
    bad = ("failed", "errors")
    return {t: o for t, o in sorted(a.items()) if kind(o) in bad and b.get(t) == o}


def verdict(result: Comparison) -> str:
    if result.broke:
        return "a run broke down"
    if result.ok:
        if result.retried:
            again = " and ".join(result.retried)
            return f"no difference ({again} run broke down once, was run again)"
        if result.flaky:
            return f"no difference ({len(result.flaky)} flaky, agreed when re-run)"
        return "no difference"
    parts = []
    if result.differences:
        parts.append(f"{len(result.differences)} test(s) differ")
    if result.must_pass_failures:
        count = len(result.must_pass_failures)
        parts.append(f"{count} async-side test(s) not passing")
    if result.exit_code_differs():
        parts.append("an unexplained runtests.py exit status")
    return ", ".join(parts)


def as_json(result: Comparison) -> dict[str, Any]:
    return {
        "django": result.version,
        "labels": result.labels,
        "ok": result.ok,
        "runs": {
            name: {
                "exit": run.code,
                "seconds": round(run.seconds, 1),
                "totals": dict(totals(run.outcomes) or {}),
                "per_app": {
                    app: dict(c) for app, c in per_app(run.outcomes or {}).items()
                },
                **run.extra,
            }
            for name, run in result.runs.items()
        },
        "differences": {
            t: {
                "async": (result.runs["async"].outcomes or {}).get(t),
                "stock": (result.runs["stock"].outcomes or {}).get(t),
            }
            for t in result.differences
        },
        "flaky": result.flaky,
        "retried": result.retried,
        "failing_on_both": failing_on_both(result),
        "must_pass_failures": result.must_pass_failures,
    }


def print_summary(result: Comparison, out: Path) -> None:
    reruns = [(f"re-run {k}", v) for k, v in result.reruns.items()]
    for name, run in [*result.runs.items(), *reruns]:
        t = totals(run.outcomes)
        shown = fmt_counts(t) if t is not None else "no outcomes recorded"
        say(
            f"{name + ' ENGINE':<19} {run.seconds:6.0f}s  exit {run.code}  "
            f"passed/failed/errors/skipped {shown}"
        )
    shown_max = 30
    for test in result.differences[:shown_max]:
        a = (result.runs["async"].outcomes or {}).get(test)
        b = (result.runs["stock"].outcomes or {}).get(test)
        say(f"DIFFERS {test}: async {a}, stock {b}")
    if len(result.differences) > shown_max:
        say(f"... and {len(result.differences) - shown_max} more differences")
    for engine, reason in result.retried.items():
        say(f"{engine} run broke down and was run again: {reason}")
    for test, seen in result.flaky.items():
        say(f"flaky {test}: {seen['async']} vs {seen['stock']}, re-run {seen['rerun']}")
    for test in result.must_pass_failures:
        say(f"NOT PASSING (async side) {test}")
    for run in result.runs.values():
        if run.broke:
            say(f"{run.engine} run: {run.breakdown}; tail of {run.log}:")
            print(tail(run.log), flush=True)
    say(f"Django {result.version}: {verdict(result)}; report in {out}/comparison.md")
    c = result.counts()
    # Closing line: passed = same outcome on both ENGINEs, failed = differs.
    print(f"parity: {c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped")


def tail(path: Path, lines: int = 40) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


# ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("labels", nargs="*", help="test apps/labels (default: all)")
    parser.add_argument("--ci", action="store_true", help="the CI subset of apps")
    parser.add_argument("--parallel", type=int, default=2, help="default: 2")
    parser.add_argument("--output", type=Path, help="directory for the reports")
    parser.add_argument("--no-rerun", action="store_true", help="no flaky re-run")
    parser.add_argument(
        "--timeout", type=float, default=3600, help="per run, seconds (3600)"
    )
    parser.add_argument(
        "--stall",
        type=float,
        default=600,
        help="stop a run whose output stood still this long, seconds (600)",
    )
    parser.add_argument(
        "--fetch-only", action="store_true", help="only fetch Django's tests/"
    )
    parser.add_argument(
        "--native-orm",
        action="store_true",
        help="the async ORM apps (or the labels), native execution on",
    )
    parser.add_argument(
        "--full", action="store_true", help="with --native-orm: the whole suite"
    )
    args = parser.parse_args(argv)
    version = django_version()
    tests_dir = fetch_tests(version)
    if args.fetch_only:
        say(f"Django {version} tests in {tests_dir}")
        return 0
    labels = [*(CI_APPS if args.ci else ()), *args.labels]
    scope = "ci" if args.ci and not args.labels else "full" if not labels else "some"
    if args.native_orm:
        from djsuite_native import native_orm_apps

        SETTINGS.update(NATIVE_SETTINGS)
        if args.full:
            scope = "native-orm-full"
        else:
            labels = labels or native_orm_apps(tests_dir)
            scope = "native-orm" if not args.labels else "native-orm-some"
    out: Path = args.output or RESULTS / f"django-{version}-{scope}"
    out.mkdir(parents=True, exist_ok=True)
    what = " ".join(labels) if labels else "the whole suite"
    runs: dict[str, Run] = {}
    retried: dict[str, str] = {}
    for engine in SETTINGS:
        say(f"Django {version}, {engine} ENGINE: {what} (--parallel {args.parallel})")
        for attempt in (1, 2):
            run = run_suite(
                engine,
                tests_dir,
                labels,
                parallel=args.parallel,
                out=out,
                name=engine if attempt == 1 else f"{engine}-again",
                timeout=args.timeout,
                stall=args.stall,
            )
            runs[engine] = run
            if run.breakdown is None or attempt == 2:
                break
            # Django's --parallel runner dies on an unpicklable failure, and
            # a worker may hang: once, that is not the ENGINE's doing.
            retried[engine] = run.breakdown
            say(f"{engine} run broke down ({run.breakdown}); running it again")
    reruns: dict[str, Run] = {}
    first = compare(version, labels, runs, reruns)
    if first.differences and not args.no_rerun:
        if len(first.differences) > MAX_RERUN:
            say(f"{len(first.differences)} differences: not re-running them")
        else:
            again = sorted({label_of(t) for t in first.differences})
            say(f"re-running {len(first.differences)} differing tests alone")
            for engine in SETTINGS:
                reruns[engine] = run_suite(
                    engine,
                    tests_dir,
                    again,
                    parallel=1,
                    out=out,
                    name=f"rerun-{engine}",
                    timeout=args.timeout,
                    stall=args.stall,
                )
    result = compare(version, labels, runs, reruns)
    result.retried = retried
    (out / "comparison.md").write_text(markdown(result))
    (out / "comparison.json").write_text(json.dumps(as_json(result), indent=1) + "\n")
    print_summary(result, out)
    if result.broke:
        return 2
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
