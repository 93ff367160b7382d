"""Processor `progress`: per-session engagement (`video_sessions`) and resume state
(`video_watch_progress`).

A session is bound, credited and ordered by the rules of processors/sessions.py.
Within them every value is a function of the set of events applied, never of their
arrival order: "latest" values (`Latest`) keep the (event time, stream order) they
came from and give way only to a later one; counts and sums add up; coverage is a
union. The session rows are a keyed store (processors/store.py): created, locked in
sorted order, read, folded and written back per batch. `completed_at` is placed by
processors/completion.py; processors/resume.py locks the resume rows of their
(viewer, video) pairs once they are loaded, and recomputes them once they are folded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from processors import completion, intervals, resume, sessions, store
from processors.base import Entry, Settle, keyed
from processors.completion import Played
from processors.intervals import Range
from processors.sessions import Binding, Credit
from processors.store import Batch, Earliest, Field, Latest, Store
from vidpulse.agents import classify
from vidpulse.settings import Settings


@dataclass(slots=True)
class SessionState:
    """What progress knows of one session."""

    binding: Binding = field(default_factory=Binding)
    credit: Credit = field(default_factory=Credit)
    first_ts: int | None = None
    last_ts: int | None = None
    course: Latest[str] = field(default_factory=Latest)
    lesson: Latest[str] = field(default_factory=Latest)
    is_preview: bool = False
    duration: Latest[float] = field(default_factory=Latest)
    position: Latest[float] = field(default_factory=Latest)
    max_position: float | None = None
    watch_ms: int = 0
    coverage: list[Range] = field(default_factory=list)
    complete_ts: int | None = None
    completed_at: int | None = None
    history_ranges: int = 0
    plays: int = 0
    pauses: int = 0
    seeks: int = 0
    user_agent: Earliest[str] = field(default_factory=Earliest)
    referrer: Earliest[str] = field(default_factory=Earliest)

    @property
    def pair(self) -> resume.PairKey | None:
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
        self.course.offer(e.course_id, key)
        self.lesson.offer(e.lesson_id, key)
        self.is_preview = self.is_preview or e.is_preview
        self.duration.offer(e.duration_s, key)
        ranges = self.credit.grant_event(entry)
        reach = [e.position_s] if e.position_s is not None else []
        if ranges:
            reach.append(ranges[-1][1])
            self.watch_ms += sessions.millis(intervals.total(ranges))
        self.position.offer(e.position_s, key)
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
        self.user_agent.offer(entry.user_agent or None, key)
        self.referrer.offer(entry.referer or None, key)
        return ranges


def _derived(state: SessionState) -> tuple[Any, ...]:
    """The columns computed from the state: video_sessions reads them."""
    covered = intervals.total(state.coverage)
    agent = classify(state.user_agent.value)
    return (
        store.at(state.first_ts),
        store.at(state.last_ts),
        sessions.seconds(sessions.millis(covered)),
        completion.percent(covered, state.duration.value),
        state.completed_at is not None,
        agent.device_type,
        agent.browser,
        agent.os,
    )


STORE = Store(
    "progress_sessions",
    "session_id",
    [
        sessions.BINDING,
        sessions.CREDIT,
        store.column("first_ts", "bigint"),
        store.column("last_ts", "bigint"),
        store.latest("course", "text", "course_id"),
        store.latest("lesson", "text", "lesson_id"),
        store.column("is_preview", "boolean"),
        store.latest("duration", "float8", "duration_s"),
        store.latest("position", "float8", "position_s"),
        store.column("max_position", "float8", "max_position_s"),
        store.converted(
            "watch_ms",
            "watch_seconds",
            "numeric",
            lambda seconds: int(seconds * 1000),
            sessions.seconds,
        ),
        store.ranges("coverage"),
        store.column("complete_ts", "bigint"),
        store.instant("completed_at"),
        store.column("history_ranges", "integer"),
        store.column("plays", "integer"),
        store.column("pauses", "integer"),
        store.column("seeks", "integer"),
        store.earliest("user_agent", "text"),
        store.earliest("referrer", "text"),
        Field(
            None,
            (
                ("started_at", "timestamptz"),
                ("last_event_at", "timestamptz"),
                ("unique_seconds", "numeric"),
                ("completion_pct", "numeric"),
                ("completed", "boolean"),
                ("device_type", "text"),
                ("browser", "text"),
                ("os", "text"),
            ),
            dump=lambda states: [list(c) for c in zip(*map(_derived, states), strict=True)],
        ),
    ],
    SessionState,
    created=sessions.CREATED,
    create=sessions.created,
)


def fold_session(
    state: SessionState, entries: list[Entry], threshold: float
) -> tuple[Played, bool, int]:
    """Apply one session's new entries to its state.

    Returns the admitted entries' (ts, granted ranges), whether completed_at is placed
    (it is not when placing it needs the session's earlier ranges, see
    completion.place), and how many entries were refused.
    """
    before = completion.Before(
        state.duration.value, state.completed_at, state.last_ts, state.coverage
    )
    played: Played = []
    admitted: list[int] = []
    for entry in entries:
        ranges = state.observe(entry)
        if ranges is None:
            continue
        admitted.append(entry.event.ts)
        if ranges:
            played.append((entry.event.ts, ranges))
    refused = len(entries) - len(admitted)
    if admitted:
        state.coverage = sessions.cover(before.coverage, [r for _, rs in played for r in rs])
    return played, completion.settle(state, before, played, admitted, threshold), refused


def fold(conn: psycopg.Connection[Any], batch: Batch[SessionState], settings: Settings) -> None:
    """Fold one batch into its sessions; place completions; keep the played ranges."""
    threshold = settings.completion_threshold
    new_played: list[tuple[str, int, list[Range]]] = []
    unplaced: dict[str, Played] = {}
    for session_id, group in batch.groups.items():
        state = batch.states[session_id]
        played, placed, refused = fold_session(state, group, threshold)
        batch.refused += refused
        if not placed:
            unplaced[session_id] = played
        new_played.extend((session_id, ts, ranges) for ts, ranges in completion.keep(state, played))
    if unplaced:
        completion.place(conn, {s: batch.states[s] for s in unplaced}, unplaced, threshold)
    completion.save_played(conn, new_played)


# The sessions' resume rows: locked once the sessions are, written once they are folded.
SETTLE = Settle(
    lambda conn, batch: resume.begin(conn, batch.states),
    lambda conn, batch, begun, settings: resume.finish(conn, batch.states, begun),
)

PROCESSOR = keyed("progress", STORE, fold, settle=SETTLE, purge=completion.purge)
