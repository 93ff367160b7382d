"""Processor `heatmap`: views, watch seconds and drop-offs per segment of each video.

Per session it keeps, in `heatmap_sessions`, who the session belongs to, the media
it was granted (processors/sessions.py), its coverage, and its latest position and
duration (`Latest`: with the (event time, stream order) they came from). A batch then turns into
counter deltas for `video_heatmap`:

- views: +1 for each segment the session's coverage reaches for the first time;
- watch_seconds: each event's granted ranges, split by segment, in milliseconds;
- drop_offs: -1 on the segment the session was counted in, +1 on its new one, when
  its latest position (or duration) moves.

Events of a session whose credit is not cut are counted the same in any arrival
order. The session rows are a keyed store (processors/store.py), locked in sorted
order, then the counter rows in sorted order, so concurrent replicas cannot
deadlock on each other or lose an update.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import psycopg

from processors import arrays, intervals, sessions, store
from processors.base import Entry, keyed
from processors.intervals import Range
from processors.sessions import Binding, Credit
from processors.store import Batch, Latest, Store
from vidpulse.settings import Settings

# Media past this point is not mapped to segments: one beacon claiming a year-long
# video must not make a batch walk millions of segments. Two days covers any real
# recording.
MAX_MEDIA_SECONDS = 2 * 24 * 3600

_COUNTER_TYPES = ("text", "integer", "integer", "bigint", "bigint", "bigint")
_ADD_COUNTERS = """
INSERT INTO video_heatmap AS t
    (video_id, segment_start, segment_end, views, watch_seconds, drop_offs)
SELECT v, s, e, n, ms / 1000.0, d
FROM unnest(%t::text[], %t::integer[], %t::integer[], %t::bigint[], %t::bigint[],
            %t::bigint[]) AS u(v, s, e, n, ms, d)
ORDER BY 1, 2
ON CONFLICT (video_id, segment_start) DO UPDATE
SET views = t.views + excluded.views,
    watch_seconds = t.watch_seconds + excluded.watch_seconds,
    drop_offs = t.drop_offs + excluded.drop_offs
"""


@dataclass(slots=True)
class SessionState:
    """What the heatmap remembers of one session."""

    binding: Binding
    credit: Credit = field(default_factory=Credit)
    coverage: list[Range] = field(default_factory=list)
    position: Latest[float] = field(default_factory=Latest)
    duration: Latest[float] = field(default_factory=Latest)
    drop_segment: int | None = None


STORE = Store(
    "heatmap_sessions",
    "session_id",
    [
        sessions.BINDING,
        sessions.CREDIT,
        store.ranges("coverage"),
        store.latest("position", "float8", "position_s"),
        store.latest("duration", "float8", "duration_s"),
        store.column("drop_segment", "integer"),
    ],
    SessionState,
    created=sessions.CREATED,
    create=sessions.created,
)


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


def fold(conn: psycopg.Connection[Any], batch: Batch[SessionState], settings: Settings) -> None:
    """Fold one batch into its sessions' states and add the deltas to video_heatmap."""
    size = settings.segment_seconds
    counters = Counters()
    for key, group in batch.groups.items():
        batch.refused += fold_session(batch.states[key], group, counters, size)
    rows = counters.rows(size)
    if rows:
        conn.execute(_ADD_COUNTERS, arrays.params(store.columns(rows, 6), _COUNTER_TYPES))


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
        e, key = entry.event, sessions.key(entry)
        state.position.offer(e.position_s, key)
        state.duration.offer(e.duration_s, key)
    if new_ranges:
        old = state.coverage
        for k in intervals.segments(intervals.merge(new_ranges), size):
            if intervals.overlap(old, k * size, (k + 1) * size) <= 0:
                counters.views[(video_id, k)] += 1
        state.coverage = sessions.cover(old, new_ranges)
    segment = drop_segment(state.position.value, state.duration.value, size)
    if segment != state.drop_segment:
        if state.drop_segment is not None:
            counters.drops[(video_id, state.drop_segment)] -= 1
        if segment is not None:
            counters.drops[(video_id, segment)] += 1
        state.drop_segment = segment
    return refused


PROCESSOR = keyed("heatmap", STORE, fold)
