"""pytest plugin for the suite run through PgBouncer (transaction pooling).

Loaded with ``-p tests_pgbouncer.plugin`` by ``python3 dev.py test
--pgbouncer``. It skips the tests that cannot apply behind a transaction
pooler, each with its reason; everything else runs unchanged, through
PgBouncer. A test belongs here only when what it checks is a property of the
direct server topology (the client's own server session, killing it, startup
parameters), never to hide a failure of the backend.
"""

from __future__ import annotations

from typing import Any

import pytest

SESSION = (
    "identifies the client's server session by its pid (pg_backend_pid, "
    "pg_stat_activity): behind transaction pooling a client connection has no "
    "server session of its own, each transaction may run on another one, "
    "shared with other clients (counts of the backend's connections are taken "
    "from PgBouncer's SHOW CLIENTS instead: tests/support.py count_sessions)"
)
KILL = (
    "kills the client's server session (pg_terminate_backend) right before "
    "COMMIT to simulate a lost connection: behind PgBouncer that kills a "
    "server connection of PgBouncer's pool, which reports it to its client as "
    "an extra error result, not as a lost client connection"
)
STARTUP = (
    "sets a server setting with OPTIONS['options'] ('-c ...'), a startup "
    "parameter PgBouncer refuses (docs/pgbouncer.md#startup-parameters)"
)
ROLE = (
    "assume_role runs SET ROLE, session state that transaction pooling leaks "
    "into other clients' transactions (docs/pgbouncer.md#assume_role): it "
    "would change the role of the server connections the rest of the suite uses"
)
TEST_DB = (
    "runs Django's test runner, which creates and drops the test database: "
    "that must go to PostgreSQL directly, since DROP DATABASE fails while "
    "PgBouncer keeps server connections to it open"
)
CURSOR = (
    "observes a server-side cursor; behind PgBouncer the suite runs with "
    "DISABLE_SERVER_SIDE_CURSORS = True, the documented setting "
    "(docs/pgbouncer.md#server-side-cursors), so there is none"
)
TERMINATE = (
    "terminates the client's server session (pg_terminate_backend) and checks "
    "what the wrapper makes of it: behind PgBouncer that kills a server "
    "connection of PgBouncer's pool, and the client connection lives on"
)
LISTEN = (
    "listens (LISTEN/NOTIFY), which needs a server session of its own: behind "
    "transaction pooling listen() refuses with NotSupportedError, as tested "
    "in test_listen.py (docs/listen-notify.md#pgbouncer)"
)
DEMO = (
    "the demo's smoke run counts server sessions in pg_stat_activity after "
    "shutdown, which PgBouncer keeps open in its pool (every other check of "
    "the smoke run applies)"
)

# Node ids relative to tests/ (a module, a class or a test).
NOT_APPLICABLE: dict[str, str] = {
    # These scenarios end by checking that the task's server session is gone.
    **{
        f"test_cancellation.py::CancellationTests::{name}": SESSION
        for name in (
            "test_cancel_inside_nested_savepoints",
            "test_cancel_inside_nested_savepoints_during_asyncio_sleep",
            "test_cancel_while_awaiting_a_query",
            "test_cancel_while_awaiting_asyncio_sleep",
            "test_cancel_while_committing_runs_the_callbacks",
            "test_cancel_while_rolling_back",
            "test_timeout_around_the_block",
        )
    },
    "test_cancellation.py::CancellationTests::test_lost_connection_before_commit": (
        KILL
    ),
    **{
        f"test_cancellation.py::{case}::"
        "test_commit_that_never_answers_is_given_up_as_unknown": SESSION
        for case in ("CancellationTests", "PooledCancellationTests")
    },
    # A client's session identity (its pid) or its session state (SET).
    "test_lifecycle.py::PlainLifecycleTests::"
    "test_a_plain_connection_stays_with_its_task": SESSION,
    **{
        f"test_lifecycle.py::{case}::{name}": SESSION
        for case in ("PoolTrueLifecycleTests", "MinSizeOneLifecycleTests")
        for name in (
            "test_a_connection_stays_with_its_task_while_nobody_waits",
            "test_hold_keeps_one_session_for_the_block",
        )
    },
    **{
        f"test_task_rules.py::{case}::"
        "test_a_named_cursor_closed_by_another_task_is_closed_by_its_owner": CURSOR
        for case in ("PlainTaskRuleTests", "PooledTaskRuleTests")
    },
    **{
        f"test_orm_bridge_rules.py::{case}::"
        "test_break_out_of_aiterator_leaves_the_cursor_to_its_owner": CURSOR
        for case in ("PlainBridgeRuleTests", "PooledBridgeRuleTests")
    },
    "test_cancellation.py::PooledCancellationTests::"
    "test_lost_connection_before_commit": KILL,
    **{
        f"test_connections.py::{name}": SESSION
        for name in (
            "HandlerTests::test_aliases_have_separate_connections",
            "HandlerTests::test_close_then_use_reopens",
            "IndependentConnectionTests::"
            "test_block_gets_fresh_connection_and_restores_outer",
        )
    },
    "test_cursors.py::ServerSideCursorTests::"
    "test_chunked_cursor_is_a_named_cursor_on_the_server": CURSOR,
    "test_orm_core.py::QuerySetTests::"
    "test_aiterator_streams_through_a_server_side_cursor": CURSOR,
    "test_orm_queryset.py::TerminalMethodTests::"
    "test_aiterator_declares_a_named_cursor": CURSOR,
    "test_demo.py::DemoSmokeTests::test_smoke_keeps_the_books": DEMO,
    "test_demo_input.py::LiveStreamTests::"
    "test_the_stream_opens_with_the_totals_whatever_the_query": LISTEN,
    "test_django_api.py::WrapperAPITests::"
    "test_close_if_unusable_drops_a_dead_connection": TERMINATE,
    "test_django_api.py::WrapperAPITests::test_is_usable": TERMINATE,
    "test_django_api.py::WrapperAPITests::"
    "test_copy_is_a_second_connection_on_the_same_settings": SESSION,
    # The inner pytest projects check that a test's server sessions are gone
    # (by pid) and listen in one test; the rest of the module applies.
    "test_pytest_plugin.py::MarkTests::test_broader_loops_keep_no_session_nor_pool": (
        SESSION
    ),
    "test_pytest_plugin.py::MarkTests::test_transaction_true_commits_and_flushes": (
        LISTEN
    ),
    "test_pytest_plugin.py::MarkTests::test_no_other_outcome_than_those_checked_here": (
        SESSION + "; and " + LISTEN
    ),
    "test_testcases.py::TestsThatCloseOrTidyUpTests::test_django_runner": TEST_DB,
    "test_faults.py::ServerTimeoutTests": STARTUP,
    "test_instrumentation.py::ConnectionCreatedTests::"
    "test_sent_once_per_new_connection_to_both_kinds": SESSION,
    "test_no_threads.py::NoThreadTests::test_plain_connections_use_no_thread": (
        SESSION
    ),
    "test_no_threads.py::NoThreadTests::test_pooled_connections_use_no_thread": (
        SESSION
    ),
    "test_pool.py::PoolPerEventLoopTests": SESSION,
    "test_runners.py::DjangoRunnerTests::test_manage_py_test_uses_the_test_database": (
        TEST_DB
    ),
    "test_security.py::AssumeRoleTests": ROLE,
    "test_settings.py::AssumeRoleTests": ROLE,
    "test_settings.py::OptionsTests::test_options_string_sets_statement_timeout": (
        STARTUP
    ),
    "test_settings.py::PersistentConnectionTests::"
    "test_conn_max_age_zero_closes_after_task": SESSION,
    "test_settings.py::PersistentConnectionTests::"
    "test_expired_parked_connection_is_closed_not_reused": SESSION,
    **{
        f"test_tasks.py::TaskTests::{name}": SESSION
        for name in (
            "test_create_task_child_gets_its_own_connection",
            "test_gather_children_get_their_own_connections",
            "test_parent_keeps_its_connection_after_children",
            "test_taskgroup_children_get_their_own_connections",
        )
    },
    **{
        f"test_transactions.py::{name}": SESSION
        for name in (
            "AtomicFormsTests::test_all_keyword_arguments_on_another_alias",
            "AtomicFormsTests::test_decorated_function_runs_in_one_transaction_per_call",
            "AtomicSemanticsTests::test_outermost_block_begins_and_commits",
            "AtomicSemanticsTests::test_outermost_block_rolls_back_on_exception",
            "AtomicSemanticsTests::test_failed_commit_raises_and_rolls_back",
            "TransactionFunctionsTests::test_set_autocommit_false_then_commit",
        )
    },
}


def reason_for(nodeid: str) -> str | None:
    """The reason ``nodeid`` does not apply behind PgBouncer, if it doesn't."""
    relative = nodeid.removeprefix("tests/").split("[", 1)[0]
    parts = relative.split("::")
    for end in range(len(parts), 0, -1):
        reason = NOT_APPLICABLE.get("::".join(parts[:end]))
        if reason is not None:
            return reason
    return None


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    for item in items:
        reason = reason_for(item.nodeid)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"behind PgBouncer: {reason}"))


def pytest_report_header(config: Any) -> str:
    return (
        "tests_pgbouncer: through PgBouncer (pool_mode = transaction); "
        f"{len(NOT_APPLICABLE)} entries marked not applicable"
    )
