"""A one-at-a-time worker, the yardstick for the processors.

A worker that consumes the queue one event at a time, INSERT + UPDATE in autocommit
each: it INSERTs the raw row into an events table, then UPDATEs the aggregate counter
in a metrics table, each statement in its own autocommit transaction. Here it reads
the same stream as the processors (its own consumer group, COUNT 1, XACK after each
event) and writes its two tables, `baseline_video_events` and `baseline_video_metrics`,
in the bench database.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
import redis
from redis.exceptions import ResponseError

GROUP = "one-at-a-time-baseline"

BASELINE_TABLES = """
CREATE TABLE IF NOT EXISTS baseline_video_events (
    id          uuid PRIMARY KEY,
    video_id    text NOT NULL,
    event       text NOT NULL,
    user_id     text NOT NULL,
    ts          timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS baseline_video_metrics (
    video_id          text PRIMARY KEY,
    events            bigint NOT NULL DEFAULT 0,
    watched_50_count  bigint NOT NULL DEFAULT 0,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
TRUNCATE baseline_video_events, baseline_video_metrics;
"""
_INSERT_RAW = """
INSERT INTO baseline_video_events (id, video_id, event, user_id, ts)
VALUES (%s, %s, %s, %s, to_timestamp(%s / 1000.0))
ON CONFLICT (id) DO NOTHING
"""
_UPDATE_COUNTER = """
UPDATE baseline_video_metrics
SET events = events + 1, watched_50_count = watched_50_count + %s, updated_at = now()
WHERE video_id = %s
"""
_CREATE_COUNTER = """
INSERT INTO baseline_video_metrics (video_id, events, watched_50_count) VALUES (%s, 1, %s)
ON CONFLICT (video_id) DO UPDATE SET events = baseline_video_metrics.events + 1,
    watched_50_count = baseline_video_metrics.watched_50_count + EXCLUDED.watched_50_count
"""


@dataclass(frozen=True)
class BaselineResult:
    events: int
    seconds: float

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "seconds": round(self.seconds, 3),
            "events_per_s": round(self.events_per_s, 1),
        }


def run_one_at_a_time_worker(
    redis_url: str, database_url: str, stream: str, *, max_events: int, max_seconds: float
) -> BaselineResult:
    """Consume `stream` one event at a time until `max_events` or `max_seconds`, whichever first."""
    client = redis.Redis.from_url(redis_url)
    try:
        client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(BASELINE_TABLES)
        done = 0
        started = time.monotonic()
        deadline = started + max_seconds
        while done < max_events and time.monotonic() < deadline:
            reply = client.xreadgroup(
                GROUP, "one-at-a-time-worker", {stream: ">"}, count=1, block=1000
            )
            if not reply:
                break
            entry_id, fields = reply[0][1][0]
            event = orjson.loads(fields[b"event"])
            conn.execute(
                _INSERT_RAW,
                (
                    event["event_id"],
                    event["video_id"],
                    event["type"],
                    event["viewer_id"],
                    event["ts"],
                ),
            )
            watched_50 = int(event["type"] == "milestone" and event.get("milestone") == 50)
            if conn.execute(_UPDATE_COUNTER, (watched_50, event["video_id"])).rowcount == 0:
                conn.execute(_CREATE_COUNTER, (event["video_id"], watched_50))
            client.xack(stream, GROUP, entry_id)
            done += 1
        elapsed = time.monotonic() - started
    client.close()
    return BaselineResult(events=done, seconds=elapsed)
