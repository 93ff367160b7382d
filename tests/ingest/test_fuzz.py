"""Fuzzing the ingest from its own OpenAPI description (schemathesis), against a live server.

Every operation of GET /v1/openapi.json gets bounded, derandomized examples, valid by
the schema and invalid: no answer may be a 5xx. Then the processors drain the stream,
and every event that got a 202 must be in video_events, with no dead letter.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx2
import psycopg
import redis
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode

from processors.registry import PROCESSORS
from tests.browser.servers import LiveIngest
from tests.factories import run_burst
from vidpulse.events import InvalidEvent, parse_event
from vidpulse.keys import Keys
from vidpulse.settings import Settings

EXAMPLES = {"/v1/events": 150}
OTHER = 40


@schemathesis.serializer("text/plain")
def _as_json_text(ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    """sendBeacon's bodies: JSON sent as text/plain (stdlib json: big integers too)."""
    return json.dumps(value).encode()


def accepted_ids(body: Any, answer: dict[str, Any]) -> set[str]:
    """Ids of the events of a /v1/events body that its 202 answer accepted."""
    events = body["events"] if isinstance(body, dict) and "events" in body else body
    events = events if isinstance(events, list) else [events]
    rejected = {r["index"] for r in answer["rejected"]}
    ids = set()
    for index, raw in enumerate(events):
        if index in rejected:
            continue
        try:
            event = parse_event(raw)  # as the ingest did, the window aside
        except InvalidEvent as exc:
            raise AssertionError(f"accepted an invalid event {raw!r}: {exc}") from None
        if event.type == "milestone" and answer["duplicates"]:
            continue  # perhaps the repeat that was not appended
        ids.add(str(event.event_id))
    return ids


def fuzz(
    operation: schemathesis.APIOperation,
    base_url: str,
    examples: int,
    headers: dict[str, str] | None = None,
) -> list[tuple[schemathesis.Case, Any]]:
    """(case, response) of `examples` derandomized cases, valid and invalid, sent to the server."""
    calls: list[tuple[schemathesis.Case, Any]] = []
    cases = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(
        GenerationMode.NEGATIVE
    )

    @hypothesis_settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases)
    def send(case: schemathesis.Case) -> None:
        calls.append((case, case.call(base_url=base_url, timeout=10, headers=headers)))

    send()
    return calls


def test_fuzzed_requests_never_get_a_5xx_and_every_accepted_event_is_stored(
    make_settings: Callable[..., Settings],
    redis_client: redis.Redis,
    db: psycopg.Connection[Any],
) -> None:
    """Schema-driven valid and invalid requests to every route: no 5xx, no accepted event lost."""
    settings = make_settings(log_level="warning")
    server = LiveIngest(settings)
    server.start()
    accepted: set[str] = set()
    statuses: dict[str, set[int]] = {}
    try:
        document = httpx2.get(server.origin + "/v1/openapi.json").json()
        schema = schemathesis.openapi.from_dict(document)
        for result in schema.get_all_operations():
            operation = result.ok()
            path = operation.path
            seen = statuses.setdefault(path, set())
            for case, response in fuzz(operation, server.origin, EXAMPLES.get(path, OTHER)):
                seen.add(response.status_code)
                assert response.status_code < 500, (path, case.body, response.text)
                answer = response.json()
                assert answer["error" if response.status_code >= 400 else "accepted"] is not None
                if path == "/v1/events" and response.status_code == 202:
                    accepted.update(accepted_ids(case.body, answer))
    finally:
        server.stop()
    for path, seen in statuses.items():
        assert 202 in seen, path  # the valid examples do reach the stream
        assert 422 in seen, path
    for name in PROCESSORS:
        run_burst(settings, name)
    stored = {str(r[0]) for r in db.execute("SELECT event_id FROM video_events")}
    assert accepted <= stored
    assert redis_client.xlen(Keys(settings.stream).dlq) == 0
