"""Event factories and helpers shared by the tests."""

from __future__ import annotations

import threading
import uuid
from typing import Any

from processors.registry import PROCESSORS
from processors.runtime import Consumer
from vidpulse.events import now_ms
from vidpulse.settings import Settings

BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36"
PAGE = "https://learn.example/course/7/lesson/3"


def make_event(type: str = "play", **fields: Any) -> dict[str, Any]:
    """A valid event of `type`; `fields` override or add (None removes a field)."""
    event: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "type": type,
        "ts": now_ms(),
        "video_id": "video-1",
        "session_id": "session-1",
        "viewer_id": "viewer-1",
        "position_s": 0.0,
    }
    if type in ("session_start", "progress", "complete", "session_end"):
        event["duration_s"] = 100.0
    if type == "milestone":
        event.pop("position_s")
        event["milestone"] = 50
    if type == "seek":
        event.update(from_s=0.0, to_s=10.0)
    if type == "rate_change":
        event["rate"] = 1.5
    if type == "quality_change":
        event["quality"] = "720p"
    event.update(fields)
    return {k: v for k, v in event.items() if v is not None}


def run_burst(settings: Settings, name: str, consumer: str = "test") -> None:
    """Run processor `name` in-process until nothing is new or pending."""
    Consumer(
        PROCESSORS[name], settings, consumer=consumer, stop=threading.Event(), burst=True
    ).run()
