"""`vidpulse status` while the pipeline works: figures read apart stay consistent."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis

from processors.registry import PROCESSORS
from processors.runtime import Consumer
from processors.streams import ensure_groups
from tests.factories import make_event
from vidpulse.keys import Keys
from vidpulse.settings import Settings
from vidpulse.status import gather, render


@pytest.fixture
def flowing(settings: Settings, redis_client: redis.Redis) -> Iterator[None]:
    """Events appended in small bursts, read and acked by the raw and metrics processors."""
    flow_settings = settings.model_copy(update={"batch_size": 3, "block_ms": 5})
    stop = threading.Event()
    ensure_groups(redis_client, settings.stream)

    def produce() -> None:
        while not stop.wait(0.002):
            event = orjson.dumps(make_event("play"))
            redis_client.xadd(settings.stream, {"event": event, "received_at": 1})

    threads = [threading.Thread(target=produce, daemon=True)]
    for name in ("raw", "metrics"):
        consumer = Consumer(PROCESSORS[name], flow_settings, consumer=f"flow-{name}", stop=stop)
        threads.append(threading.Thread(target=consumer.run, daemon=True))
    for t in threads:
        t.start()
    yield
    stop.set()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive()


@pytest.mark.usefixtures("flowing")
def test_status_read_200_times_while_events_flow_always_answers(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """200 status reads during a flow of events and acks: every one a whole, sane report."""
    keys = Keys(settings.stream)
    seen_pending = 0
    for _ in range(200):
        report: dict[str, Any] = gather(redis_client, keys)
        render(report)
        for group in report["groups"]:
            assert group["pending"] >= 0
            if group["pending"]:
                seen_pending += 1
            else:
                assert group["oldest_pending_age_s"] is None
    assert seen_pending, "the reads saw entries in flight"
