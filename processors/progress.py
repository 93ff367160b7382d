"""Processor `progress`: per-session engagement (`video_sessions`) and resume state
(`video_watch_progress`).

A session is bound, credited and ordered by the rules of processors/sessions.py.
Within them every value is a function of the set of events applied, never of their
arrival order: "latest" values keep the (event time, stream order) they came from
and give way only to a later one; counts and sums add up; coverage is a union.
`completed_at` is the earliest client time t at which the session's events with
ts <= t complete it; placing it needs the played ranges in ts order, which the batch
usually has at hand (events arriving in order). When a late event lands before that
moment, or the session's duration changes, the ranges are read back from
`progress_played`, which keeps at most HISTORY_RANGES ranges per session: beyond,
completed_at is no longer moved earlier by late events (see docs/processors.md).

A batch locks its sessions' rows (creating missing ones), then the touched
(viewer, video) rows, each in sorted order; the resume rows are recomputed from
the sessions' rows once those are written, so concurrent replicas cannot lose
each other's updates.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row

from processors import intervals, sessions
from processors.base import Entry, Processor
from processors.intervals import Range
from processors.sessions import Binding, Credit, EventKey
from vidpulse.agents import classify
from vidpulse.settings import Settings

# Played ranges of a session kept in progress_played to place completed_at when an
# older event arrives late; a session past it keeps its completed_at (see apply).
HISTORY_RANGES = 2048

PairKey = tuple[str, str]  # (viewer_id, video_id)

_CENT = Decimal("0.01")
_HUNDRED = Decimal(100)

# (column, type) of progress_sessions written back after each batch.
_COLUMNS: tuple[tuple[str, str], ...] = (
    ("session_id", "text"),
    ("video_id", "text"),
    ("viewer_id", "text"),
    ("first_ts", "bigint"),
    ("started_at", "timestamptz"),
    ("last_ts", "bigint"),
    ("last_event_at", "timestamptz"),
    ("span_lo", "bigint"),
    ("span_hi", "bigint"),
    ("granted", "float8"),
    ("course_id", "text"),
    ("course_ts", "bigint"),
    ("course_order", "numeric"),
    ("lesson_id", "text"),
    ("lesson_ts", "bigint"),
    ("lesson_order", "numeric"),
    ("is_preview", "boolean"),
    ("duration_s", "float8"),
    ("duration_ts", "bigint"),
    ("duration_order", "numeric"),
    ("position_s", "float8"),
    ("position_ts", "bigint"),
    ("position_order", "numeric"),
    ("max_position_s", "float8"),
    ("watch_seconds", "numeric"),
    ("coverage", "float8[]"),
    ("unique_seconds", "numeric"),
    ("completion_pct", "numeric"),
    ("complete_ts", "bigint"),
    ("completed", "boolean"),
    ("completed_at", "timestamptz"),
    ("history_ranges", "integer"),
    ("plays", "integer"),
    ("pauses", "integer"),
    ("seeks", "integer"),
    ("user_agent", "text"),
    ("user_agent_ts", "bigint"),
    ("user_agent_order", "numeric"),
    ("device_type", "text"),
    ("browser", "text"),
    ("os", "text"),
    ("referrer", "text"),
    ("referrer_ts", "bigint"),
    ("referrer_order", "numeric"),
)
_NAMES = [name for name, _ in _COLUMNS]

_LOCK_SESSIONS = """
INSERT INTO progress_sessions (session_id)
SELECT s FROM unnest(%b::text[]) AS s ORDER BY 1
ON CONFLICT (session_id) DO UPDATE SET session_id = excluded.session_id WHERE false
"""
_LOAD_SESSIONS = f"""
SELECT {", ".join(_NAMES)} FROM progress_sessions WHERE session_id = ANY(%b::text[])
"""
_SAVE_SESSIONS = """
UPDATE progress_sessions p SET {sets}
FROM unnest({params}) AS u({names})
WHERE p.session_id = u.session_id
""".format(
    # float8[] values travel as text literals: unnest would flatten a 2-D array.
    sets=", ".join(
        f"{n} = u.{n}::float8[]" if t == "float8[]" else f"{n} = u.{n}" for n, t in _COLUMNS[1:]
    ),
    params=", ".join(f"%b::{'text' if t == 'float8[]' else t}[]" for _, t in _COLUMNS),
    names=", ".join(_NAMES),
)
_SAVE_PLAYED = """
INSERT INTO progress_played (session_id, ts, ranges)
SELECT s, t, r::float8[] FROM unnest(%b::text[], %b::bigint[], %b::text[]) AS u(s, t, r)
"""
_LOAD_PLAYED = """
SELECT session_id, ts, ranges FROM progress_played WHERE session_id = ANY(%b::text[])
"""
_LOCK_PAIRS = """
INSERT INTO video_watch_progress (viewer_id, video_id)
SELECT v, w FROM unnest(%b::text[], %b::text[]) AS u(v, w) ORDER BY 1, 2
ON CONFLICT (viewer_id, video_id) DO UPDATE SET viewer_id = excluded.viewer_id WHERE false
"""
_AGGREGATE_PAIRS = """
SELECT viewer_id, video_id,
       (array_agg(position_s ORDER BY position_ts DESC, position_order DESC)
            FILTER (WHERE position_ts IS NOT NULL))[1],
       (array_agg(duration_s ORDER BY duration_ts DESC, duration_order DESC)
            FILTER (WHERE duration_ts IS NOT NULL))[1],
       bool_or(completed),
       min(completed_at) FILTER (WHERE completed),
       min(started_at),
       max(last_event_at),
       (array_agg(course_id ORDER BY course_ts DESC, course_order DESC)
            FILTER (WHERE course_ts IS NOT NULL))[1],
       (array_agg(lesson_id ORDER BY lesson_ts DESC, lesson_order DESC)
            FILTER (WHERE lesson_ts IS NOT NULL))[1]
FROM progress_sessions
WHERE (viewer_id, video_id) IN (SELECT * FROM unnest(%b::text[], %b::text[]))
GROUP BY viewer_id, video_id
"""
_SAVE_PAIRS = """
UPDATE video_watch_progress p
SET position_s = u.position_s, duration_s = u.duration_s, progress_pct = u.progress_pct,
    completed = u.completed, completed_at = u.completed_at,
    first_watched_at = u.first_watched_at, last_watched_at = u.last_watched_at,
    course_id = u.course_id, lesson_id = u.lesson_id
FROM unnest(%b::text[], %b::text[], %b::float8[], %b::float8[], %b::numeric[], %b::boolean[],
            %b::timestamptz[], %b::timestamptz[], %b::timestamptz[], %b::text[], %b::text[])
     AS u(viewer_id, video_id, position_s, duration_s, progress_pct, completed, completed_at,
          first_watched_at, last_watched_at, course_id, lesson_id)
WHERE p.viewer_id = u.viewer_id AND p.video_id = u.video_id
"""
_DELETE_PAIRS = """
DELETE FROM video_watch_progress
WHERE (viewer_id, video_id) IN (SELECT * FROM unnest(%b::text[], %b::text[]))
"""


def percent(part: float, whole: float | None) -> Decimal | None:
    """100·part/whole, at most 100, rounded half up to 2 decimals; None without a whole."""
    if whole is None:
        return None
    ratio = 100 * part / whole
    if ratio >= 100:  # also when a tiny duration makes it overflow to infinity
        return _HUNDRED
    return Decimal(ratio).quantize(_CENT, ROUND_HALF_UP)


def reached(coverage: Sequence[Range], duration: float | None, threshold: float) -> bool:
    """Whether coverage makes completion_pct reach 100·threshold."""
    pct = percent(intervals.total(coverage), duration)
    return pct is not None and pct >= Decimal(str(threshold)) * 100


def completion_time(
    base: list[Range],
    played: Sequence[tuple[int, list[Range]]],
    complete_ts: int | None,
    duration: float | None,
    threshold: float,
) -> int | None:
    """The earliest ts at which the session is completed.

    `base` is the coverage of events known to lie before all of `played` (ts, ranges);
    `complete_ts` the earliest ts of a complete event. Returns None when never.
    """
    coverage = base
    by_ts: defaultdict[int, list[Range]] = defaultdict(list)
    for ts, ranges in played:
        by_ts[ts].extend(ranges)
    for ts in sorted(by_ts):
        if complete_ts is not None and ts >= complete_ts:
            break
        coverage = intervals.union(coverage, by_ts[ts])
        if reached(coverage, duration, threshold):
            return ts
    return complete_ts


@dataclass
class SessionState:
    """What progress knows of one session; keys are the (event time, stream order) a value
    came from."""

    session_id: str
    binding: Binding = field(default_factory=Binding)
    credit: Credit = field(default_factory=Credit)
    first_ts: int | None = None
    last_ts: int | None = None
    course_id: str | None = None
    course_key: EventKey | None = None
    lesson_id: str | None = None
    lesson_key: EventKey | None = None
    is_preview: bool = False
    duration: float | None = None
    duration_key: EventKey | None = None
    position: float | None = None
    position_key: EventKey | None = None
    max_position: float | None = None
    watch_ms: int = 0
    coverage: list[Range] = field(default_factory=list)
    complete_ts: int | None = None
    completed_at: int | None = None
    history_ranges: int = 0
    plays: int = 0
    pauses: int = 0
    seeks: int = 0
    user_agent: str | None = None
    user_agent_key: EventKey | None = None
    referrer: str | None = None
    referrer_key: EventKey | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> SessionState:
        def key(prefix: str) -> EventKey | None:
            ts = row[f"{prefix}_ts"]
            return None if ts is None else (ts, int(row[f"{prefix}_order"] or 0))

        return cls(
            session_id=row["session_id"],
            binding=Binding(row["video_id"], row["viewer_id"]),
            credit=Credit(row["span_lo"], row["span_hi"], row["granted"]),
            first_ts=row["first_ts"],
            last_ts=row["last_ts"],
            course_id=row["course_id"],
            course_key=key("course"),
            lesson_id=row["lesson_id"],
            lesson_key=key("lesson"),
            is_preview=row["is_preview"],
            duration=row["duration_s"],
            duration_key=key("duration"),
            position=row["position_s"],
            position_key=key("position"),
            max_position=row["max_position_s"],
            watch_ms=int(row["watch_seconds"] * 1000),
            coverage=intervals.unflat(row["coverage"]),
            complete_ts=row["complete_ts"],
            completed_at=_ms(row["completed_at"]),
            history_ranges=row["history_ranges"],
            plays=row["plays"],
            pauses=row["pauses"],
            seeks=row["seeks"],
            user_agent=row["user_agent"],
            user_agent_key=key("user_agent"),
            referrer=row["referrer"],
            referrer_key=key("referrer"),
        )

    @property
    def pair(self) -> PairKey | None:
        if self.binding.viewer_id is None or self.binding.video_id is None:
            return None
        return (self.binding.viewer_id, self.binding.video_id)

    def observe(self, entry: Entry) -> list[Range] | None:
        """Fold one event in (all but coverage and completion); returns its granted ranges.

        None when the event is refused: the session belongs to another video or viewer.
        """
        if not self.binding.admits(entry):
            return None
        e = entry.event
        key = sessions.key(entry)
        self.first_ts = e.ts if self.first_ts is None else min(self.first_ts, e.ts)
        self.last_ts = e.ts if self.last_ts is None else max(self.last_ts, e.ts)
        if e.course_id is not None and _later(key, self.course_key):
            self.course_id, self.course_key = e.course_id, key
        if e.lesson_id is not None and _later(key, self.lesson_key):
            self.lesson_id, self.lesson_key = e.lesson_id, key
        self.is_preview = self.is_preview or e.is_preview
        if e.duration_s is not None and _later(key, self.duration_key):
            self.duration, self.duration_key = e.duration_s, key
        ranges = self.credit.grant_event(entry)
        reach = [e.position_s] if e.position_s is not None else []
        if ranges:
            reach.append(ranges[-1][1])
            self.watch_ms += sessions.millis(intervals.total(ranges))
        if e.position_s is not None and _later(key, self.position_key):
            self.position, self.position_key = e.position_s, key
        if reach:
            self.max_position = max(
                reach if self.max_position is None else [*reach, self.max_position]
            )
        if e.type == "complete" and (self.complete_ts is None or e.ts < self.complete_ts):
            self.complete_ts = e.ts
        if e.type == "play":
            self.plays += 1
        elif e.type == "pause":
            self.pauses += 1
        elif e.type == "seek":
            self.seeks += 1
        if entry.user_agent and _earlier(key, self.user_agent_key):
            self.user_agent, self.user_agent_key = entry.user_agent, key
        if entry.referer and _earlier(key, self.referrer_key):
            self.referrer, self.referrer_key = entry.referer, key
        return ranges

    @property
    def history_full(self) -> bool:
        """Whether progress_played misses some of the session's ranges."""
        return self.history_ranges > HISTORY_RANGES

    def row(self) -> tuple[Any, ...]:
        pct = percent(intervals.total(self.coverage), self.duration)
        agent = classify(self.user_agent)
        values: dict[str, Any] = {
            "session_id": self.session_id,
            "video_id": self.binding.video_id,
            "viewer_id": self.binding.viewer_id,
            "first_ts": self.first_ts,
            "started_at": _at(self.first_ts),
            "last_ts": self.last_ts,
            "last_event_at": _at(self.last_ts),
            "span_lo": self.credit.lo_ms,
            "span_hi": self.credit.hi_ms,
            "granted": self.credit.granted,
            "course_id": self.course_id,
            "lesson_id": self.lesson_id,
            "is_preview": self.is_preview,
            "duration_s": self.duration,
            "position_s": self.position,
            "max_position_s": self.max_position,
            "watch_seconds": sessions.seconds(self.watch_ms),
            "coverage": _array_literal(intervals.flat(self.coverage)),
            "unique_seconds": sessions.seconds(sessions.millis(intervals.total(self.coverage))),
            "completion_pct": pct,
            "complete_ts": self.complete_ts,
            "completed": self.completed_at is not None,
            "completed_at": _at(self.completed_at),
            "history_ranges": self.history_ranges,
            "plays": self.plays,
            "pauses": self.pauses,
            "seeks": self.seeks,
            "user_agent": self.user_agent,
            "device_type": agent.device_type,
            "browser": agent.browser,
            "os": agent.os,
            "referrer": self.referrer,
        }
        for prefix, key in (
            ("course", self.course_key),
            ("lesson", self.lesson_key),
            ("duration", self.duration_key),
            ("position", self.position_key),
            ("user_agent", self.user_agent_key),
            ("referrer", self.referrer_key),
        ):
            values[f"{prefix}_ts"], values[f"{prefix}_order"] = key or (None, None)
        return tuple(values[name] for name in _NAMES)


def fold_session(
    state: SessionState, entries: list[Entry], threshold: float
) -> tuple[list[tuple[int, list[Range]]], bool, int]:
    """Apply one session's new entries to its state.

    Returns the admitted entries' (ts, granted ranges), whether completed_at is placed
    (it is not when placing it needs the session's earlier ranges, see
    place_completions), and how many entries were refused.
    """
    old_duration, old_completed_at = state.duration, state.completed_at
    old_last_ts = state.last_ts
    old_coverage = state.coverage
    played: list[tuple[int, list[Range]]] = []
    admitted: list[int] = []
    for entry in entries:
        ranges = state.observe(entry)
        if ranges is None:
            continue
        admitted.append(entry.event.ts)
        if ranges:
            played.append((entry.event.ts, ranges))
    refused = len(entries) - len(admitted)
    if not admitted:
        return played, True, refused
    state.coverage = sessions.cover(old_coverage, [r for _, rs in played for r in rs])
    if state.complete_ts is None and not reached(state.coverage, state.duration, threshold):
        state.completed_at = None
        return played, True, refused
    if state.duration == old_duration:
        first_new = min(admitted)
        if old_completed_at is not None and first_new >= old_completed_at:
            return played, True, refused  # nothing before the moment it completed has changed
        if old_completed_at is None and (old_last_ts is None or first_new >= old_last_ts):
            # Every new event comes at or after every old one, and those did not complete it.
            state.completed_at = completion_time(
                old_coverage, played, state.complete_ts, state.duration, threshold
            )
            return played, True, refused
    if state.history_full:
        # The earlier ranges are not all kept: settle for what is known without them.
        known = [t for t in (old_completed_at, state.complete_ts) if t is not None]
        if reached(state.coverage, state.duration, threshold):
            known.append(max(admitted))
        state.completed_at = min(known) if known else None
        return played, True, refused
    return played, False, refused


def apply(conn: psycopg.Connection[Any], entries: Sequence[Entry], settings: Settings) -> None:
    """Fold one batch into progress_sessions, progress_played and video_watch_progress."""
    threshold = settings.completion_threshold
    groups = sessions.by_session(entries)
    session_ids = list(groups)
    if not session_ids:  # a batch of bots' events only
        return
    states = lock_sessions(conn, session_ids)
    pairs: set[PairKey] = set()
    new_played: list[tuple[str, int, list[Range]]] = []
    unplaced: dict[str, list[tuple[int, list[Range]]]] = {}
    refused = 0
    for session_id in session_ids:
        state = states[session_id]
        played, placed, refused_here = fold_session(state, groups[session_id], threshold)
        refused += refused_here
        if not placed:
            unplaced[session_id] = played
        new_played.extend((session_id, ts, ranges) for ts, ranges in keep(state, played))
        if state.pair:
            pairs.add(state.pair)
    if unplaced:
        place_completions(conn, {s: states[s] for s in unplaced}, unplaced, threshold)
    save_sessions(conn, [states[s] for s in session_ids])
    if new_played:
        conn.execute(
            _SAVE_PLAYED,
            (
                [s for s, _, _ in new_played],
                [ts for _, ts, _ in new_played],
                [_array_literal(intervals.flat(r)) for _, _, r in new_played],
            ),
        )
    update_pairs(conn, sorted(pairs))
    sessions.count_refused(conn, PROCESSOR.name, refused)


def keep(
    state: SessionState, played: list[tuple[int, list[Range]]]
) -> list[tuple[int, list[Range]]]:
    """Of a session's new (ts, ranges), those progress_played still has room for.

    Once a session's ranges do not all fit in HISTORY_RANGES, none are kept any more.
    """
    if state.history_full or not played:
        return []
    count = state.history_ranges + sum(len(ranges) for _, ranges in played)
    if count > HISTORY_RANGES:
        state.history_ranges = HISTORY_RANGES + 1
        return []
    state.history_ranges = count
    return played


def place_completions(
    conn: psycopg.Connection[Any],
    states: dict[str, SessionState],
    new_played: dict[str, list[tuple[int, list[Range]]]],
    threshold: float,
) -> None:
    """Recompute completed_at from all the sessions' ranges (stored ones and new ones)."""
    history: defaultdict[str, list[tuple[int, list[Range]]]] = defaultdict(list)
    for session_id, ts, ranges in conn.execute(_LOAD_PLAYED, (list(states),)):
        history[session_id].append((ts, intervals.unflat(ranges)))
    for session_id, state in states.items():
        played = history[session_id] + new_played[session_id]
        state.completed_at = completion_time(
            [], played, state.complete_ts, state.duration, threshold
        )
        if state.completed_at is None and played:
            # Only a coverage cut to MAX_COVERAGE_RANGES reaches the threshold where its
            # exact ranges do not: completed, at its latest played ts.
            state.completed_at = max(ts for ts, _ in played)


def lock_sessions(conn: psycopg.Connection[Any], session_ids: list[str]) -> dict[str, SessionState]:
    """Lock (creating where missing) the sessions' rows in sorted order and read them."""
    conn.execute(_LOCK_SESSIONS, (session_ids,))
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_LOAD_SESSIONS, (session_ids,)).fetchall()
    return {row["session_id"]: SessionState.from_row(row) for row in rows}


def save_sessions(conn: psycopg.Connection[Any], states: list[SessionState]) -> None:
    rows = [state.row() for state in states]
    conn.execute(_SAVE_SESSIONS, [list(column) for column in zip(*rows, strict=True)])


def update_pairs(conn: psycopg.Connection[Any], pairs: list[PairKey]) -> None:
    """Recompute the resume rows of `pairs` from their sessions (locking them first)."""
    if not pairs:
        return
    viewers, videos = [p[0] for p in pairs], [p[1] for p in pairs]
    conn.execute(_LOCK_PAIRS, (viewers, videos))
    rows = []
    seen: set[PairKey] = set()
    for row in conn.execute(_AGGREGATE_PAIRS, (viewers, videos)):
        viewer_id, video_id, position, duration, completed, completed_at = row[:6]
        first, last, course_id, lesson_id = row[6:]
        seen.add((viewer_id, video_id))
        pct = None if position is None else percent(position, duration)
        rows.append(
            (
                viewer_id,
                video_id,
                position,
                duration,
                pct,
                completed,
                completed_at,
                first,
                last,
                course_id,
                lesson_id,
            )
        )
    if rows:
        conn.execute(_SAVE_PAIRS, [list(column) for column in zip(*rows, strict=True)])
    gone = [p for p in pairs if p not in seen]
    if gone:  # a late first event moved a session to another pair
        conn.execute(_DELETE_PAIRS, ([p[0] for p in gone], [p[1] for p in gone]))


def _later(key: EventKey, current: EventKey | None) -> bool:
    return current is None or key > current


def _earlier(key: EventKey, current: EventKey | None) -> bool:
    return current is None or key < current


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _at(ms: int | None) -> datetime | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms // 1000, UTC).replace(microsecond=(ms % 1000) * 1000)


def _ms(at: datetime | None) -> int | None:
    if at is None:
        return None
    delta = at - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _array_literal(values: list[float]) -> str:
    return "{" + ",".join(map(repr, values)) + "}"


def purge(conn: psycopg.Connection[Any], settings: Settings) -> int:
    """Forget played ranges of events older than the ledger's retention.

    They only serve to place completed_at when an older event arrives late, and no
    event that old can arrive any more (the ingest refuses ts over 7 days old).
    """
    cutoff_ms = (
        int(datetime.now(UTC).timestamp() * 1000) - settings.applied_retention_days * 86_400_000
    )
    return conn.execute("DELETE FROM progress_played WHERE ts < %s", (cutoff_ms,)).rowcount


PROCESSOR = Processor(name="progress", apply=apply, purge=purge)
