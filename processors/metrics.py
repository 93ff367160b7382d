"""Processor `metrics`: counters per video (`video_metrics`) and per video and UTC day
(`video_metrics_daily`).

Sums and event counts add the batch's deltas. Distinct counts (views, unique viewers,
milestone viewers, completions, completers) are exact: each (video, kind, member) is a
row of `metrics_members` (`metrics_daily_members` per day), and a count grows only by
the members a batch inserts for the first time (INSERT ... ON CONFLICT DO NOTHING
RETURNING). Replicas take row locks in one global order (members, daily members,
video rows, daily rows, each sorted), so they never deadlock on each other.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import psycopg

from processors import intervals
from processors.base import Entry, Processor
from vidpulse.settings import Settings

# Distinct counts: membership kind -> counter column.
DISTINCT = {
    "view": "views",
    "viewer": "unique_viewers",
    "m25": "watched_25_count",
    "m50": "watched_50_count",
    "m75": "watched_75_count",
    "m90": "watched_90_count",
    "completion": "completions",
    "completer": "unique_completers",
}
TYPE_COUNTS = {"play": "plays", "pause": "pauses", "seek": "seeks"}
COUNTERS = (
    "views", "unique_viewers", "plays", "pauses", "seeks", "watched_25_count",
    "watched_50_count", "watched_75_count", "watched_90_count", "completions",
    "unique_completers", "bot_events",
)  # fmt: skip

_ADD_MEMBERS = """
INSERT INTO metrics_members (video_id, kind, member)
SELECT * FROM unnest(%b::text[], %b::text[], %b::text[]) ORDER BY 1, 2, 3
ON CONFLICT DO NOTHING
RETURNING video_id, kind
"""
_ADD_DAILY_MEMBERS = """
INSERT INTO metrics_daily_members (video_id, day, kind, member)
SELECT * FROM unnest(%b::text[], %b::date[], %b::text[], %b::text[]) ORDER BY 1, 2, 3, 4
ON CONFLICT DO NOTHING
RETURNING video_id, day, kind
"""


def _upsert(table: str, keys: tuple[str, ...], key_types: tuple[str, ...]) -> str:
    columns = (*keys, *COUNTERS, "watch_seconds", "first_event_at", "last_event_at")
    types = (*key_types, *["bigint"] * len(COUNTERS), "float8", "timestamptz", "timestamptz")
    sets = [f"{c} = t.{c} + excluded.{c}" for c in (*COUNTERS, "watch_seconds")]
    sets.append("first_event_at = least(t.first_event_at, excluded.first_event_at)")
    sets.append("last_event_at = greatest(t.last_event_at, excluded.last_event_at)")
    return (
        f"INSERT INTO {table} AS t ({', '.join(columns)})\n"
        f"SELECT * FROM unnest({', '.join(f'%b::{t}[]' for t in types)}) AS u\n"
        f"ORDER BY {', '.join(str(i + 1) for i in range(len(keys)))}\n"
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {', '.join(sets)}"
    )


_ADD_TOTALS = _upsert("video_metrics", ("video_id",), ("text",))
_ADD_DAILY = _upsert("video_metrics_daily", ("video_id", "day"), ("text", "date"))


@dataclass
class Delta:
    """What one batch adds to one counter row."""

    counts: defaultdict[str, int]
    watch_seconds: float = 0.0
    first_ms: int | None = None
    last_ms: int | None = None

    @classmethod
    def empty(cls) -> Delta:
        return cls(counts=defaultdict(int))

    def add_event(self, ts: int, seconds: float, count: str | None) -> None:
        self.watch_seconds += seconds
        if count:
            self.counts[count] += 1
        self.first_ms = ts if self.first_ms is None else min(self.first_ms, ts)
        self.last_ms = ts if self.last_ms is None else max(self.last_ms, ts)

    def values(self) -> list[Any]:
        return [
            *(self.counts.get(c, 0) for c in COUNTERS),
            self.watch_seconds,
            _at(self.first_ms),
            _at(self.last_ms),
        ]


def memberships(entry: Entry) -> list[tuple[str, str]]:
    """The (kind, member) pairs an event makes its video count, before deduplication."""
    e = entry.event
    out = [("viewer", e.viewer_id)]
    if e.type == "session_start":
        out.append(("view", e.session_id))
    elif e.type == "milestone":
        out.append((f"m{e.milestone}", e.viewer_id))
    elif e.type == "complete":
        out.append(("completion", e.session_id))
        out.append(("completer", e.viewer_id))
    return out


def apply(conn: psycopg.Connection[Any], entries: Sequence[Entry], settings: Settings) -> None:
    """Add one batch to video_metrics and video_metrics_daily."""
    totals: defaultdict[str, Delta] = defaultdict(Delta.empty)
    daily: defaultdict[tuple[str, date], Delta] = defaultdict(Delta.empty)
    members: set[tuple[str, str, str]] = set()
    daily_members: set[tuple[str, date, str, str]] = set()
    for entry in entries:
        e = entry.event
        day = datetime.fromtimestamp(e.ts / 1000, UTC).date()
        if entry.is_bot:  # counted as such, and in nothing else
            totals[e.video_id].counts["bot_events"] += 1
            daily[(e.video_id, day)].counts["bot_events"] += 1
            continue
        seconds = intervals.total(intervals.played(e.played, e.duration_s))
        count = TYPE_COUNTS.get(e.type)
        totals[e.video_id].add_event(e.ts, seconds, count)
        daily[(e.video_id, day)].add_event(e.ts, seconds, count)
        for kind, member in memberships(entry):
            members.add((e.video_id, kind, member))
            daily_members.add((e.video_id, day, kind, member))

    rows = sorted(members)
    for video_id, kind in conn.execute(_ADD_MEMBERS, _columns(rows, 3)):
        totals[video_id].counts[DISTINCT[kind]] += 1
    daily_rows = sorted(daily_members)
    for video_id, day, kind in conn.execute(_ADD_DAILY_MEMBERS, _columns(daily_rows, 4)):
        daily[(video_id, day)].counts[DISTINCT[kind]] += 1

    total_rows = [(video_id, *totals[video_id].values()) for video_id in sorted(totals)]
    conn.execute(_ADD_TOTALS, _columns(total_rows, len(total_rows[0])))
    daily_rows_out = [(*key, *daily[key].values()) for key in sorted(daily)]
    conn.execute(_ADD_DAILY, _columns(daily_rows_out, len(daily_rows_out[0])))


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows as one list per column, the shape unnest takes."""
    return [[row[i] for row in rows] for i in range(width)]


def _at(ms: int | None) -> datetime | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms // 1000, UTC).replace(microsecond=(ms % 1000) * 1000)


def purge(conn: psycopg.Connection[Any], settings: Settings) -> int:
    """Forget daily members of days no event can land in any more.

    The all-time members stay: they are what keeps distinct counts exact forever.
    """
    return conn.execute(
        "DELETE FROM metrics_daily_members WHERE day < current_date - %s::int",
        (settings.applied_retention_days,),
    ).rowcount


PROCESSOR = Processor(name="metrics", apply=apply, purge=purge)
