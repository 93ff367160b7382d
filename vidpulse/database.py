"""PostgreSQL plumbing shared by the CLI and the processors: connect, create, migrate."""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

_PACKAGED_SCHEMA = Path(__file__).with_name("schema.sql")
_SOURCE_SCHEMA = Path(__file__).resolve().parent.parent / "schema.sql"

# Serialises concurrent `migrate` runs (several replicas starting at once).
_MIGRATE_LOCK = 0x76696470


def schema_path() -> Path:
    """Where schema.sql is: packaged beside this module, else the source checkout."""
    return _PACKAGED_SCHEMA if _PACKAGED_SCHEMA.exists() else _SOURCE_SCHEMA


def create_database_if_missing(database_url: str) -> bool:
    """Create the database named in `database_url` when it does not exist yet.

    Returns True when it was created.
    """
    params = conninfo_to_dict(database_url)
    name = params.get("dbname") or params.get("user") or "postgres"
    admin = make_conninfo(database_url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return False
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(str(name))))
        except psycopg.errors.DuplicateDatabase:
            return False
        return True


def migrate(database_url: str) -> bool:
    """Create the database if missing and apply schema.sql (idempotent).

    Returns True when the database was created by this call.
    """
    created = create_database_if_missing(database_url)
    ddl = schema_path().read_text()
    with (
        psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn,
        conn.transaction(),
    ):
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
        conn.execute(ddl.encode())
    return created
