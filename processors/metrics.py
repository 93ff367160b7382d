"""Processor `metrics`: counters per video (`video_metrics`) and per video and UTC day
(`video_metrics_daily`).

Sessions are bound and credited by the rules of processors/sessions.py, with the
state kept in `metrics_sessions`. Sums and event counts add the batch's deltas (watch
seconds in whole milliseconds). Distinct counts (views, unique viewers, milestone
viewers, completions, completers) are exact: each (video, kind, member) is a row of
`metrics_members` (`metrics_daily_members` per day), and a count grows only by the
members a batch inserts for the first time (INSERT ... ON CONFLICT DO NOTHING
RETURNING). A completion is a session with both a `session_start` and a `complete`
event, whichever arrives first; per day it counts on the days of its complete events.
Replicas take row locks in one global order (sessions, members, daily members, video
rows, daily rows, each sorted), so they never deadlock on each other.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import psycopg

from processors import arrays, intervals, sessions, store
from processors.base import Entry, keyed
from processors.sessions import Binding, Credit
from processors.store import Batch, Field, Store
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
SELECT * FROM unnest(%t::text[], %t::text[], %t::text[]) ORDER BY 1, 2, 3
ON CONFLICT DO NOTHING
RETURNING video_id, kind
"""
_DAILY_MEMBER_TYPES = ("text", "date", "text", "text")
_ADD_DAILY_MEMBERS = """
INSERT INTO metrics_daily_members (video_id, day, kind, member)
SELECT * FROM unnest(%t::text[], %b::date[], %t::text[], %t::text[]) ORDER BY 1, 2, 3, 4
ON CONFLICT DO NOTHING
RETURNING video_id, day, kind
"""


@functools.cache
def _upsert(
    table: str, keys: tuple[str, ...], key_types: tuple[str, ...], counters: tuple[str, ...]
) -> str:
    """Add deltas to the counter rows; only `counters` of COUNTERS (the others add 0)."""
    columns = (*keys, *counters, "watch_seconds", "first_event_at", "last_event_at")
    types = _types(key_types, counters)
    sets = [f"{c} = t.{c} + excluded.{c}" for c in (*counters, "watch_seconds")]
    sets.append("first_event_at = least(t.first_event_at, excluded.first_event_at)")
    sets.append("last_event_at = greatest(t.last_event_at, excluded.last_event_at)")
    return (
        f"INSERT INTO {table} AS t ({', '.join(columns)})\n"
        f"SELECT * FROM unnest({', '.join(map(arrays.placeholder, types))}) AS u\n"
        f"ORDER BY {', '.join(str(i + 1) for i in range(len(keys)))}\n"
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {', '.join(sets)}"
    )


def _types(key_types: tuple[str, ...], counters: tuple[str, ...]) -> tuple[str, ...]:
    """The SQL types of the columns of `_upsert`'s rows."""
    return (*key_types, *["bigint"] * len(counters), "numeric", "timestamptz", "timestamptz")


_TOTALS = ("video_metrics", ("video_id",), ("text",))
_DAILY = ("video_metrics_daily", ("video_id", "day"), ("text", "date"))


@dataclass
class Delta:
    """What one batch adds to one counter row."""

    counts: defaultdict[str, int]
    watch_ms: int = 0
    first_ms: int | None = None
    last_ms: int | None = None

    @classmethod
    def empty(cls) -> Delta:
        return cls(counts=defaultdict(int))

    def add_event(self, ts: int, ms: int, count: str | None) -> None:
        self.watch_ms += ms
        if count:
            self.counts[count] += 1
        self.first_ms = ts if self.first_ms is None else min(self.first_ms, ts)
        self.last_ms = ts if self.last_ms is None else max(self.last_ms, ts)

    def values(self, counters: tuple[str, ...]) -> list[Any]:
        return [
            *(self.counts.get(c, 0) for c in counters),
            sessions.seconds(self.watch_ms),
            store.at(self.first_ms),
            store.at(self.last_ms),
        ]


@dataclass(slots=True)
class SessionState:
    """What metrics remembers of one session."""

    binding: Binding
    credit: Credit
    started: bool = False
    complete_days: list[date] = field(default_factory=list)


STORE = Store(
    "metrics_sessions",
    "session_id",
    [
        sessions.BINDING,
        sessions.CREDIT,
        store.column("started", "boolean"),
        Field(
            "complete_days",
            (("complete_days", "date[]"),),
            lambda column: [list(days or []) for days in column],
            lambda column: [["{" + ",".join(d.isoformat() for d in days) + "}" for days in column]],
        ),
    ],
    SessionState,
    created=sessions.CREATED,
    create=sessions.created,
)


_EPOCH_DAY = date(1970, 1, 1)


def utc_day(ts: int) -> date:
    """The UTC date of a ts in ms."""
    return _day(ts // 86_400_000)


@functools.lru_cache(maxsize=1024)
def _day(days: int) -> date:
    return _EPOCH_DAY + timedelta(days=days)


def memberships(entry: Entry) -> list[tuple[str, str]]:
    """The (kind, member) pairs an event makes its video count, before deduplication.

    Completions are not among them: they need the session (see completions).
    """
    e = entry.event
    out = [("viewer", e.viewer_id)]
    if e.type == "session_start":
        out.append(("view", e.session_id))
    elif e.type == "milestone":
        out.append((f"m{e.milestone}", e.viewer_id))
    return out


class Deltas:
    """The deltas and memberships one batch adds."""

    def __init__(self) -> None:
        self.totals: defaultdict[str, Delta] = defaultdict(Delta.empty)
        self.daily: defaultdict[tuple[str, date], Delta] = defaultdict(Delta.empty)
        self.members: set[tuple[str, str, str]] = set()
        self.daily_members: set[tuple[str, date, str, str]] = set()

    def member(self, video_id: str, day: date, kind: str, member: str) -> None:
        self.members.add((video_id, kind, member))
        self.daily_members.add((video_id, day, kind, member))


def fold_session(state: SessionState, entries: list[Entry], batch: Deltas) -> int:
    """Add one session's new events to the batch; returns how many were refused."""
    was_started = state.started
    days = state.complete_days
    new_days: list[date] = []
    admitted, refused = state.binding.admit(entries)
    credit = state.credit
    for entry in admitted:
        e = entry.event
        day = utc_day(e.ts)
        # The session's viewer is a member already for its video if an event of the
        # session was applied before (it went in with it), and for the days of the
        # session's smallest and greatest ts so far: no need to insert it again.
        lo, hi = credit.lo_ms, credit.hi_ms
        counted = () if lo is None or hi is None else (utc_day(lo), utc_day(hi))
        ms = sessions.millis(intervals.total(credit.grant_event(entry)))
        count = TYPE_COUNTS.get(e.type)
        batch.totals[e.video_id].add_event(e.ts, ms, count)
        batch.daily[(e.video_id, day)].add_event(e.ts, ms, count)
        for kind, member in memberships(entry):
            if kind != "viewer" or not counted:
                batch.member(e.video_id, day, kind, member)
            elif day not in counted:
                batch.daily_members.add((e.video_id, day, kind, member))
        if e.type == "session_start":
            state.started = True
        elif e.type == "complete" and day not in days:
            days.append(day)
            new_days.append(day)
    video_id, viewer_id = state.binding.video_id, state.binding.viewer_id
    if state.started and video_id is not None and viewer_id is not None:
        # A session counts as a completion once it has both a start and a complete
        # event: on the days of the complete events the batch brought, or, when the
        # start has just come, on every day it completed.
        for day in new_days if was_started else days:
            batch.member(video_id, day, "completion", entries[0].event.session_id)
            batch.member(video_id, day, "completer", viewer_id)
    return refused


def fold(conn: psycopg.Connection[Any], batch: Batch[SessionState], settings: Settings) -> None:
    """Add one batch to video_metrics and video_metrics_daily."""
    deltas = Deltas()
    for entry in batch.entries:
        if entry.is_bot:  # counted as such, and in nothing else
            e = entry.event
            day = utc_day(e.ts)
            deltas.totals[e.video_id].counts["bot_events"] += 1
            deltas.daily[(e.video_id, day)].counts["bot_events"] += 1
    for key, group in batch.groups.items():
        batch.refused += fold_session(batch.states[key], group, deltas)
    add(conn, deltas)


def add(conn: psycopg.Connection[Any], batch: Deltas) -> None:
    """Insert the batch's members, then add its deltas to the counter rows."""
    totals, daily = batch.totals, batch.daily

    rows = sorted(batch.members)
    if rows:
        for video_id, kind in conn.execute(
            _ADD_MEMBERS, arrays.params(store.columns(rows, 3), ("text",) * 3)
        ):
            totals[video_id].counts[DISTINCT[kind]] += 1
    daily_rows = sorted(batch.daily_members)
    if daily_rows:
        for video_id, day, kind in conn.execute(
            _ADD_DAILY_MEMBERS, arrays.params(store.columns(daily_rows, 4), _DAILY_MEMBER_TYPES)
        ):
            daily[(video_id, day)].counts[DISTINCT[kind]] += 1

    _add_counters(conn, _TOTALS, {(video_id,): d for video_id, d in totals.items()})
    _add_counters(conn, _DAILY, dict(daily))


def _add_counters(
    conn: psycopg.Connection[Any],
    table: tuple[str, tuple[str, ...], tuple[str, ...]],
    deltas: dict[tuple[Any, ...], Delta],
) -> None:
    """Add the deltas to their rows, in key order; counters no row moves are left out."""
    if not deltas:
        return
    moved = {c for d in deltas.values() for c, n in d.counts.items() if n}
    counters = tuple(c for c in COUNTERS if c in moved)
    rows = [(*key, *deltas[key].values(counters)) for key in sorted(deltas)]
    types = _types(table[2], counters)
    conn.execute(_upsert(*table, counters), arrays.params(store.columns(rows, len(rows[0])), types))


def purge(conn: psycopg.Connection[Any], settings: Settings) -> int:
    """Forget daily members of days no event can land in any more.

    The all-time members stay: they are what keeps distinct counts exact forever.
    """
    return conn.execute(
        "DELETE FROM metrics_daily_members WHERE day < current_date - %s::int",
        (settings.applied_retention_days,),
    ).rowcount


PROCESSOR = keyed("metrics", STORE, fold, purge=purge)
