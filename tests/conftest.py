"""Fixtures every suite may use: a throwaway PostgreSQL (pg_support)."""

from pg_support import pg_cluster, pg_url  # noqa: F401  (fixtures)
