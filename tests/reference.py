"""A reference model of the aggregate tables, computed straight from docs/tables.md.

Given the distinct events in the order the processors apply them (with the
User-Agent, Referer and receive time of their requests) it builds every row of
video_heatmap, video_sessions, video_watch_progress, video_metrics and
video_metrics_daily by brute force: first it walks the events once to drop those
naming a session that belongs to another (video, viewer) and to credit each the
played seconds its session may still claim; then each session's events are sorted
by (min(ts, received), arrival order), coverage is rebuilt from scratch, completed_at
found by trying every ts. Sums of seconds add each event's share rounded to the
millisecond. Slow and obvious on purpose; it shares no code with the processors but
the User-Agent classification (which a test of its own checks). Not modelled: the
caps on a session's stored ranges (512 coverage ranges, 2048 history ranges), which
only sessions far past any real playback reach. Events of bots are left out of every
table but for the metrics' bot_events.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from vidpulse.agents import classify

Row = dict[str, Any]
Ranges = list[tuple[float, float]]


@dataclass(frozen=True)
class Arrival:
    """One distinct event as the processors see it: the event, its request's headers and
    receive time (ms), and its place in the order events reached the stream."""

    event: dict[str, Any]
    user_agent: str | None = None
    referer: str | None = None
    order: int = 0
    received_ms: int | None = None

    @property
    def time(self) -> int:
        """ts, but never later than when the server received the event."""
        ts = self.event["ts"]
        return ts if self.received_ms is None else min(ts, self.received_ms)

    @property
    def key(self) -> tuple[int, int]:
        """What "latest" compares: later time, then later arrival."""
        return (self.time, self.order)

    @property
    def is_bot(self) -> bool:
        return classify(self.user_agent).is_bot


# What one session may be credited: 16 seconds of media per second of span, plus 30.
RATE = 16
GRACE = 30


def credited(arrivals: list[Arrival]) -> list[tuple[Arrival, Ranges]]:
    """The events every aggregate counts, each with the played ranges it is credited.

    Walks the events in arrival order. A session belongs to the (video, viewer) of its
    first event; events naming it with another are left out. An event is credited
    its played ranges from the start while they fit in RATE x (the span of the ts of
    its session's events so far, itself included) + GRACE, minus what the session was
    credited before.
    """
    owner: dict[str, tuple[str, str]] = {}
    times: defaultdict[str, list[int]] = defaultdict(list)
    given: defaultdict[str, float] = defaultdict(float)
    out: list[tuple[Arrival, Ranges]] = []
    for a in arrivals:
        if a.is_bot:  # bots' events count in no aggregate but bot_events
            continue
        e = a.event
        session = e["session_id"]
        if owner.setdefault(session, (e["video_id"], e["viewer_id"])) != (
            e["video_id"],
            e["viewer_id"],
        ):
            continue
        times[session].append(e["ts"])
        left = RATE * (max(times[session]) - min(times[session])) / 1000 + GRACE - given[session]
        ranges: Ranges = []
        for lo, hi in played(a.event):
            if hi - lo <= left:
                ranges.append((lo, hi))
                left -= hi - lo
            elif left > 0:
                ranges.append((lo, lo + left))
                left = 0
        given[session] += length(ranges)
        out.append((a, ranges))
    return out


def ms(seconds: float) -> int:
    return round(seconds * 1000)


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms // 1000, UTC).replace(microsecond=ms % 1000 * 1000)


def merged(ranges: Iterable[tuple[float, float]]) -> Ranges:
    out: Ranges = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def played(event: dict[str, Any]) -> Ranges:
    """The event's played ranges clipped to its duration, merged."""
    d = event.get("duration_s")
    clipped = [(max(a, 0.0), min(b, d)) for a, b in event.get("played") or [] if d is not None]
    return merged((a, b) for a, b in clipped if a < b)


def length(ranges: Ranges) -> float:
    return sum(b - a for a, b in ranges)


def inside(ranges: Ranges, lo: float, hi: float) -> float:
    return sum(max(0.0, min(b, hi) - max(a, lo)) for a, b in ranges)


def percent(part: float, whole: float | None) -> Decimal | None:
    if whole is None:
        return None
    if 100 * part / whole >= 100:
        return Decimal(100)
    return Decimal(100 * part / whole).quantize(Decimal("0.01"), ROUND_HALF_UP)


def completed_by(
    events: list[tuple[Arrival, Ranges]], duration: float | None, threshold: float
) -> bool:
    """Whether these events complete a session whose duration is `duration`."""
    if any(a.event["type"] == "complete" for a, _ in events):
        return True
    reached = percent(length(merged(r for _, ranges in events for r in ranges)), duration)
    return reached is not None and reached >= Decimal(str(threshold)) * 100


def latest(arrivals: list[Arrival], field: str) -> Any:
    """The field of the latest event (greatest (ts, event_id)) carrying it, else None."""
    carrying = [a for a in arrivals if a.event.get(field) is not None]
    return max(carrying, key=lambda a: a.key).event[field] if carrying else None


def heatmap(arrivals: list[Arrival], size: int) -> dict[tuple[str, int], Row]:
    """video_heatmap keyed by (video_id, segment_start); absent rows are all zero."""
    views: defaultdict[tuple[str, int], int] = defaultdict(int)
    millis: defaultdict[tuple[str, int], int] = defaultdict(int)
    drops: defaultdict[tuple[str, int], int] = defaultdict(int)
    sessions: defaultdict[tuple[str, str], list[tuple[Arrival, Ranges]]] = defaultdict(list)
    for a, ranges in credited(arrivals):
        sessions[(a.event["video_id"], a.event["session_id"])].append((a, ranges))
    for (video_id, _), pairs in sessions.items():
        items = [a for a, _ in pairs]
        for _, ranges in pairs:
            for lo, hi in ranges:
                for k in range(int(lo // size), int(hi // size) + 1):
                    piece = inside([(lo, hi)], k * size, (k + 1) * size)
                    if piece > 0:
                        millis[(video_id, k)] += ms(piece)
        coverage = merged(r for _, ranges in pairs for r in ranges)
        if coverage:
            for k in range(int(coverage[-1][1] // size) + 1):
                if inside(coverage, k * size, (k + 1) * size) > 0:
                    views[(video_id, k)] += 1
        p, d = latest(items, "position_s"), latest(items, "duration_s")
        if p is not None:
            k = math.floor(p / size)
            if d is not None:
                k = min(k, math.ceil(d / size) - 1)
            drops[(video_id, k)] += 1
    out: dict[tuple[str, int], Row] = {}
    for video_id, k in set(views) | set(millis) | set(drops):
        out[(video_id, k * size)] = {
            "segment_end": (k + 1) * size,
            "views": views[(video_id, k)],
            "watch_seconds": millis[(video_id, k)] / 1000,
            "drop_offs": drops[(video_id, k)],
        }
    return out


def sessions(arrivals: list[Arrival], threshold: float) -> dict[str, Row]:
    """video_sessions keyed by session_id."""
    grouped: defaultdict[str, list[tuple[Arrival, Ranges]]] = defaultdict(list)
    for a, ranges in credited(arrivals):
        grouped[a.event["session_id"]].append((a, ranges))
    out: dict[str, Row] = {}
    for session_id, pairs in grouped.items():
        pairs.sort(key=lambda pair: pair[0].key)
        items = [a for a, _ in pairs]
        first = items[0].event
        duration = latest(items, "duration_s")
        coverage = merged(r for _, ranges in pairs for r in ranges)
        pct = percent(length(coverage), duration)
        completed_at = next(
            (
                t
                for t in sorted({a.event["ts"] for a in items})
                if completed_by([p for p in pairs if p[0].event["ts"] <= t], duration, threshold)
            ),
            None,
        )
        reach = [a.event["position_s"] for a in items if a.event.get("position_s") is not None]
        reach += [ranges[-1][1] for _, ranges in pairs if ranges]
        ua = next((a.user_agent for a in items if a.user_agent), None)
        device_type, browser, os, _ = classify(ua)
        out[session_id] = {
            "video_id": first["video_id"],
            "viewer_id": first["viewer_id"],
            "course_id": latest(items, "course_id"),
            "lesson_id": latest(items, "lesson_id"),
            "is_preview": any(a.event.get("is_preview", False) for a in items),
            "started_at": at(min(a.event["ts"] for a in items)),
            "last_event_at": at(max(a.event["ts"] for a in items)),
            "duration_s": duration,
            "position_s": latest(items, "position_s"),
            "max_position_s": max(reach) if reach else None,
            "watch_seconds": sum(ms(length(ranges)) for _, ranges in pairs) / 1000,
            "unique_seconds": ms(length(coverage)) / 1000,
            "completion_pct": pct,
            "completed": completed_at is not None,
            "completed_at": None if completed_at is None else at(completed_at),
            "plays": sum(a.event["type"] == "play" for a in items),
            "pauses": sum(a.event["type"] == "pause" for a in items),
            "seeks": sum(a.event["type"] == "seek" for a in items),
            "user_agent": ua,
            "device_type": device_type,
            "browser": browser,
            "os": os,
            "referrer": next((a.referer for a in items if a.referer), None),
        }
    return out


def watch_progress(
    arrivals: list[Arrival], session_rows: dict[str, Row]
) -> dict[tuple[str, str], Row]:
    """video_watch_progress keyed by (viewer_id, video_id)."""
    grouped: defaultdict[tuple[str, str], list[Arrival]] = defaultdict(list)
    for a, _ in credited(arrivals):
        grouped[(a.event["viewer_id"], a.event["video_id"])].append(a)
    out: dict[tuple[str, str], Row] = {}
    for pair, items in grouped.items():
        position, duration = latest(items, "position_s"), latest(items, "duration_s")
        done = [
            s["completed_at"]
            for sid in {a.event["session_id"] for a in items}
            if (s := session_rows[sid])["completed"]
        ]
        out[pair] = {
            "position_s": position,
            "duration_s": duration,
            "progress_pct": None if position is None else percent(position, duration),
            "completed": bool(done),
            "completed_at": min(done) if done else None,
            "first_watched_at": at(min(a.event["ts"] for a in items)),
            "last_watched_at": at(max(a.event["ts"] for a in items)),
            "course_id": latest(items, "course_id"),
            "lesson_id": latest(items, "lesson_id"),
        }
    return out


def _counters(pairs: list[tuple[Arrival, Ranges]], started: set[str], bots: int) -> Row:
    """The counters of these events; `started` are the sessions with a session_start."""
    events = [a.event for a, _ in pairs]

    def distinct(kind: str, member: str, milestone: int | None = None) -> int:
        return len(
            {
                e[member]
                for e in events
                if e["type"] == kind and (milestone is None or e["milestone"] == milestone)
            }
        )

    completes = [e for e in events if e["type"] == "complete" and e["session_id"] in started]
    return {
        "views": distinct("session_start", "session_id"),
        "unique_viewers": len({e["viewer_id"] for e in events}),
        "watch_seconds": sum(ms(length(ranges)) for _, ranges in pairs) / 1000,
        "plays": sum(e["type"] == "play" for e in events),
        "pauses": sum(e["type"] == "pause" for e in events),
        "seeks": sum(e["type"] == "seek" for e in events),
        "watched_25_count": distinct("milestone", "viewer_id", 25),
        "watched_50_count": distinct("milestone", "viewer_id", 50),
        "watched_75_count": distinct("milestone", "viewer_id", 75),
        "watched_90_count": distinct("milestone", "viewer_id", 90),
        "completions": len({e["session_id"] for e in completes}),
        "unique_completers": len({e["viewer_id"] for e in completes}),
        "first_event_at": at(min(e["ts"] for e in events)) if events else None,
        "last_event_at": at(max(e["ts"] for e in events)) if events else None,
        "bot_events": bots,
    }


def _started(pairs: list[tuple[Arrival, Ranges]]) -> set[str]:
    return {a.event["session_id"] for a, _ in pairs if a.event["type"] == "session_start"}


def metrics(arrivals: list[Arrival]) -> dict[str, Row]:
    """video_metrics keyed by video_id."""
    kept = credited(arrivals)
    grouped: defaultdict[str, list[tuple[Arrival, Ranges]]] = defaultdict(list)
    bots: defaultdict[str, int] = defaultdict(int)
    for a in arrivals:
        if a.is_bot:
            bots[a.event["video_id"]] += 1
    for a, ranges in kept:
        grouped[a.event["video_id"]].append((a, ranges))
    started = _started(kept)
    return {v: _counters(grouped[v], started, bots[v]) for v in set(grouped) | set(bots)}


def metrics_daily(arrivals: list[Arrival]) -> dict[tuple[str, date], Row]:
    """video_metrics_daily keyed by (video_id, UTC day); a completion counts on the days of its
    complete events, its session_start may be of any day."""
    kept = credited(arrivals)
    grouped: defaultdict[tuple[str, date], list[tuple[Arrival, Ranges]]] = defaultdict(list)
    bots: defaultdict[tuple[str, date], int] = defaultdict(int)
    for a in arrivals:
        if a.is_bot:
            bots[(a.event["video_id"], at(a.event["ts"]).date())] += 1
    for a, ranges in kept:
        grouped[(a.event["video_id"], at(a.event["ts"]).date())].append((a, ranges))
    started = _started(kept)
    return {k: _counters(grouped[k], started, bots[k]) for k in set(grouped) | set(bots)}
