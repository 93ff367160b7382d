"""When a session is completed (`progress_sessions.completed_at`), and the played
ranges kept to place it (`progress_played`).

`completed_at` is the earliest client time t at which the session's events with
ts <= t complete it: a `complete` event among them, or their coverage reaching the
threshold of the session's duration. Placing it needs the played ranges in ts
order, which the batch usually has at hand (events arriving in order). When a late
event lands before that moment, or the session's duration changes, the ranges are
read back from `progress_played`, which keeps at most HISTORY_RANGES ranges per
session: beyond, completed_at is no longer moved earlier by late events (see
docs/processors.md).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Protocol

import psycopg

from processors import arrays, intervals
from processors.intervals import Range
from processors.store import Latest, array_literal
from vidpulse.settings import Settings

# Played ranges of a session kept in progress_played to place completed_at when an
# older event arrives late; a session past it keeps its completed_at (see settle).
HISTORY_RANGES = 2048

Played = list[tuple[int, list[Range]]]  # (ts, granted ranges) of a session's events

_CENT = Decimal("0.01")
_HUNDRED = Decimal(100)

_SAVE_PLAYED = """
INSERT INTO progress_played (session_id, ts, ranges)
SELECT s, t, r::float8[] FROM unnest(%t::text[], %t::bigint[], %t::text[]) AS u(s, t, r)
"""
_LOAD_PLAYED = """
SELECT session_id, ts, ranges FROM progress_played WHERE session_id = ANY(%t::text[])
"""


class Completable(Protocol):
    """What placing completed_at reads and writes of a session's state."""

    coverage: list[Range]
    duration: Latest[float]
    complete_ts: int | None
    completed_at: int | None
    history_ranges: int


@dataclass(frozen=True, slots=True)
class Before:
    """What a session's state said before the batch."""

    duration: float | None
    completed_at: int | None
    last_ts: int | None
    coverage: list[Range]


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
    if duration is None:
        return False
    target = _target(threshold)
    ratio = 100 * intervals.total(coverage) / duration
    if ratio < float(target) - 0.01:  # short of it by more than the rounding: plainly not
        return False
    pct = percent(intervals.total(coverage), duration)
    return pct is not None and pct >= target


@functools.lru_cache(maxsize=16)
def _target(threshold: float) -> Decimal:
    return Decimal(str(threshold)) * 100


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


def history_full(state: Completable) -> bool:
    """Whether progress_played misses some of the session's ranges."""
    return state.history_ranges > HISTORY_RANGES


def settle(
    state: Completable, before: Before, played: Played, admitted: list[int], threshold: float
) -> bool:
    """Place completed_at after a batch of the session's events, from what is at hand.

    `played` are the new events' (ts, granted ranges), `admitted` the ts of every new
    event the session admitted (state.coverage already includes them). Returns False
    when placing it needs the session's earlier ranges (see place).
    """
    if not admitted:
        return True
    duration = state.duration.value
    if state.complete_ts is None and not reached(state.coverage, duration, threshold):
        state.completed_at = None
        return True
    if duration == before.duration:
        first_new = min(admitted)
        if before.completed_at is not None and first_new >= before.completed_at:
            return True  # nothing before the moment it completed has changed
        if before.completed_at is None and (before.last_ts is None or first_new >= before.last_ts):
            # Every new event comes at or after every old one, and those did not complete it.
            state.completed_at = completion_time(
                before.coverage, played, state.complete_ts, duration, threshold
            )
            return True
    if history_full(state):
        # The earlier ranges are not all kept: settle for what is known without them.
        known = [t for t in (before.completed_at, state.complete_ts) if t is not None]
        if reached(state.coverage, duration, threshold):
            known.append(max(admitted))
        state.completed_at = min(known) if known else None
        return True
    return False


def keep(state: Completable, played: Played) -> Played:
    """Of a session's new (ts, ranges), those progress_played still has room for.

    Once a session's ranges do not all fit in HISTORY_RANGES, none are kept any more.
    """
    if history_full(state) or not played:
        return []
    count = state.history_ranges + sum(len(ranges) for _, ranges in played)
    if count > HISTORY_RANGES:
        state.history_ranges = HISTORY_RANGES + 1
        return []
    state.history_ranges = count
    return played


def place(
    conn: psycopg.Connection[Any],
    states: Mapping[str, Completable],
    new_played: Mapping[str, Played],
    threshold: float,
) -> None:
    """Recompute completed_at from all the sessions' ranges (stored ones and new ones)."""
    history: defaultdict[str, Played] = defaultdict(list)
    for session_id, ts, ranges in conn.execute(
        _LOAD_PLAYED, (arrays.literal(list(states), "text"),)
    ):
        history[session_id].append((ts, intervals.unflat(ranges)))
    for session_id, state in states.items():
        played = history[session_id] + new_played[session_id]
        state.completed_at = completion_time(
            [], played, state.complete_ts, state.duration.value, threshold
        )
        if state.completed_at is None and played:
            # Only a coverage cut to MAX_COVERAGE_RANGES reaches the threshold where its
            # exact ranges do not: completed, at its latest played ts.
            state.completed_at = max(ts for ts, _ in played)


def save_played(conn: psycopg.Connection[Any], rows: list[tuple[str, int, list[Range]]]) -> None:
    """Keep the (session, ts, ranges) of new events in progress_played."""
    if rows:
        conn.execute(
            _SAVE_PLAYED,
            (
                arrays.literal([s for s, _, _ in rows], "text"),
                arrays.literal([ts for _, ts, _ in rows], "bigint"),
                arrays.literal([array_literal(intervals.flat(r)) for _, _, r in rows], "text"),
            ),
        )


def purge(conn: psycopg.Connection[Any], settings: Settings) -> int:
    """Forget played ranges of events older than the ledger's retention.

    They only serve to place completed_at when an older event arrives late, and no
    event that old can arrive any more (the ingest refuses ts over 7 days old).
    """
    cutoff_ms = (
        int(datetime.now(UTC).timestamp() * 1000) - settings.applied_retention_days * 86_400_000
    )
    return conn.execute("DELETE FROM progress_played WHERE ts < %s", (cutoff_ms,)).rowcount
