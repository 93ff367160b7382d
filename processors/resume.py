"""Resume rows (`video_watch_progress`): one per (viewer, video), over all the viewer's
sessions of the video as processor `progress` keeps them.

Once a batch's sessions are loaded (and locked), the rows of the (viewer, video) pairs
they are bound to are locked (creating missing ones, in sorted order), and the pairs'
other sessions are read from `progress_sessions` (one index lookup per pair); once the
sessions are folded, the rows are recomputed from all the pair's sessions: those of
the batch as they are in memory, and the others. Concurrent replicas cannot lose each
other's updates.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg

from processors import arrays, store
from processors.completion import percent
from processors.store import EventKey, Latest, at, ms

if TYPE_CHECKING:
    from processors.progress import SessionState

PairKey = tuple[str, str]  # (viewer_id, video_id)

_LOCK_PAIRS = """
INSERT INTO video_watch_progress (viewer_id, video_id)
SELECT v, w FROM unnest(%t::text[], %t::text[]) AS u(v, w) ORDER BY 1, 2
ON CONFLICT (viewer_id, video_id) DO UPDATE SET viewer_id = excluded.viewer_id WHERE false
"""
# The pairs' other sessions, looked up pair by pair in the (viewer_id, video_id) index
# (OFFSET 0 keeps the planner from turning the lookups into a scan of the table); `own`
# is a session of the pair in the batch, which is not read back.
_LOAD_SESSIONS = """
SELECT s.*
FROM unnest(%t::text[], %t::text[], %t::text[]) AS u(viewer_id, video_id, own)
CROSS JOIN LATERAL (
    SELECT session_id, viewer_id, video_id, position_s, position_ts, position_order,
           duration_s, duration_ts, duration_order, course_id, course_ts, course_order,
           lesson_id, lesson_ts, lesson_order, first_ts, last_ts, completed_at
    FROM progress_sessions p
    WHERE p.viewer_id = u.viewer_id AND p.video_id = u.video_id AND p.session_id <> u.own
    OFFSET 0
) s
"""
_PAIR_TYPES = ("text", "text", "float8", "float8", "numeric", "boolean", "timestamptz",
               "timestamptz", "timestamptz", "text", "text")  # fmt: skip
_SAVE_PAIRS = """
UPDATE video_watch_progress p
SET position_s = u.position_s, duration_s = u.duration_s, progress_pct = u.progress_pct,
    completed = u.completed, completed_at = u.completed_at,
    first_watched_at = u.first_watched_at, last_watched_at = u.last_watched_at,
    course_id = u.course_id, lesson_id = u.lesson_id
FROM unnest(%t::text[], %t::text[], %b::float8[], %b::float8[], %t::numeric[], %t::boolean[],
            %b::timestamptz[], %b::timestamptz[], %b::timestamptz[], %t::text[], %t::text[])
     AS u(viewer_id, video_id, position_s, duration_s, progress_pct, completed, completed_at,
          first_watched_at, last_watched_at, course_id, lesson_id)
WHERE p.viewer_id = u.viewer_id AND p.video_id = u.video_id
"""


@dataclass(slots=True)
class Resume:
    """One resume row, folded over the pair's sessions."""

    position: Latest[float] = field(default_factory=Latest)
    duration: Latest[float] = field(default_factory=Latest)
    course: Latest[str] = field(default_factory=Latest)
    lesson: Latest[str] = field(default_factory=Latest)
    first_ts: int | None = None
    last_ts: int | None = None
    completed_at: int | None = None

    def add(
        self,
        position: tuple[float | None, EventKey | None],
        duration: tuple[float | None, EventKey | None],
        course: tuple[str | None, EventKey | None],
        lesson: tuple[str | None, EventKey | None],
        first_ts: int | None,
        last_ts: int | None,
        completed_at: int | None,
    ) -> None:
        """Fold one session in: latest values by their keys, earliest and latest times."""
        _offer(self.position, *position)
        _offer(self.duration, *duration)
        _offer(self.course, *course)
        _offer(self.lesson, *lesson)
        if first_ts is not None:
            self.first_ts = first_ts if self.first_ts is None else min(self.first_ts, first_ts)
        if last_ts is not None:
            self.last_ts = last_ts if self.last_ts is None else max(self.last_ts, last_ts)
        if completed_at is not None:
            self.completed_at = (
                completed_at if self.completed_at is None else min(self.completed_at, completed_at)
            )

    def row(self, pair: PairKey) -> tuple[Any, ...]:
        return _row(
            pair,
            self.position.value,
            self.duration.value,
            self.completed_at,
            self.first_ts,
            self.last_ts,
            self.course.value,
            self.lesson.value,
        )


def _offer(latest: Latest[Any], value: Any, key: EventKey | None) -> None:
    if key is not None:
        latest.offer(value, key)


def _key(ts: int | None, order: Any) -> EventKey | None:
    return None if ts is None else (ts, 0 if order is None else order)


@dataclass
class Begun:
    """The resume rows of a batch's pairs, locked, and their other sessions on the way."""

    pairs: list[PairKey]
    others: psycopg.Cursor[Any] | None


def _by_pair(states: Mapping[str, SessionState]) -> defaultdict[PairKey, list[str]]:
    """The batch's sessions per (viewer, video) pair they are bound to."""
    by_pair: defaultdict[PairKey, list[str]] = defaultdict(list)
    for session_id, state in states.items():
        pair = state.pair
        if pair is not None:
            by_pair[pair].append(session_id)
    return by_pair


def begin(conn: psycopg.Connection[Any], states: Mapping[str, SessionState]) -> Begun:
    """Lock the resume rows of the pairs the sessions `states` are bound to (creating
    missing ones, in sorted order), and send for the pairs' other sessions.

    Runs as soon as the sessions are loaded: a session is bound to its pair from its
    first event on, so the fold changes no pair, and the statements run while it does
    (in a pipeline, see processors/base.py).
    """
    by_pair = _by_pair(states)
    if not by_pair:
        return Begun([], None)
    pairs = sorted(by_pair)
    viewers = arrays.literal([p[0] for p in pairs], "text")
    videos = arrays.literal([p[1] for p in pairs], "text")
    conn.execute(_LOCK_PAIRS, (viewers, videos))
    owns = arrays.literal([by_pair[p][0] for p in pairs], "text")
    return Begun(pairs, conn.execute(_LOAD_SESSIONS, (viewers, videos, owns)))


def finish(conn: psycopg.Connection[Any], states: Mapping[str, SessionState], begun: Begun) -> None:
    """Recompute the resume rows `begin` locked, from the sessions as folded."""
    ids_by_pair = _by_pair(states)
    if not ids_by_pair:
        return
    by_pair = {pair: [states[s] for s in ids] for pair, ids in ids_by_pair.items()}
    rows_read = [] if begun.others is None else list(begun.others)
    # A session whose row had no pair (none does: rows are made bound) took one in the
    # fold: its pair is locked and read now, out of the global order but never lost.
    extra = sorted(set(by_pair).difference(begun.pairs))
    if extra:
        late = begin(conn, {ids_by_pair[p][0]: states[ids_by_pair[p][0]] for p in extra})
        rows_read += list(late.others or ())
    pairs = sorted(set(by_pair))
    others: defaultdict[PairKey, list[tuple[Any, ...]]] = defaultdict(list)
    for row in rows_read:
        if row[0] not in states:  # the batch's own sessions are taken as folded
            others[(row[1], row[2])].append(row)
    rows = []
    for pair in pairs:
        group, more = by_pair[pair], others.get(pair)
        if len(group) == 1 and not more:  # the usual case: one session of the pair
            s = group[0]
            rows.append(
                _row(pair, s.position.value, s.duration.value, s.completed_at, s.first_ts,
                     s.last_ts, s.course.value, s.lesson.value)
            )  # fmt: skip
            continue
        resume = Resume()
        for s in group:
            resume.add(
                (s.position.value, s.position.key),
                (s.duration.value, s.duration.key),
                (s.course.value, s.course.key),
                (s.lesson.value, s.lesson.key),
                s.first_ts,
                s.last_ts,
                s.completed_at,
            )
        for row in more or ():
            completed: datetime | None = row[17]
            resume.add(
                (row[3], _key(row[4], row[5])),
                (row[6], _key(row[7], row[8])),
                (row[9], _key(row[10], row[11])),
                (row[12], _key(row[13], row[14])),
                row[15],
                row[16],
                ms(completed),
            )
        rows.append(resume.row(pair))
    conn.execute(_SAVE_PAIRS, arrays.params(store.columns(rows, len(_PAIR_TYPES)), _PAIR_TYPES))


def _row(
    pair: PairKey,
    position: float | None,
    duration: float | None,
    completed_at: int | None,
    first_ts: int | None,
    last_ts: int | None,
    course_id: str | None,
    lesson_id: str | None,
) -> tuple[Any, ...]:
    """A video_watch_progress row (the columns of _SAVE_PAIRS)."""
    return (
        *pair,
        position,
        duration,
        None if position is None else percent(position, duration),
        completed_at is not None,
        at(completed_at),
        at(first_ts),
        at(last_ts),
        course_id,
        lesson_id,
    )
