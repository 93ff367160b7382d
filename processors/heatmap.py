"""Processor `heatmap`: views, watch seconds and drop-offs per segment of each video.

Per (video, session) it keeps, in `heatmap_sessions`, the session's coverage and its
latest position and duration with the (ts, event_id) they came from. A batch then
turns into counter deltas for `video_heatmap`:

- views: +1 for each segment the session's coverage reaches for the first time;
- watch_seconds: each event's merged ranges, split by segment;
- drop_offs: -1 on the segment the session was counted in, +1 on its new one, when
  its latest position (or duration) moves.

All three are functions of the set of events applied, so any arrival order gives the
same table. Concurrent replicas lock the touched session rows, then the counter rows,
each in sorted order, so they cannot deadlock on each other or lose an update.
"""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from processors import intervals
from processors.base import Entry, Processor
from processors.intervals import Range
from vidpulse.events import Event
from vidpulse.settings import Settings

# Media past this point is not mapped to segments: the contract bounds no duration,
# and one beacon claiming a year-long video must not make a batch walk millions of
# segments. Two days covers any real recording.
MAX_MEDIA_SECONDS = 2 * 24 * 3600

SessionKey = tuple[str, str]  # (video_id, session_id)
EventKey = tuple[int, uuid.UUID]  # (ts, event_id): UUIDs order like their text

# Inserts the missing rows and locks every touched row, in key order. `WHERE false`
# leaves existing rows unchanged, but ON CONFLICT DO UPDATE locks them all the same.
_LOCK_SESSIONS = """
INSERT INTO heatmap_sessions (video_id, session_id)
SELECT v, s FROM unnest(%b::text[], %b::text[]) AS u(v, s) ORDER BY v, s
ON CONFLICT (video_id, session_id) DO UPDATE SET video_id = excluded.video_id WHERE false
"""
_LOAD_SESSIONS = """
SELECT h.video_id, h.session_id, h.coverage, h.position_s, h.position_ts, h.position_event,
       h.duration_s, h.duration_ts, h.duration_event, h.drop_segment
FROM heatmap_sessions h
JOIN unnest(%b::text[], %b::text[]) AS u(v, s) ON h.video_id = u.v AND h.session_id = u.s
"""
_SAVE_SESSIONS = """
UPDATE heatmap_sessions h
SET coverage = u.coverage::double precision[], position_s = u.position_s,
    position_ts = u.position_ts, position_event = u.position_event,
    duration_s = u.duration_s, duration_ts = u.duration_ts,
    duration_event = u.duration_event, drop_segment = u.drop_segment
FROM unnest(%b::text[], %b::text[], %b::text[], %b::float8[], %b::bigint[], %b::uuid[],
            %b::float8[], %b::bigint[], %b::uuid[], %b::integer[])
     AS u(video_id, session_id, coverage, position_s, position_ts, position_event,
          duration_s, duration_ts, duration_event, drop_segment)
WHERE h.video_id = u.video_id AND h.session_id = u.session_id
"""
_ADD_COUNTERS = """
INSERT INTO video_heatmap AS t
    (video_id, segment_start, segment_end, views, watch_seconds, drop_offs)
SELECT * FROM unnest(%b::text[], %b::integer[], %b::integer[], %b::bigint[], %b::float8[],
                     %b::bigint[]) AS u
ORDER BY 1, 2
ON CONFLICT (video_id, segment_start) DO UPDATE
SET views = t.views + excluded.views,
    watch_seconds = t.watch_seconds + excluded.watch_seconds,
    drop_offs = t.drop_offs + excluded.drop_offs
"""


@dataclass
class SessionState:
    """What the heatmap remembers of one session of one video."""

    coverage: list[Range]
    position: float | None = None
    position_key: EventKey | None = None
    duration: float | None = None
    duration_key: EventKey | None = None
    drop_segment: int | None = None

    def observe(self, event: Event) -> None:
        """Take the event's position and duration if it is the latest carrying them."""
        key = (event.ts, event.event_id)
        if event.position_s is not None and (self.position_key is None or key > self.position_key):
            self.position, self.position_key = event.position_s, key
        if event.duration_s is not None and (self.duration_key is None or key > self.duration_key):
            self.duration, self.duration_key = event.duration_s, key


def drop_segment(position: float | None, duration: float | None, size: int) -> int | None:
    """The segment a session with this latest position and duration drops off in.

    min(⌊p/S⌋, ⌈d/S⌉ - 1): a position at (or, by the player's rounding, past) the end
    belongs to the last segment. Without a known duration, ⌊p/S⌋. Both are capped at
    MAX_MEDIA_SECONDS.
    """
    if position is None:
        return None
    end = MAX_MEDIA_SECONDS if duration is None else min(duration, MAX_MEDIA_SECONDS)
    return min(math.floor(min(position, MAX_MEDIA_SECONDS) / size), math.ceil(end / size) - 1)


class Counters:
    """Deltas for video_heatmap rows, gathered over one batch."""

    def __init__(self) -> None:
        self.views: defaultdict[tuple[str, int], int] = defaultdict(int)
        self.seconds: defaultdict[tuple[str, int], float] = defaultdict(float)
        self.drops: defaultdict[tuple[str, int], int] = defaultdict(int)

    def rows(self, size: int) -> list[tuple[str, int, int, int, float, int]]:
        keys = sorted(set(self.views) | set(self.seconds) | set(self.drops))
        out = []
        for video_id, k in keys:
            views, seconds, drops = (
                self.views.get((video_id, k), 0),
                self.seconds.get((video_id, k), 0.0),
                self.drops.get((video_id, k), 0),
            )
            if views or seconds or drops:
                out.append((video_id, k * size, (k + 1) * size, views, seconds, drops))
        return out


def apply(conn: psycopg.Connection[Any], entries: Sequence[Entry], settings: Settings) -> None:
    """Fold one batch of events into heatmap_sessions and video_heatmap."""
    size = settings.segment_seconds
    by_session: defaultdict[SessionKey, list[Event]] = defaultdict(list)
    for entry in entries:
        if entry.is_bot:
            continue
        e = entry.event
        by_session[(e.video_id, e.session_id)].append(e)
    keys = sorted(by_session)
    if not keys:
        return
    states = lock_sessions(conn, keys)
    counters = Counters()
    for key in keys:
        fold_session(key, states[key], by_session[key], counters, size)
    save_sessions(conn, [(key, states[key]) for key in keys])
    rows = counters.rows(size)
    if rows:
        conn.execute(_ADD_COUNTERS, [list(col) for col in zip(*rows, strict=True)])


def fold_session(
    key: SessionKey, state: SessionState, events: list[Event], counters: Counters, size: int
) -> None:
    """Apply one session's new events to its state, adding the resulting deltas."""
    video_id = key[0]
    new_ranges: list[Range] = []
    for event in events:
        d = event.duration_s
        ranges = intervals.played(event.played, None if d is None else min(d, MAX_MEDIA_SECONDS))
        for k, seconds in intervals.segment_seconds(ranges, size).items():
            counters.seconds[(video_id, k)] += seconds
        new_ranges.extend(ranges)
        state.observe(event)
    if new_ranges:
        old = state.coverage
        for k in intervals.segments(intervals.merge(new_ranges), size):
            if intervals.overlap(old, k * size, (k + 1) * size) <= 0:
                counters.views[(video_id, k)] += 1
        state.coverage = intervals.union(old, new_ranges)
    segment = drop_segment(state.position, state.duration, size)
    if segment != state.drop_segment:
        if state.drop_segment is not None:
            counters.drops[(video_id, state.drop_segment)] -= 1
        if segment is not None:
            counters.drops[(video_id, segment)] += 1
        state.drop_segment = segment


def lock_sessions(
    conn: psycopg.Connection[Any], keys: list[SessionKey]
) -> dict[SessionKey, SessionState]:
    """Lock (creating where missing) the sessions' rows in key order and read them."""
    videos, sessions = [k[0] for k in keys], [k[1] for k in keys]
    conn.execute(_LOCK_SESSIONS, (videos, sessions))
    states: dict[SessionKey, SessionState] = {}
    for row in conn.execute(_LOAD_SESSIONS, (videos, sessions)):
        video_id, session_id, coverage, pos, pos_ts, pos_ev, dur, dur_ts, dur_ev, drop = row
        states[(video_id, session_id)] = SessionState(
            coverage=intervals.unflat(coverage),
            position=pos,
            position_key=None if pos_ts is None else (pos_ts, pos_ev),
            duration=dur,
            duration_key=None if dur_ts is None else (dur_ts, dur_ev),
            drop_segment=drop,
        )
    return states


def save_sessions(
    conn: psycopg.Connection[Any], items: list[tuple[SessionKey, SessionState]]
) -> None:
    columns: list[list[Any]] = [[] for _ in range(10)]
    for (video_id, session_id), s in items:
        pos_ts, pos_ev = s.position_key or (None, None)
        dur_ts, dur_ev = s.duration_key or (None, None)
        row = (
            video_id,
            session_id,
            array_literal(intervals.flat(s.coverage)),
            s.position,
            pos_ts,
            pos_ev,
            s.duration,
            dur_ts,
            dur_ev,
            s.drop_segment,
        )
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    conn.execute(_SAVE_SESSIONS, columns)


def array_literal(values: list[float]) -> str:
    """A float8[] literal that reads back bit-identical (repr is the shortest exact form)."""
    return "{" + ",".join(map(repr, values)) + "}"


PROCESSOR = Processor(name="heatmap", apply=apply)
