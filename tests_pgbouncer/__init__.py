"""Run the test suite through PgBouncer in transaction pooling mode."""
