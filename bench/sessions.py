"""Bounded sessions: what one late event costs the progress and heatmap processors after a
session of 1,000 and of 100,000 disjoint played ranges.

Each session is a `session_start`, beacons of 100 disjoint 0.1-s ranges one second apart,
and a `complete`, applied in batches of 100; then one progress event older than the
completion arrives. The figure is the time of that late event's batch (its own
transaction, as the runtime would run it), median of a few rounds on fresh sessions.
"""

from __future__ import annotations

import statistics
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from bench.env import BenchEnv
from processors import heatmap, progress
from processors.base import Entry, Processor
from vidpulse.events import now_ms, parse_event
from vidpulse.settings import Settings

DURATION = 40_000.0


@dataclass(frozen=True)
class SessionsConfig:
    sizes: tuple[int, ...] = (1_000, 100_000)
    rounds: int = 3


class _Feed:
    """Entries of made-up sessions with increasing stream ids."""

    def __init__(self) -> None:
        self.t0 = now_ms() - 3_600_000
        self.seq = 0

    def entry(self, session_id: str, ts: int, type: str = "progress", **fields: Any) -> Entry:
        self.seq += 1
        event = {
            "event_id": str(uuid.uuid4()),
            "type": type,
            "ts": ts,
            "video_id": "bench-video",
            "session_id": session_id,
            "viewer_id": session_id,
            "position_s": 1.0,
            "duration_s": DURATION,
            **fields,
        }
        return Entry(f"{self.t0}-{self.seq}", parse_event(event), datetime.now(UTC))

    def session(self, session_id: str, ranges: int) -> list[Entry]:
        t0 = self.t0
        out = [self.entry(session_id, t0, "session_start")]
        for b in range(ranges // 100):
            ks = range(b * 100, b * 100 + 100)
            played = [[round(0.2 * k, 1), round(0.2 * k + 0.1, 1)] for k in ks]
            out.append(self.entry(session_id, t0 + 1000 * (b + 1), played=played))
        out.append(self.entry(session_id, t0 + 1000 * (ranges // 100 + 1), "complete"))
        return out


def _late_event_ms(
    conn: psycopg.Connection[Any], feed: _Feed, ranges: int, settings: Settings
) -> float:
    session_id = f"bench-{uuid.uuid4().hex[:8]}"
    processors: list[Processor] = [progress.PROCESSOR, heatmap.PROCESSOR]
    entries = feed.session(session_id, ranges)
    for i in range(0, len(entries), 100):
        with conn.transaction():
            for processor in processors:
                processor.apply(conn, entries[i : i + 100], settings)
    late = [feed.entry(session_id, feed.t0 + 500, played=[[0.1, 0.2]])]
    started = time.perf_counter()
    with conn.transaction():
        for processor in processors:
            processor.apply(conn, late, settings)
    return (time.perf_counter() - started) * 1000


def run(env: BenchEnv, cfg: SessionsConfig) -> dict[str, Any]:
    """Median late-event time (ms) per session size."""
    settings = env.settings(env.stream("sessions"))
    feed = _Feed()
    out: dict[str, Any] = {}
    with env.connect() as conn:
        for size in cfg.sizes:
            times = [_late_event_ms(conn, feed, size, settings) for _ in range(cfg.rounds)]
            out[str(size)] = statistics.median(times)
    env.truncate_all()
    return {"late_event_ms": out}
