"""Schema versions: migrating a database of every earlier release yields schema.sql's shape.

The shape is read from the catalogs (tables, columns, indexes, views, constraints,
functions, triggers, comments) and compared as a whole; the rows written before the
migration must all be there after it. Generic over the migrations: every new one is
covered by the same comparison.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.commands import run_vidpulse, settings_env
from vidpulse.database import (
    MigrationFailed,
    SchemaBehind,
    applied_versions,
    check_schema,
    migrate,
    migrations,
)
from vidpulse.settings import Settings

RELEASES = Path(__file__).parent / "migrations"

# Relations of the public schema that are not partitions (partitions come and go with data).
_RELATIONS = """
SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND NOT c.relispartition
"""

_SHAPE_QUERIES = {
    "tables": """
        SELECT c.relname, c.relkind::text, pg_get_partkeydef(c.oid)
        FROM pg_class c WHERE c.oid IN ({rel}) AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
    """,
    "columns": """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, a.attgenerated::text
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.oid IN ({rel}) AND a.attnum > 0 AND NOT a.attisdropped
    """,
    "indexes": """
        SELECT t.relname, i.relname, pg_get_indexdef(i.oid)
        FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
        JOIN pg_class t ON t.oid = x.indrelid WHERE t.oid IN ({rel})
    """,
    "views": """
        SELECT c.relname, pg_get_viewdef(c.oid) FROM pg_class c
        WHERE c.oid IN ({rel}) AND c.relkind IN ('v', 'm')
    """,
    "constraints": """
        SELECT c.relname, k.conname, k.contype::text, pg_get_constraintdef(k.oid)
        FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid WHERE c.oid IN ({rel})
    """,
    "functions": """
        SELECT p.proname, pg_get_functiondef(p.oid) FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public' AND p.prokind IN ('f', 'p')
    """,
    "triggers": """
        SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t
        JOIN pg_class c ON c.oid = t.tgrelid WHERE c.oid IN ({rel}) AND NOT t.tgisinternal
    """,
    "types": """
        SELECT t.typname, t.typtype::text,
               array_to_string(ARRAY(SELECT e.enumlabel FROM pg_enum e
                                     WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder), ',')
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd')
    """,
    "comments": """
        SELECT c.relname, coalesce(a.attname, ''), d.description FROM pg_description d
        JOIN pg_class c ON c.oid = d.objoid AND d.classoid = 'pg_class'::regclass
        LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.objsubid
        WHERE c.oid IN ({rel})
    """,
}


def shape(conn: psycopg.Connection[Any]) -> dict[str, list[tuple[Any, ...]]]:
    """The database's shape as sorted catalog rows, one list per kind of object."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    for kind, query in _SHAPE_QUERIES.items():
        rows = conn.execute(query.format(rel=_RELATIONS).encode()).fetchall()
        out[kind] = sorted(rows, key=repr)
    return out


# A literal of each column type a release uses, for a row in every table.
_SAMPLES = {
    "uuid": "gen_random_uuid()",
    "double precision": "1.5",
    "numeric": "1.5",
    "boolean": "true",
    "timestamp with time zone": "'2024-05-06 07:08:09+00'",
    "date": "'2024-05-06'",
    "jsonb": """'{"k": 1}'""",
    "double precision[]": "'{1.5,2.5}'",
    "text[]": "'{a,b}'",
}


def _sample(kind: str, n: int) -> str:
    """A literal of the type, distinct for each n where a key may need it."""
    if kind in ("integer", "bigint", "smallint"):
        return str(n + 7)
    if kind == "text":
        return f"'sample-{n}'"
    return _SAMPLES[kind]


def fill_every_table(conn: psycopg.Connection[Any]) -> None:
    """Insert rows into every table, two per table, from the column types alone."""
    tables = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
    ).fetchall()
    if conn.execute("SELECT to_regclass('video_events')").fetchone() != (None,):
        conn.execute(
            "CREATE TABLE video_events_y2024m05 PARTITION OF video_events "
            "FOR VALUES FROM ('2024-05-01') TO ('2024-06-01')"
        )
    for (table,) in tables:
        columns = conn.execute(
            "SELECT attname, format_type(atttypid, NULL) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (table,),
        ).fetchall()
        for n in range(2):
            values = [_sample(kind, n) for _, kind in columns]
            conn.execute(
                sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                    sql.Identifier(table),
                    sql.SQL(", ").join(sql.Identifier(c) for c, _ in columns),
                    sql.SQL(", ".join(values)),
                )
            )


def table_rows(conn: psycopg.Connection[Any]) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table (partitions through their parent), as JSON objects."""
    tables = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
    ).fetchall()
    out: dict[str, list[dict[str, Any]]] = {}
    for (table,) in tables:
        query = sql.SQL("SELECT to_jsonb(t) FROM {} t").format(sql.Identifier(table))
        out[table] = sorted((r[0] for r in conn.execute(query)), key=repr)
    return out


@pytest.fixture
def make_database(service_urls: tuple[str, str]) -> Iterator[Callable[[], str]]:
    """Factory: a new empty database (its URL), dropped at the end of the test."""
    admin_url = make_conninfo(service_urls[1], dbname="postgres")
    names: list[str] = []

    def factory() -> str:
        name = f"vidpulse_mig_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        names.append(name)
        return make_conninfo(service_urls[1], dbname=name)

    yield factory
    with psycopg.connect(admin_url, autocommit=True) as admin:
        for name in names:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextmanager
def connect(url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(url, autocommit=True) as conn:
        yield conn


@pytest.mark.parametrize("release", sorted(p.name for p in RELEASES.glob("schema_*.sql")))
def test_migrating_an_earlier_release_yields_schema_sql_with_every_row_kept(
    release: str, make_database: Callable[[], str], make_settings: Callable[..., Settings]
) -> None:
    """`vidpulse migrate` on a release's database with data = a fresh schema.sql, rows kept."""
    old_url, fresh_url = make_database(), make_database()
    with connect(old_url) as conn:
        conn.execute((RELEASES / release).read_text().encode())
        fill_every_table(conn)
        before = table_rows(conn)
    assert all(before.values()), "every table of the release holds rows"

    result = run_vidpulse("migrate", env=settings_env(make_settings(database_url=old_url)))
    assert result.returncode == 0, result.stderr
    migrate(fresh_url)

    with connect(old_url) as migrated, connect(fresh_url) as fresh:
        assert shape(migrated) == shape(fresh)
        assert applied_versions(migrated) == applied_versions(fresh)
        after = table_rows(migrated)
    for table, rows in before.items():
        # Columns a migration added are not the release's data: compare the release's own.
        kept = [{k: row[k] for k in rows[0]} for row in after[table]]
        assert kept == rows, f"rows of {table} changed"


def test_fresh_database_records_every_migration_and_a_rerun_changes_nothing(
    make_database: Callable[[], str],
) -> None:
    """A fresh database is at the latest version at once; migrating again adds no record."""
    url = make_database()
    migrate(url)
    with connect(url) as conn:
        assert applied_versions(conn) == {m.version for m in migrations()}
        check_schema(conn)
        shape_before = shape(conn)
        records = conn.execute("SELECT version, applied_at FROM schema_migrations").fetchall()
    migrate(url)
    with connect(url) as conn:
        assert shape(conn) == shape_before
        assert conn.execute("SELECT version, applied_at FROM schema_migrations").fetchall() == (
            records
        )


def test_concurrent_migrates_of_an_old_release_apply_each_migration_once(
    make_database: Callable[[], str],
) -> None:
    """Four `migrate` calls at once on a release-0.1 database: each version recorded once."""
    url = make_database()
    with connect(url) as conn:
        conn.execute((RELEASES / "schema_0_1.sql").read_text().encode())
    errors: list[BaseException] = []

    def run() -> None:
        try:
            migrate(url)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    with connect(url) as conn:
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
    assert [r[0] for r in rows] == [m.version for m in migrations()]


def test_check_schema_names_the_missing_migration_and_the_command(
    make_database: Callable[[], str],
) -> None:
    """A database missing a known migration fails the check with one line saying what to run."""
    url = make_database()
    migrate(url)
    with connect(url) as conn:
        conn.execute("DELETE FROM schema_migrations WHERE version = 1")
        with pytest.raises(SchemaBehind, match=r"missing 0001_schema_migrations.*vidpulse migrate"):
            check_schema(conn)


def test_process_against_a_database_behind_exits_1_with_one_line_when_told(
    make_database: Callable[[], str], make_settings: Callable[..., Settings]
) -> None:
    """`process --exit-if-behind` on a release-0.1 database: exit 1, one line, run migrate."""
    url = make_database()
    with connect(url) as conn:
        conn.execute((RELEASES / "schema_0_1.sql").read_text().encode())
    env = settings_env(make_settings(database_url=url))
    result = run_vidpulse("process", "raw", "--exit-if-behind", env=env, timeout=60)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("vidpulse:")]
    assert len(lines) == 1, result.stderr
    assert "run `vidpulse migrate`" in lines[0]
    assert "Traceback" not in result.stderr


def test_a_failing_migration_is_rolled_back_whole_and_the_earlier_ones_stay(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    """Migrations 2 fine, 3 failing halfway: 2 recorded, nothing of 3 left, one-line reason."""
    for migration in migrations():
        (tmp_path / migration.path.name).write_text(migration.path.read_text())
    last = migrations()[-1].version
    (tmp_path / f"{last + 1:04d}_fine.sql").write_text("CREATE TABLE fine_one (id int);")
    (tmp_path / f"{last + 2:04d}_broken.sql").write_text(
        "CREATE TABLE half_done (id int); SELECT no_such_column FROM fine_one;"
    )
    url = make_database()
    with connect(url) as conn:
        conn.execute((RELEASES / "schema_0_1.sql").read_text().encode())
    with pytest.raises(MigrationFailed, match=rf"{last + 2:04d}_broken failed .*no_such_column"):
        migrate(url, directory=tmp_path)
    with connect(url) as conn:
        assert max(applied_versions(conn) or {0}) == last + 1
        assert conn.execute("SELECT to_regclass('fine_one')").fetchone() == ("fine_one",)
        assert conn.execute("SELECT to_regclass('half_done')").fetchone() == (None,)
