"""Native async database access for Django on PostgreSQL (psycopg 3)."""

__version__ = "0.1.0"
