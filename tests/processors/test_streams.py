"""Redis memory stays bounded: what every group processed is trimmed, every other key expires.

The figures (entries, bytes) are printed with `-s`; docs/operations.md states the bounds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
import redis
from starlette.testclient import TestClient

from ingest.app import create_app
from processors.streams import GroupStream, ensure_groups, trim_processed
from tests.factories import make_event
from vidpulse.keys import PROCESSOR_NAMES, Keys
from vidpulse.settings import Settings

PROCESSED = 1_000_000
_CHUNK = 50_000  # entries per script call: Redis stays responsive to other clients

# KEYS[1] stream. ARGV[1] how many, ARGV[2] the event field. Appends small entries.
_FILL_LUA = """
for _ = 1, tonumber(ARGV[1]) do
    redis.call('XADD', KEYS[1], '*', 'event', ARGV[2], 'received_at', '1')
end
return redis.call('XLEN', KEYS[1])
"""


def node_entries(client: redis.Redis) -> int:
    """Entries per stream node (trimming with ~ removes whole nodes only)."""
    reply: Any = client.config_get("stream-node-max-entries")
    return int(reply["stream-node-max-entries"]) or 100


def fill(client: redis.Redis, stream: str, entries: int) -> None:
    """Every processor's group, then `entries` small entries appended in chunks."""
    ensure_groups(client, stream)
    event = orjson.dumps(make_event("play"))
    for start in range(0, entries, _CHUNK):
        client.eval(_FILL_LUA, 1, stream, min(_CHUNK, entries - start), event)


def test_a_million_entries_processed_by_every_group_trim_to_one_node(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """1,000,000 entries read and acked by all four groups: the trim leaves at most one node."""
    stream = settings.stream
    fill(redis_client, stream, PROCESSED)
    assert redis_client.xlen(stream) == PROCESSED
    full_bytes = int(redis_client.memory_usage(stream, samples=0) or 0)
    for group in PROCESSOR_NAMES:  # every entry delivered and acked: nothing pending
        redis_client.xgroup_setid(stream, group, "$")

    started = time.perf_counter()
    assert trim_processed(redis_client, stream) is not None
    took_ms = (time.perf_counter() - started) * 1000
    left = redis_client.xlen(stream)
    left_bytes = int(redis_client.memory_usage(stream, samples=0) or 0)
    print(
        f"stream: {PROCESSED} entries, {full_bytes} bytes -> trimmed in {took_ms:.0f} ms "
        f"-> {left} entries, {left_bytes} bytes"
    )
    assert left <= node_entries(redis_client)
    assert left_bytes < 64 * 1024


def test_trim_keeps_everything_from_the_oldest_entry_a_group_still_needs(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """A group lagging at the middle of the stream: nothing from there on is trimmed."""
    stream = settings.stream
    fill(redis_client, stream, 1000)
    middle = redis_client.xrange(stream, count=501)[-1][0].decode()
    for group in PROCESSOR_NAMES:
        redis_client.xgroup_setid(stream, group, "$" if group != "metrics" else middle)

    trim_processed(redis_client, stream)
    assert redis_client.xlen(stream) >= 500
    assert redis_client.xrange(stream, min=middle, count=1)[0][0].decode() == middle


def test_dead_letter_stream_is_capped(settings: Settings, redis_client: redis.Redis) -> None:
    """1,000 dead letters with a cap of 100: the stream keeps at most the cap plus one node."""
    cap = 100
    stream = GroupStream(redis_client, Keys(settings.stream), "raw", "c", dlq_max_length=cap)
    entry = ("1-0", {b"event": b"{}"})
    for _ in range(1000):
        stream.dead_letter(entry, "boom", 5)
    length = redis_client.xlen(f"{settings.stream}:dlq")
    assert cap <= length <= cap + node_entries(redis_client)


def test_every_key_but_the_streams_expires_within_its_ttl(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    """Milestone dedupe keys and compatibility-route keys all carry their TTL; none is forever."""
    settings = make_settings(dedupe_ttl_seconds=600, legacy_session_ttl_seconds=900)
    with TestClient(create_app(settings)) as ingest:
        for n in range(20):
            body = {"events": [make_event("milestone", viewer_id=f"viewer-{n}", milestone=25)]}
            assert ingest.post("/v1/events", json=body).status_code == 202
            now = int(time.time())
            watched50 = {
                "videoId": "v",
                "event": "watched_50_percent",
                "ts": now,
                "userId": f"u{n}",
            }
            assert ingest.post("/analytics", json=watched50).status_code == 202
            view = {"video_id": "v", "session_id": f"s-{n}", "video_duration_seconds": 60}
            assert ingest.post("/api/analytics/video-view", json=view).status_code == 202
    prefix = settings.stream
    keys = [k.decode() for k in redis_client.scan_iter(match=f"{prefix}:*", count=1000)]
    assert len(keys) >= 60
    longest = max(settings.dedupe_ttl_seconds, settings.legacy_session_ttl_seconds)
    for key in [*keys, prefix]:
        if redis_client.type(key) == b"stream":
            assert key in (prefix, f"{prefix}:dlq"), key
            continue
        assert 0 < redis_client.ttl(key) <= longest, key
