"""A reference model of the aggregate tables, computed straight from SPEC section 5.

Given the distinct events (with the User-Agent and Referer of their requests) it
builds every row of video_heatmap, video_sessions, video_watch_progress, video_metrics
and video_metrics_daily by brute force: each session's events sorted by
(ts, event_id as text), coverage rebuilt from scratch, completed_at found by trying
every ts. Slow and obvious on purpose; it shares no code with the processors but
the User-Agent classification (which a test of its own checks). Events of bots are
left out of every table but for the metrics' bot_events.
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
    """One distinct event as the processors see it: the event and its request's headers."""

    event: dict[str, Any]
    user_agent: str | None = None
    referer: str | None = None

    @property
    def key(self) -> tuple[int, str]:
        return (self.event["ts"], str(self.event["event_id"]))

    @property
    def is_bot(self) -> bool:
        return classify(self.user_agent).is_bot


def humans(arrivals: list[Arrival]) -> list[Arrival]:
    """The arrivals every aggregate counts: those not sent by bots."""
    return [a for a in arrivals if not a.is_bot]


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


def completed_by(events: list[dict[str, Any]], duration: float | None, threshold: float) -> bool:
    """Whether these events complete a session whose duration is `duration`."""
    if any(e["type"] == "complete" for e in events):
        return True
    reached = percent(length(merged(r for e in events for r in played(e))), duration)
    return reached is not None and reached >= Decimal(str(threshold)) * 100


def latest(arrivals: list[Arrival], field: str) -> Any:
    """The field of the latest event (greatest (ts, event_id)) carrying it, else None."""
    carrying = [a for a in arrivals if a.event.get(field) is not None]
    return max(carrying, key=lambda a: a.key).event[field] if carrying else None


def heatmap(arrivals: list[Arrival], size: int) -> dict[tuple[str, int], Row]:
    """video_heatmap keyed by (video_id, segment_start); absent rows are all zero."""
    views: defaultdict[tuple[str, int], int] = defaultdict(int)
    seconds: defaultdict[tuple[str, int], float] = defaultdict(float)
    drops: defaultdict[tuple[str, int], int] = defaultdict(int)
    sessions: defaultdict[tuple[str, str], list[Arrival]] = defaultdict(list)
    for a in humans(arrivals):
        sessions[(a.event["video_id"], a.event["session_id"])].append(a)
    for (video_id, _), items in sessions.items():
        for a in items:
            for lo, hi in played(a.event):
                for k in range(int(lo // size), int(hi // size) + 1):
                    piece = inside([(lo, hi)], k * size, (k + 1) * size)
                    if piece > 0:
                        seconds[(video_id, k)] += piece
        coverage = merged(r for a in items for r in played(a.event))
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
    for video_id, k in set(views) | set(seconds) | set(drops):
        out[(video_id, k * size)] = {
            "segment_end": (k + 1) * size,
            "views": views[(video_id, k)],
            "watch_seconds": seconds[(video_id, k)],
            "drop_offs": drops[(video_id, k)],
        }
    return out


def sessions(arrivals: list[Arrival], threshold: float) -> dict[str, Row]:
    """video_sessions keyed by session_id."""
    grouped: defaultdict[str, list[Arrival]] = defaultdict(list)
    for a in humans(arrivals):
        grouped[a.event["session_id"]].append(a)
    out: dict[str, Row] = {}
    for session_id, items in grouped.items():
        items.sort(key=lambda a: a.key)
        first = items[0].event
        duration = latest(items, "duration_s")
        coverage = merged(r for a in items for r in played(a.event))
        pct = percent(length(coverage), duration)
        completed_at = next(
            (
                t
                for t in sorted({a.event["ts"] for a in items})
                if completed_by([a.event for a in items if a.event["ts"] <= t], duration, threshold)
            ),
            None,
        )
        reach = [a.event["position_s"] for a in items if a.event.get("position_s") is not None]
        reach += [r[-1][1] for a in items if (r := played(a.event))]
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
            "watch_seconds": sum(length(played(a.event)) for a in items),
            "unique_seconds": length(coverage),
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
    for a in humans(arrivals):
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


def _counters(items: list[Arrival]) -> Row:
    events = [a.event for a in humans(items)]

    def distinct(kind: str, member: str, milestone: int | None = None) -> int:
        return len(
            {
                e[member]
                for e in events
                if e["type"] == kind and (milestone is None or e["milestone"] == milestone)
            }
        )

    return {
        "views": distinct("session_start", "session_id"),
        "unique_viewers": len({e["viewer_id"] for e in events}),
        "watch_seconds": sum(length(played(e)) for e in events),
        "plays": sum(e["type"] == "play" for e in events),
        "pauses": sum(e["type"] == "pause" for e in events),
        "seeks": sum(e["type"] == "seek" for e in events),
        "watched_25_count": distinct("milestone", "viewer_id", 25),
        "watched_50_count": distinct("milestone", "viewer_id", 50),
        "watched_75_count": distinct("milestone", "viewer_id", 75),
        "watched_90_count": distinct("milestone", "viewer_id", 90),
        "completions": distinct("complete", "session_id"),
        "unique_completers": distinct("complete", "viewer_id"),
        "first_event_at": at(min(e["ts"] for e in events)) if events else None,
        "last_event_at": at(max(e["ts"] for e in events)) if events else None,
        "bot_events": sum(a.is_bot for a in items),
    }


def metrics(arrivals: list[Arrival]) -> dict[str, Row]:
    """video_metrics keyed by video_id."""
    grouped: defaultdict[str, list[Arrival]] = defaultdict(list)
    for a in arrivals:
        grouped[a.event["video_id"]].append(a)
    return {video_id: _counters(items) for video_id, items in grouped.items()}


def metrics_daily(arrivals: list[Arrival]) -> dict[tuple[str, date], Row]:
    """video_metrics_daily keyed by (video_id, UTC day)."""
    grouped: defaultdict[tuple[str, date], list[Arrival]] = defaultdict(list)
    for a in arrivals:
        grouped[(a.event["video_id"], at(a.event["ts"]).date())].append(a)
    return {key: _counters(items) for key, items in grouped.items()}
