"""`vidpulse forget VIEWER_ID`: erase one viewer from every table, key and stream entry.

1. Record the viewer (hashed) in `forgotten_viewers`, under the forget lock: from its
   commit on, every processor drops the viewer's events made before the erasure,
   including those it has read but not committed (processors/forgotten.py).
2. Delete the viewer's stream entries, processed or not, and dead letters (XDEL).
3. Delete the viewer's rows: every table with a viewer_id column (the raw log, all
   its partitions, the sessions, the resume rows), the working rows of the viewer's
   sessions (tables keyed by session_id), and their members of the distinct counts.
   The aggregates (video_heatmap, video_metrics, video_metrics_daily) keep their
   counts: they hold no id. A viewer who comes back later is a new viewer to them.
4. Delete the Redis keys named after them (milestone dedupe keys, compatibility-route sessions).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
import redis
from psycopg import sql

from processors import forgotten
from vidpulse.keys import Keys, text

VIEWER_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

# metrics_members kinds whose member is a session id; every other kind holds a viewer id.
_SESSION_KINDS = ["view", "completion"]
_MEMBER_TABLES = ("metrics_members", "metrics_daily_members")
_PAGE = 1000

_RECORD = """
INSERT INTO forgotten_viewers (viewer_hash) VALUES (%s)
ON CONFLICT (viewer_hash) DO UPDATE SET forgotten_at = now()
"""
# Tables (not views, not partitions: deleting from the parent reaches them) of the
# current schema that have the column.
_TABLES_WITH = """
SELECT c.relname FROM pg_class c
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = %s AND NOT a.attisdropped
WHERE c.relnamespace = current_schema()::regnamespace
  AND c.relkind IN ('r', 'p') AND NOT c.relispartition
ORDER BY c.relname
"""
# The viewer's sessions: those they own in progress, and those of their events that
# belong to no one else (bot sessions, sessions not processed yet).
_SESSIONS = """
SELECT session_id FROM progress_sessions WHERE viewer_id = %(v)s
UNION
SELECT DISTINCT e.session_id FROM video_events e
WHERE e.viewer_id = %(v)s AND NOT EXISTS (
    SELECT 1 FROM progress_sessions p WHERE p.session_id = e.session_id AND p.viewer_id <> %(v)s
)
"""


class BadViewerId(ValueError):
    """The id does not match the contract's id alphabet."""


@dataclass
class Erased:
    """What one erasure deleted."""

    rows: dict[str, int] = field(default_factory=dict)
    keys: int = 0
    stream_entries: int = 0
    dead_letters: int = 0
    sessions: set[str] = field(default_factory=set)
    videos: set[str] = field(default_factory=set)

    def summary(self) -> str:
        rows = ", ".join(f"{t} {n}" for t, n in sorted(self.rows.items())) or "none"
        return (
            f"forgot viewer: rows deleted: {rows}; redis keys {self.keys}; "
            f"stream entries {self.stream_entries}; dead letters {self.dead_letters}"
        )


def check_viewer_id(viewer_id: str) -> None:
    if not VIEWER_ID.fullmatch(viewer_id):
        raise BadViewerId(
            f"invalid viewer id {viewer_id[:40]!r}: 1-128 characters of A-Z a-z 0-9 . _ : -"
        )


def forget(
    conn: psycopg.Connection[Any], client: redis.Redis, keys: Keys, viewer_id: str
) -> Erased:
    """Erase `viewer_id` everywhere (see the module's docstring); idempotent, so a run cut
    short is completed by running it again. `conn` is in autocommit mode."""
    check_viewer_id(viewer_id)
    erased = Erased()
    with conn.transaction():
        # Waits for batches in flight; those starting later see the record.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (forgotten.LOCK,))
        conn.execute(_RECORD, (forgotten.viewer_hash(viewer_id),))
    # The entries first: they name sessions that a processor may have applied while
    # another has not yet (their rows are found by session).
    for partition in range(keys.partitions):
        part = keys.partition(partition)
        erase_entries(client, part.stream, viewer_id, erased, dead=False)
        erase_entries(client, part.dlq, viewer_id, erased, dead=True)
    with conn.transaction():
        erase_rows(conn, viewer_id, erased)
    erase_keys(client, keys, viewer_id, erased)
    return erased


def erase_rows(conn: psycopg.Connection[Any], viewer_id: str, erased: Erased) -> None:
    """Delete the viewer's rows, and their sessions' rows, from every table."""
    erased.sessions.update(r[0] for r in conn.execute(_SESSIONS, {"v": viewer_id}))
    # Sessions named by stream entries but owned by another viewer are not theirs.
    owned = conn.execute(
        "SELECT session_id FROM progress_sessions WHERE session_id = ANY(%s) AND viewer_id <> %s",
        (sorted(erased.sessions), viewer_id),
    )
    erased.sessions.difference_update(r[0] for r in owned)
    sessions = sorted(erased.sessions)
    by_viewer = _tables_with(conn, "viewer_id")
    for table in by_viewer:
        if table in _tables_with(conn, "video_id"):
            found = _run(
                conn, "SELECT DISTINCT video_id FROM {} WHERE viewer_id = %s", table, viewer_id
            )
            erased.videos.update(r[0] for r in found)
        erased.rows[table] = _run(
            conn, "DELETE FROM {} WHERE viewer_id = %s", table, viewer_id
        ).rowcount
    for table in _tables_with(conn, "session_id"):
        if table not in by_viewer:
            deleted = _run(conn, "DELETE FROM {} WHERE session_id = ANY(%s)", table, sessions)
            erased.rows[table] = deleted.rowcount
    for table in _MEMBER_TABLES:
        found = _run(
            conn,
            "DELETE FROM {} WHERE (member = %s AND kind <> ALL(%s))"
            " OR (member = ANY(%s) AND kind = ANY(%s)) RETURNING video_id",
            table,
            viewer_id,
            _SESSION_KINDS,
            sessions,
            _SESSION_KINDS,
        )
        videos = [r[0] for r in found]
        erased.videos.update(videos)
        erased.rows[table] = len(videos)


def _run(
    conn: psycopg.Connection[Any], template: str, table: str, *params: Any
) -> psycopg.Cursor[Any]:
    """Run a statement whose {} is a table name."""
    return conn.execute(sql.SQL(template).format(sql.Identifier(table)), params)


def _tables_with(conn: psycopg.Connection[Any], column: str) -> list[str]:
    return [r[0] for r in conn.execute(_TABLES_WITH, (column,))]


def erase_entries(
    client: redis.Redis, stream: str, viewer_id: str, erased: Erased, *, dead: bool
) -> None:
    """XDEL the viewer's entries from a stream (the event stream or its dead letters)."""
    ids: list[bytes] = []
    for entry_id, event in _events(client, stream):
        if _viewer_of(event) == viewer_id:
            ids.append(entry_id)
            if isinstance(event, dict):
                erased.sessions.update(_ids(event.get("session_id")))
                erased.videos.update(_ids(event.get("video_id")))
    for i in range(0, len(ids), _PAGE):
        client.xdel(stream, *ids[i : i + _PAGE])
    if dead:
        erased.dead_letters += len(ids)
    else:
        erased.stream_entries += len(ids)


def _events(client: redis.Redis, stream: str) -> Iterator[tuple[bytes, Any]]:
    """(entry id, event field) of every entry, parsed when it is a JSON object."""
    start = "-"
    while True:
        page: Any = client.xrange(stream, min=start, count=_PAGE)
        for entry_id, fields in page:
            body = fields.get(b"event", b"")
            try:
                event = orjson.loads(body)
            except orjson.JSONDecodeError:
                event = None
            yield entry_id, event if isinstance(event, dict) else body
        if len(page) < _PAGE:
            return
        start = "(" + text(page[-1][0])


def _ids(value: Any) -> list[str]:
    return [value] if isinstance(value, str) and VIEWER_ID.fullmatch(value) else []


def _viewer_of(event: Any) -> str | None:
    """The viewer id an event names; for an unparsable one (a dead letter), a guess."""
    if isinstance(event, dict):
        viewer = event.get("viewer_id")
        return viewer if isinstance(viewer, str) else None
    found = re.search(rb'"viewer_id"\s*:\s*"([A-Za-z0-9._:-]{1,128})"', bytes(event))
    return found.group(1).decode() if found else None


def erase_keys(client: redis.Redis, keys: Keys, viewer_id: str, erased: Erased) -> None:
    """Delete the keys named after the viewer, and the compatibility-route sessions naming them."""
    erased.keys += forgotten.erase_keys(client, keys, viewer_id, erased.videos, erased.sessions)
