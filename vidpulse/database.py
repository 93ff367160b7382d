"""PostgreSQL plumbing shared by the CLI and the processors: create, migrate, check versions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

_PACKAGED_SCHEMA = Path(__file__).with_name("schema.sql")
_SOURCE_SCHEMA = Path(__file__).resolve().parent.parent / "schema.sql"

# Serialises concurrent `migrate` runs (several replicas starting at once).
_MIGRATE_LOCK = 0x76696470
_MIGRATION_FILE = re.compile(r"(\d{4})_(\w[\w.-]*)\.sql")


def schema_path() -> Path:
    """Where schema.sql is: packaged beside this module, else the source checkout."""
    return _PACKAGED_SCHEMA if _PACKAGED_SCHEMA.exists() else _SOURCE_SCHEMA


def application_name(database_url: str, name: str) -> dict[str, Any]:
    """The connection keyword naming a component's connections `name` in
    pg_stat_activity (and the server's logs), unless `database_url` names them already."""
    if conninfo_to_dict(database_url).get("application_name"):
        return {}
    return {"application_name": name}


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


@dataclass(frozen=True)
class Migration:
    """One numbered migration file, `NNNN_name.sql`."""

    version: int
    name: str
    path: Path

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


class SchemaBehind(Exception):
    """The database lacks migrations this code needs; the message says what to run."""


def migrations_dir() -> Path:
    return Path(__file__).with_name("migrations")


def migrations(directory: Path | None = None) -> list[Migration]:
    """Every migration this code knows (or `directory` holds), in version order."""
    directory = directory or migrations_dir()
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_FILE.fullmatch(path.name)
        if match is None:
            raise ValueError(f"migration file not named NNNN_name.sql: {path}")
        found.append(Migration(int(match[1]), match[2], path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"two migration files share a number in {directory}")
    return found


def applied_versions(conn: psycopg.Connection[Any]) -> set[int] | None:
    """Versions recorded in the database; None when it has no schema_migrations table."""
    if conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,):
        return None
    return {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}


def missing_migrations(conn: psycopg.Connection[Any]) -> list[Migration]:
    """The migrations this code knows that the database has not applied yet."""
    applied = applied_versions(conn) or set()
    return [m for m in migrations() if m.version not in applied]


def check_schema(conn: psycopg.Connection[Any]) -> None:
    """Raise SchemaBehind (one line) when the database lacks a migration this code knows."""
    missing = missing_migrations(conn)
    if missing:
        names = ", ".join(m.label for m in missing)
        raise SchemaBehind(
            f"the database schema is behind this version of vidpulse (missing {names}): "
            "run `vidpulse migrate`"
        )


class MigrationFailed(Exception):
    """A migration's SQL failed; it was rolled back. The message is one line."""


def migrate(database_url: str, *, directory: Path | None = None) -> list[str]:
    """Create the database if missing and bring its schema to the current version.

    An empty database gets schema.sql, with every known migration recorded as applied.
    A database of release 0.1 (its tables, no schema_migrations) gets every migration,
    0001 making it version 1 (release 0.1 itself); a versioned one gets those it lacks.
    Each migration runs in its own transaction with its record. Returns what was done,
    one line each ("created the database", "applied 0002_name", ...), empty when
    the database was current already. `directory` replaces the packaged migrations.
    """
    done = ["created the database"] if create_database_if_missing(database_url) else []
    with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
        # A session lock: concurrent `migrate` runs wait here, then find nothing to do.
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATE_LOCK,))
        try:
            done += _migrate_locked(conn, migrations(directory))
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATE_LOCK,))
    return done


def _migrate_locked(conn: psycopg.Connection[Any], known: list[Migration]) -> list[str]:
    applied = applied_versions(conn)
    if applied is None and conn.execute("SELECT to_regclass('video_events')").fetchone() == (None,):
        with conn.transaction():
            conn.execute(schema_path().read_text().encode())
            _record(conn, known)
        return [f"made the schema of version {known[-1].version} from schema.sql"]
    done: list[str] = []
    for migration in known:
        if applied is None or migration.version not in applied:
            try:
                with conn.transaction():
                    conn.execute(migration.path.read_text().encode())
                    _record(conn, [migration])
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:
                lines = str(exc).strip().splitlines() or [type(exc).__name__]
                raise MigrationFailed(
                    f"migration {migration.label} failed and was rolled back "
                    f"({'; '.join(done) or 'nothing applied before it'}): {lines[0]}"
                ) from exc
            done.append(f"applied {migration.label}")
    return done


def _record(conn: psycopg.Connection[Any], done: list[Migration]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
            [(m.version, m.name) for m in done],
        )
