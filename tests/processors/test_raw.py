"""Processor `raw` facts the runtime tests do not cover: its monthly partitions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import redis

from tests.factories import make_event, run_burst
from vidpulse.settings import Settings

# A month no other test writes to, so dropping its partition disturbs nobody.
MARCH_2001 = int(datetime(2001, 3, 15, tzinfo=UTC).timestamp() * 1000)


def append(client: redis.Redis, settings: Settings, events: list[dict[str, Any]]) -> None:
    for event in events:
        client.xadd(settings.stream, {"event": orjson.dumps(event), "received_at": MARCH_2001})


def test_events_of_any_month_get_their_partition(
    settings: Settings, db: psycopg.Connection[Any], redis_client: redis.Redis
) -> None:
    """An accepted event of a month without a partition creates it and lands there."""
    db.execute("DROP TABLE IF EXISTS video_events_y2001m03")
    event = make_event("play", ts=MARCH_2001)
    append(redis_client, settings, [event])
    run_burst(settings, "raw")
    row = db.execute(
        "SELECT tableoid::regclass::text FROM video_events WHERE event_id = %s",
        (event["event_id"],),
    ).fetchone()
    assert row == ("video_events_y2001m03",)


def test_partition_dropped_while_the_processor_runs_is_recreated(
    settings: Settings, db: psycopg.Connection[Any], redis_client: redis.Redis
) -> None:
    """Dropping an old month's partition (retention) does not turn that month's events to poison."""
    first, late = make_event("play", ts=MARCH_2001), make_event("pause", ts=MARCH_2001 + 1)
    append(redis_client, settings, [first])
    run_burst(settings, "raw")  # the processor has now seen the partition
    db.execute("DROP TABLE video_events_y2001m03")

    append(redis_client, settings, [late])
    run_burst(settings, "raw")
    assert redis_client.xlen(f"{settings.stream}:dlq") == 0
    ids = [r[0] for r in db.execute("SELECT event_id::text FROM video_events")]
    assert ids == [late["event_id"]]
