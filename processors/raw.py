"""Processor `raw`: the raw event log, `video_events`, one row per distinct event_id."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
from psycopg import sql

from processors.base import Entry, Processor
from processors.store import at
from vidpulse.settings import Settings

# Serialises partition creation between replicas of this processor.
_PARTITION_LOCK = 0x76707261

_COPY = """
COPY video_events (event_id, type, video_id, session_id, viewer_id, ts, received_at,
                   position_s, duration_s, payload, is_bot) FROM STDIN (FORMAT BINARY)
"""
# The payload goes as bytes already in jsonb's binary format (a version byte, then
# the JSON text): COPY hands them to jsonb's binary input as they are.
_COPY_TYPES = (
    "uuid", "text", "text", "text", "text", "timestamptz", "timestamptz", "float8", "float8",
    "bytea", "bool",
)  # fmt: skip
_JSONB_VERSION = b"\x01"
_INSERT_IGNORING_DUPLICATES = """
INSERT INTO video_events (event_id, type, video_id, session_id, viewer_id, ts, received_at,
                          position_s, duration_s, payload, is_bot)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s)
ON CONFLICT DO NOTHING
"""

_known_partitions: set[str] = set()


def month_start(ts: datetime) -> datetime:
    return ts.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month(start: datetime) -> datetime:
    return (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )


def partition_name(start: datetime) -> str:
    return f"video_events_y{start.year:04d}m{start.month:02d}"


def ensure_partitions(conn: psycopg.Connection[Any], months: set[datetime]) -> None:
    """Create the monthly partitions of video_events the batch needs.

    A partition is remembered only once seen to exist outside this transaction's own
    DDL (which a rollback could undo), so the cache never claims a missing table.
    """
    for start in sorted(months):
        name = partition_name(start)
        if name in _known_partitions:
            continue
        if conn.execute("SELECT to_regclass(%s)", (name,)).fetchone() != (None,):
            _known_partitions.add(name)
            continue
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF video_events "
                "FOR VALUES FROM ({}) TO ({})"
            ).format(sql.Identifier(name), sql.Literal(start), sql.Literal(next_month(start)))
        )


def row(entry: Entry) -> tuple[Any, ...]:
    e = entry.event
    return (
        e.event_id,
        e.type,
        e.video_id,
        e.session_id,
        e.viewer_id,
        at(e.ts),
        entry.received_at,
        e.position_s,
        e.duration_s,
        payload(entry),
        entry.is_bot,
    )


def payload(entry: Entry) -> bytes:
    """The row's payload in jsonb's binary form: the validated event as the stream JSON
    of the model, plus the request's user_agent and referer (which the model has no
    field for, so they cannot be in it already)."""
    body = entry.event.stream_json()
    extra = b""
    if entry.user_agent:
        extra += b',"user_agent":' + orjson.dumps(entry.user_agent)
    if entry.referer:
        extra += b',"referer":' + orjson.dumps(entry.referer)
    return _JSONB_VERSION + (body[:-1] + extra + b"}" if extra else body)


def apply(conn: psycopg.Connection[Any], entries: Sequence[Entry], settings: Settings) -> None:
    """Write the batch's events with one COPY (new partitions created first)."""
    rows = [row(entry) if entry.prepared is None else entry.prepared for entry in entries]
    months = {datetime(y, m, 1, tzinfo=UTC) for y, m in {(r[5].year, r[5].month) for r in rows}}
    ensure_partitions(conn, months)
    try:
        with conn.transaction():
            _write(conn, rows)
    except psycopg.errors.CheckViolation:
        # "No partition for row": a remembered partition is gone (an old month dropped
        # for retention, or a rolled-back creation). Forget, recreate, write again.
        _known_partitions.difference_update(partition_name(m) for m in months)
        ensure_partitions(conn, months)
        _write(conn, rows)


def _write(conn: psycopg.Connection[Any], rows: list[tuple[Any, ...]]) -> None:
    try:
        with conn.transaction(), conn.cursor() as cur, cur.copy(_COPY) as copy:
            copy.set_types(_COPY_TYPES)
            for r in rows:
                copy.write_row(r)
    except psycopg.errors.UniqueViolation:
        # Only possible for an event whose ledger entry was purged (over the retention)
        # and that comes back, e.g. from a dead-letter replay: keep the row there is.
        with conn.cursor() as cur:
            cur.executemany(
                _INSERT_IGNORING_DUPLICATES,
                [(*r[:9], r[9][len(_JSONB_VERSION) :].decode(), r[10]) for r in rows],
            )


# -- retention: whole monthly partitions older than VIDPULSE_RAW_RETENTION_DAYS -------------

_PARTITION_NAME = re.compile(r"video_events_y(\d{4})m(\d{2})")


def expired_partitions(retention_days: int, names: list[str], now: datetime) -> list[str]:
    """The partitions among `names` whose whole month ended before `now - retention_days`."""
    cutoff = now - timedelta(days=retention_days)
    expired: list[str] = []
    for name in sorted(names):
        match = _PARTITION_NAME.fullmatch(name)
        if match and next_month(datetime(int(match[1]), int(match[2]), 1, tzinfo=UTC)) <= cutoff:
            expired.append(name)
    return expired


def drop_expired_partitions(
    conn: psycopg.Connection[Any], retention_days: int, *, dry_run: bool = False
) -> list[tuple[str, int]]:
    """Drop (or, dry, only list) the expired partitions; (name, rows) of each.

    Only partitions named as this processor makes them are considered, so a default
    partition or one an operator attached is never touched.
    """
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
    names = [
        row[0]
        for row in conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'video_events'::regclass"
        )
    ]
    dropped: list[tuple[str, int]] = []
    for name in expired_partitions(retention_days, names, datetime.now(UTC)):
        table = sql.Identifier(name)
        found = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
        if not dry_run:
            conn.execute(sql.SQL("DROP TABLE {}").format(table))
            _known_partitions.discard(name)
        dropped.append((name, int(found[0]) if found else 0))
    return dropped


def purge(conn: psycopg.Connection[Any], settings: Settings) -> int:
    """Upkeep: drop the partitions past the retention; returns the rows they held."""
    return sum(rows for _, rows in drop_expired_partitions(conn, settings.raw_retention_days))


PROCESSOR = Processor(name="raw", apply=apply, purge=purge, prepare=row)
