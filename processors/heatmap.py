"""Processor `heatmap`: views, watch seconds and drop-offs per segment of each video.

Per session it keeps, in `heatmap_sessions`, who the session belongs to, the media
it was granted (processors/sessions.py), its coverage, and its latest position and
duration with the (event time, stream order) they came from. A batch then turns into
counter deltas for `video_heatmap`:

- views: +1 for each segment the session's coverage reaches for the first time;
- watch_seconds: each event's granted ranges, split by segment, in milliseconds;
- drop_offs: -1 on the segment the session was counted in, +1 on its new one, when
  its latest position (or duration) moves.

Events of a session whose credit is not cut are counted the same in any arrival
order. Concurrent replicas lock the touched session rows, then the counter rows,
each in sorted order, so they cannot deadlock on each other or lose an update.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from processors import intervals, sessions
from processors.base import Entry, Processor
from processors.intervals import Range
from processors.sessions import Binding, Credit, EventKey
from vidpulse.settings import Settings

# Media past this point is not mapped to segments: one beacon claiming a year-long
# video must not make a batch walk millions of segments. Two days covers any real
# recording.
MAX_MEDIA_SECONDS = 2 * 24 * 3600

# Inserts the missing rows, bound to the first event of the batch naming them, and
# locks every touched row, in key order. `WHERE false` leaves existing rows
# unchanged, but ON CONFLICT DO UPDATE locks them all the same.
_LOCK_SESSIONS = """
INSERT INTO heatmap_sessions (session_id, video_id, viewer_id)
SELECT s, v, w FROM unnest(%b::text[], %b::text[], %b::text[]) AS u(s, v, w) ORDER BY s
ON CONFLICT (session_id) DO UPDATE SET session_id = excluded.session_id WHERE false
"""
_LOAD_SESSIONS = """
SELECT session_id, video_id, viewer_id, span_lo, span_hi, granted, coverage,
       position_s, position_ts, position_order, duration_s, duration_ts, duration_order,
       drop_segment
FROM heatmap_sessions WHERE session_id = ANY(%b::text[])
"""
_SAVE_SESSIONS = """
UPDATE heatmap_sessions h
SET span_lo = u.span_lo, span_hi = u.span_hi, granted = u.granted,
    coverage = u.coverage::double precision[], position_s = u.position_s,
    position_ts = u.position_ts, position_order = u.position_order,
    duration_s = u.duration_s, duration_ts = u.duration_ts,
    duration_order = u.duration_order, drop_segment = u.drop_segment
FROM unnest(%b::text[], %b::bigint[], %b::bigint[], %b::float8[], %b::text[], %b::float8[],
            %b::bigint[], %b::numeric[], %b::float8[], %b::bigint[], %b::numeric[],
            %b::integer[])
     AS u(session_id, span_lo, span_hi, granted, coverage, position_s, position_ts,
          position_order, duration_s, duration_ts, duration_order, drop_segment)
WHERE h.session_id = u.session_id
"""
_ADD_COUNTERS = """
INSERT INTO video_heatmap AS t
    (video_id, segment_start, segment_end, views, watch_seconds, drop_offs)
SELECT v, s, e, n, ms / 1000.0, d
FROM unnest(%b::text[], %b::integer[], %b::integer[], %b::bigint[], %b::bigint[],
            %b::bigint[]) AS u(v, s, e, n, ms, d)
ORDER BY 1, 2
ON CONFLICT (video_id, segment_start) DO UPDATE
SET views = t.views + excluded.views,
    watch_seconds = t.watch_seconds + excluded.watch_seconds,
    drop_offs = t.drop_offs + excluded.drop_offs
"""


@dataclass
class SessionState:
    """What the heatmap remembers of one session."""

    binding: Binding
    credit: Credit = field(default_factory=Credit)
    coverage: list[Range] = field(default_factory=list)
    position: float | None = None
    position_key: EventKey | None = None
    duration: float | None = None
    duration_key: EventKey | None = None
    drop_segment: int | None = None

    def observe(self, entry: Entry) -> None:
        """Take the event's position and duration if it is the latest carrying them."""
        event, key = entry.event, sessions.key(entry)
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
        self.millis: defaultdict[tuple[str, int], int] = defaultdict(int)
        self.drops: defaultdict[tuple[str, int], int] = defaultdict(int)

    def rows(self, size: int) -> list[tuple[str, int, int, int, int, int]]:
        keys = sorted(set(self.views) | set(self.millis) | set(self.drops))
        out = []
        for video_id, k in keys:
            views, millis, drops = (
                self.views.get((video_id, k), 0),
                self.millis.get((video_id, k), 0),
                self.drops.get((video_id, k), 0),
            )
            if views or millis or drops:
                out.append((video_id, k * size, (k + 1) * size, views, millis, drops))
        return out


def apply(conn: psycopg.Connection[Any], entries: Sequence[Entry], settings: Settings) -> None:
    """Fold one batch of events into heatmap_sessions and video_heatmap."""
    size = settings.segment_seconds
    groups = sessions.by_session(entries)
    if not groups:  # a batch of bots' events only
        return
    states = lock_sessions(conn, [group[0] for group in groups.values()])
    counters = Counters()
    refused = sum(fold_session(states[k], group, counters, size) for k, group in groups.items())
    save_sessions(conn, list(states.items()))
    rows = counters.rows(size)
    if rows:
        conn.execute(_ADD_COUNTERS, [list(col) for col in zip(*rows, strict=True)])
    sessions.count_refused(conn, PROCESSOR.name, refused)


def fold_session(state: SessionState, entries: list[Entry], counters: Counters, size: int) -> int:
    """Apply one session's new events to its state, adding the resulting deltas.

    Returns how many events were refused (the session belongs to another video or viewer).
    """
    admitted, refused = state.binding.admit(entries)
    video_id = state.binding.video_id
    if video_id is None:
        return refused
    new_ranges: list[Range] = []
    for entry in admitted:
        granted = intervals.clip(state.credit.grant_event(entry), MAX_MEDIA_SECONDS)
        for k, seconds in intervals.segment_seconds(granted, size).items():
            counters.millis[(video_id, k)] += sessions.millis(seconds)
        new_ranges.extend(granted)
        state.observe(entry)
    if new_ranges:
        old = state.coverage
        for k in intervals.segments(intervals.merge(new_ranges), size):
            if intervals.overlap(old, k * size, (k + 1) * size) <= 0:
                counters.views[(video_id, k)] += 1
        state.coverage = sessions.cover(old, new_ranges)
    segment = drop_segment(state.position, state.duration, size)
    if segment != state.drop_segment:
        if state.drop_segment is not None:
            counters.drops[(video_id, state.drop_segment)] -= 1
        if segment is not None:
            counters.drops[(video_id, segment)] += 1
        state.drop_segment = segment
    return refused


def lock_sessions(conn: psycopg.Connection[Any], firsts: list[Entry]) -> dict[str, SessionState]:
    """Lock the sessions' rows in key order (creating missing ones bound to `firsts`); read them."""
    conn.execute(
        _LOCK_SESSIONS,
        (
            [e.event.session_id for e in firsts],
            [e.event.video_id for e in firsts],
            [e.event.viewer_id for e in firsts],
        ),
    )
    states: dict[str, SessionState] = {}
    for row in conn.execute(_LOAD_SESSIONS, ([e.event.session_id for e in firsts],)):
        session_id, video_id, viewer_id, lo, hi, granted, coverage = row[:7]
        pos, pos_ts, pos_order, dur, dur_ts, dur_order, drop = row[7:]
        states[session_id] = SessionState(
            binding=Binding(video_id, viewer_id),
            credit=Credit(lo, hi, granted),
            coverage=intervals.unflat(coverage),
            position=pos,
            position_key=None if pos_ts is None else (pos_ts, int(pos_order or 0)),
            duration=dur,
            duration_key=None if dur_ts is None else (dur_ts, int(dur_order or 0)),
            drop_segment=drop,
        )
    return states


def save_sessions(conn: psycopg.Connection[Any], items: list[tuple[str, SessionState]]) -> None:
    columns: list[list[Any]] = [[] for _ in range(12)]
    for session_id, s in items:
        pos_ts, pos_order = s.position_key or (None, None)
        dur_ts, dur_order = s.duration_key or (None, None)
        row = (
            session_id,
            *s.credit.columns(),
            array_literal(intervals.flat(s.coverage)),
            s.position,
            pos_ts,
            pos_order,
            s.duration,
            dur_ts,
            dur_order,
            s.drop_segment,
        )
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    conn.execute(_SAVE_SESSIONS, columns)


def array_literal(values: list[float]) -> str:
    """A float8[] literal that reads back bit-identical (repr is the shortest exact form)."""
    return "{" + ",".join(map(repr, values)) + "}"


PROCESSOR = Processor(name="heatmap", apply=apply)
