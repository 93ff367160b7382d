"""Bench traffic from the seeded audience generator: request bodies and stream entries."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from tools.audience import Session, flatten, generate_audience
from vidpulse.events import now_ms, parse_event

# The catalogue and audience every measurement draws from.
VIDEOS = 2_000
VIEWERS = 50_000
EVENTS_PER_SESSION = 22  # about what the audience generator makes on average


def audience_events(count: int, *, seed: int) -> list[tuple[dict[str, Any], str, str]]:
    """About `count` events as (event, user agent, referer), in arrival order."""
    rng = random.Random(seed)
    sessions: list[Session] = []
    total = 0
    while total < count:  # sessions vary in length: draw until there are enough events
        more = generate_audience(
            rng,
            videos=VIDEOS,
            viewers=VIEWERS,
            sessions=max(1, (count - total) // EVENTS_PER_SESSION + 1),
            now_ms=now_ms(),
        )
        sessions += more
        total += sum(len(s.events) for s in more)
    headers = {id(e): (s.user_agent, s.referer or "") for s in sessions for e in s.events}
    events = flatten([s.events for s in sessions])[:count]
    return [(e, *headers[id(e)]) for e in events]


def write_bodies(path: Path, events: list[dict[str, Any]], per_request: int) -> int:
    """Write one request body a line: a single event object, or arrays of `per_request`."""
    lines: list[bytes] = []
    if per_request == 1:
        lines = [orjson.dumps(e) for e in events]
    else:
        for i in range(0, len(events) - per_request + 1, per_request):
            lines.append(orjson.dumps(events[i : i + per_request]))
    path.write_bytes(b"\n".join(lines) + b"\n")
    return len(lines)


def stream_entries(
    items: list[tuple[dict[str, Any], str, str]],
) -> Iterator[dict[str, bytes | str | int]]:
    """The stream entry fields the ingest would write for each event."""
    received = now_ms()
    for event, user_agent, referer in items:
        fields: dict[str, bytes | str | int] = {
            "event": parse_event(event).stream_json(),
            "received_at": received,
        }
        if user_agent:
            fields["user_agent"] = user_agent
        if referer:
            fields["referer"] = referer
        yield fields
