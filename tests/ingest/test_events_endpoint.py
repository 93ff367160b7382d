"""POST /v1/events and the ingest's other routes, against a real Redis (docs/events.md)."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import httpx2
import orjson
import pytest
import redis
from starlette.testclient import TestClient

from tests.factories import BROWSER_UA, PAGE, make_event
from tests.ingest.conftest import ClientFactory
from vidpulse.devservices import free_port
from vidpulse.events import MAX_PAST_MS, now_ms
from vidpulse.settings import Settings

JSON = {"content-type": "application/json"}


def entries(client: redis.Redis, settings: Settings) -> list[dict[str, bytes]]:
    """The fields of every entry of the test's stream, oldest first."""
    return [fields for _, fields in client.xrange(settings.stream)]


def streamed_ids(client: redis.Redis, settings: Settings) -> list[str]:
    return [orjson.loads(f[b"event"])["event_id"] for f in entries(client, settings)]


def error_of(response: httpx2.Response, status: int) -> str:
    """Assert `response` is a JSON error with this status; return its `error` string."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["error"], str)
    assert body["error"].strip()
    return str(body["error"])


def post_raw(client: TestClient, body: bytes, content_type: str = "application/json") -> Any:
    return client.post("/v1/events", content=body, headers={"content-type": content_type})


# -- accepted bodies -------------------------------------------------------------------


def test_single_event_object_is_appended_with_request_context(
    ingest: TestClient, redis_client: redis.Redis, settings: Settings
) -> None:
    """One event object answers 202 and lands as one entry: event JSON, received_at, UA, referer."""
    event = make_event("session_start", course_id="c-7", lesson_id="l-3")
    before = now_ms()
    response = ingest.post(
        "/v1/events", json=event, headers={"User-Agent": BROWSER_UA, "Referer": PAGE}
    )
    after = now_ms()
    assert response.status_code == 202
    assert response.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    [fields] = entries(redis_client, settings)
    assert set(fields) == {b"event", b"received_at", b"user_agent", b"referer"}
    assert orjson.loads(fields[b"event"]) == {**event, "is_preview": False}
    assert b" " not in fields[b"event"]
    assert before <= int(fields[b"received_at"]) <= after
    assert fields[b"user_agent"].decode() == BROWSER_UA
    assert fields[b"referer"].decode() == PAGE


def test_entry_without_referer_has_no_referer_field(
    ingest: TestClient, redis_client: redis.Redis, settings: Settings
) -> None:
    """A request without Referer stores no referer field (nothing of the request is invented)."""
    assert ingest.post("/v1/events", json=make_event()).status_code == 202
    [fields] = entries(redis_client, settings)
    assert b"referer" not in fields
    assert fields[b"user_agent"] == b"testclient"


def test_array_body_appends_every_event_in_order(
    ingest: TestClient, redis_client: redis.Redis, settings: Settings
) -> None:
    """A JSON array of events is accepted whole, appended in request order."""
    events = [make_event("play"), make_event("pause"), make_event("seek")]
    response = ingest.post("/v1/events", json=events)
    assert response.json() == {"accepted": 3, "duplicates": 0, "rejected": []}
    assert streamed_ids(redis_client, settings) == [e["event_id"] for e in events]


def test_events_wrapper_body_is_accepted(
    ingest: TestClient, redis_client: redis.Redis, settings: Settings
) -> None:
    """A {"events": [...]} body is accepted like an array."""
    events = [make_event("play"), make_event("pause")]
    response = ingest.post("/v1/events", json={"events": events})
    assert response.status_code == 202
    assert response.json()["accepted"] == 2
    assert streamed_ids(redis_client, settings) == [e["event_id"] for e in events]


@pytest.mark.parametrize(
    "content_type", ["text/plain", "text/plain;charset=UTF-8", "application/json; charset=utf-8"]
)
def test_json_as_text_plain_or_application_json_is_accepted(
    ingest: TestClient, redis_client: redis.Redis, settings: Settings, content_type: str
) -> None:
    """sendBeacon's text/plain and application/json (with parameters) are both accepted."""
    event = make_event("session_end")
    response = post_raw(ingest, orjson.dumps([event]), content_type)
    assert response.status_code == 202
    assert streamed_ids(redis_client, settings) == [event["event_id"]]


def test_missing_event_id_is_derived_from_the_content(
    ingest: TestClient, redis_client: redis.Redis, settings: Settings
) -> None:
    """An event without event_id is stored under an id made of its content: equal events, one id."""
    same = make_event(event_id=None)
    other = make_event(event_id=None, position_s=3.0)
    response = ingest.post("/v1/events", json=[same, dict(same), other])
    assert response.json()["accepted"] == 3
    ids = [uuid.UUID(i) for i in streamed_ids(redis_client, settings)]
    assert ids[0] == ids[1] != ids[2]
    assert {i.version for i in ids} == {5}


def test_client_retries_of_one_event_are_all_appended_for_the_processors(
    ingest: TestClient, redis_client: redis.Redis, settings: Settings
) -> None:
    """The ingest does not dedupe non-milestone retries; they reach the stream with one id."""
    event = make_event("progress", played=[[0, 5]])
    assert ingest.post("/v1/events", json=[event, event]).json()["accepted"] == 2
    assert ingest.post("/v1/events", json=event).json()["accepted"] == 1
    assert streamed_ids(redis_client, settings) == [event["event_id"]] * 3


# -- refused bodies --------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml"],
)
def test_other_content_type_is_415(
    ingest: TestClient, redis_client: redis.Redis, settings: Settings, content_type: str
) -> None:
    """Content types other than JSON and text/plain get 415 and nothing is appended."""
    response = post_raw(ingest, orjson.dumps(make_event()), content_type)
    assert "application/json" in error_of(response, 415)
    assert entries(redis_client, settings) == []


@pytest.mark.parametrize("body", [b"{", b"hello", b"", b'"\xff"', b'[{"type": "play",]'])
def test_body_that_is_not_json_is_400(
    ingest: TestClient, redis_client: redis.Redis, settings: Settings, body: bytes
) -> None:
    """A body that does not parse as JSON gets 400 saying so."""
    assert "not valid JSON" in error_of(post_raw(ingest, body), 400)
    assert entries(redis_client, settings) == []


@pytest.mark.parametrize(
    "token", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999", b"nan", b"inf"]
)
def test_non_finite_number_token_is_a_clear_400(
    ingest: TestClient, redis_client: redis.Redis, settings: Settings, token: bytes
) -> None:
    """NaN / Infinity tokens (and overflowing numbers) are refused as invalid JSON, never a 500."""
    event = make_event("play")
    body = orjson.dumps(event).replace(b'"position_s":0.0', b'"position_s":' + token)
    assert token in body
    assert "not valid JSON" in error_of(post_raw(ingest, body), 400)
    assert entries(redis_client, settings) == []


def test_body_over_the_limit_by_content_length_is_413(
    make_client: ClientFactory, redis_client: redis.Redis
) -> None:
    """A Content-Length over max_body_bytes gets 413 naming the limit."""
    client, settings = make_client(max_body_bytes=1000)
    body = orjson.dumps([make_event()] * 10)
    assert len(body) > 1000
    assert "1000 bytes" in error_of(post_raw(client, body), 413)
    assert entries(redis_client, settings) == []


def test_body_over_the_limit_when_streamed_is_413(
    make_client: ClientFactory, redis_client: redis.Redis
) -> None:
    """A chunked body (no Content-Length) is cut off with 413 once it passes the limit."""
    client, settings = make_client(max_body_bytes=1000)
    chunks = [orjson.dumps([make_event()] * 10)[i : i + 200] for i in range(0, 2000, 200)]
    response = client.post("/v1/events", content=iter(chunks), headers=JSON)
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    assert "1000 bytes" in error_of(response, 413)
    assert entries(redis_client, settings) == []


def test_body_of_exactly_the_limit_is_accepted(
    make_client: ClientFactory, redis_client: redis.Redis
) -> None:
    """A body of exactly max_body_bytes, streamed or not, is within the limit."""
    client, settings = make_client(max_body_bytes=1000)
    body = orjson.dumps(make_event())
    body += b" " * (1000 - len(body))
    assert post_raw(client, body).status_code == 202
    response = client.post("/v1/events", content=iter([body[:500], body[500:]]), headers=JSON)
    assert response.status_code == 202
    assert len(entries(redis_client, settings)) == 2


def test_more_events_than_the_limit_is_413(
    make_client: ClientFactory, redis_client: redis.Redis
) -> None:
    """More events than max_events_per_request get 413; exactly the limit is accepted."""
    client, settings = make_client(max_events_per_request=3)
    response = client.post("/v1/events", json=[make_event() for _ in range(4)])
    assert "limit is 3" in error_of(response, 413)
    assert entries(redis_client, settings) == []
    assert client.post("/v1/events", json=[make_event() for _ in range(3)]).status_code == 202


@pytest.mark.parametrize("body", [[], {"events": []}])
def test_request_without_events_is_422(ingest: TestClient, body: Any) -> None:
    """An empty array or events list holds no valid event: 422."""
    assert "no events" in error_of(ingest.post("/v1/events", json=body), 422)


@pytest.mark.parametrize(
    "body", [{"events": [], "extra": 1}, {"events": {"type": "play"}}, {"events": "x"}]
)
def test_malformed_events_wrapper_is_422(ingest: TestClient, body: Any) -> None:
    """An {"events": ...} body with other keys or a non-array value is refused, saying why."""
    assert '"events"' in error_of(ingest.post("/v1/events", json=body), 422)


_REJECTIONS: list[tuple[str, dict[str, Any], str]] = [
    ("play", {"referrer": "x"}, "referrer"),
    ("play", {"video_id": "video 1"}, "video_id"),
    ("play", {"session_id": "s" * 129}, "session_id"),
    ("play", {"viewer_id": ""}, "viewer_id"),
    ("play", {"event_id": "1234"}, "event_id"),
    ("play", {"ts": now_ms() - MAX_PAST_MS - 60_000}, "ts"),
    # A day ahead: still beyond the 5 minutes allowed when a slow suite reaches it.
    ("play", {"ts": now_ms() + 24 * 3600 * 1000}, "ts"),
    ("play", {"position_s": None}, "position_s"),
    ("progress", {"duration_s": None}, "duration_s"),
    ("milestone", {"milestone": None}, "milestone"),
    ("milestone", {"milestone": 60}, "milestone"),
    ("seek", {"from_s": None}, "from_s"),
    ("seek", {"to_s": None}, "to_s"),
    ("rate_change", {"rate": None}, "rate"),
    ("rate_change", {"rate": 20}, "rate"),
    ("quality_change", {"quality": None}, "quality"),
    ("quality_change", {"quality": "q" * 40}, "quality"),
    ("play", {"milestone": 50}, "milestone"),
    ("progress", {"played": [[10, 10]]}, "played.0"),
    ("progress", {"played": [[10, 5]]}, "played.0"),
    ("progress", {"played": [[0, 102]]}, "played.0"),
    ("progress", {"played": [[0, 1]] * 101}, "played"),
    ("progress", {"position_s": 102}, "position_s"),
    ("play", {"course_id": "c\u0000"}, "course_id"),
]


@pytest.mark.parametrize(
    ("type_", "fields", "field"), _REJECTIONS, ids=[f"{r[0]}-{r[2]}" for r in _REJECTIONS]
)
def test_event_breaking_the_contract_is_rejected_naming_the_field(
    ingest: TestClient,
    redis_client: redis.Redis,
    settings: Settings,
    type_: str,
    fields: dict[str, Any],
    field: str,
) -> None:
    """Each contract rule refuses its event with 422, the event's index, the field and a message."""
    response = ingest.post("/v1/events", json=[make_event(type_, **fields)])
    error_of(response, 422)
    [rejected] = response.json()["rejected"]
    assert rejected["index"] == 0
    assert field in [e["field"] for e in rejected["errors"]]
    assert all(e["message"] for e in rejected["errors"])
    assert entries(redis_client, settings) == []


def test_valid_events_of_a_mixed_batch_are_accepted_and_the_rest_listed(
    ingest: TestClient, redis_client: redis.Redis, settings: Settings
) -> None:
    """Partial acceptance: 202, only valid events appended, each invalid one listed by index."""
    good = [make_event("play"), make_event("pause"), make_event("milestone")]
    batch = [good[0], make_event("seek", to_s=None), good[1], "nope", good[2]]
    response = ingest.post(
        "/v1/events", json=batch, headers={"User-Agent": BROWSER_UA, "Referer": PAGE}
    )
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 3
    assert body["duplicates"] == 0
    assert [r["index"] for r in body["rejected"]] == [1, 3]
    assert body["rejected"][0]["errors"] == [{"field": "to_s", "message": "required for type seek"}]
    assert body["rejected"][1]["errors"][0]["message"] == "an event must be a JSON object"
    stored = entries(redis_client, settings)
    assert [orjson.loads(f[b"event"])["event_id"] for f in stored] == [e["event_id"] for e in good]
    for fields in stored:
        assert fields[b"user_agent"].decode() == BROWSER_UA
        assert fields[b"referer"].decode() == PAGE
        assert int(fields[b"received_at"]) > 0


def test_request_with_no_valid_event_is_422_listing_each(
    ingest: TestClient, redis_client: redis.Redis, settings: Settings
) -> None:
    """When no event is valid the answer is 422 with every index in rejected, nothing appended."""
    response = ingest.post("/v1/events", json=[make_event(video_id="a b"), 5, {}])
    assert "no valid event" in error_of(response, 422)
    assert [r["index"] for r in response.json()["rejected"]] == [0, 1, 2]
    assert entries(redis_client, settings) == []


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/events"), ("POST", "/v1/nothing")])
def test_unknown_route_or_method_answers_a_json_error(
    ingest: TestClient, method: str, path: str
) -> None:
    """404 and 405 bodies are JSON with an error string too."""
    response = ingest.request(method, path)
    error_of(response, 405 if path == "/v1/events" else 404)


# -- milestone dedupe ------------------------------------------------------------------


def test_second_milestone_of_a_viewer_is_a_duplicate_and_not_appended(
    ingest: TestClient, redis_client: redis.Redis, settings: Settings
) -> None:
    """Milestone 50 of the same (video, viewer) counts once; the repeat is in duplicates."""
    first = make_event("milestone", milestone=50)
    again = make_event("milestone", milestone=50, session_id="session-2")
    assert ingest.post("/v1/events", json=first).json() == {
        "accepted": 1,
        "duplicates": 0,
        "rejected": [],
    }
    assert ingest.post("/v1/events", json=again).json() == {
        "accepted": 0,
        "duplicates": 1,
        "rejected": [],
    }
    assert streamed_ids(redis_client, settings) == [first["event_id"]]


def test_repeated_milestone_within_one_request_is_appended_once(
    ingest: TestClient, redis_client: redis.Redis, settings: Settings
) -> None:
    """Two identical milestones in one request: one accepted, one duplicate."""
    batch = [make_event("milestone"), make_event("play"), make_event("milestone")]
    response = ingest.post("/v1/events", json=batch)
    assert response.json() == {"accepted": 2, "duplicates": 1, "rejected": []}
    assert streamed_ids(redis_client, settings) == [batch[0]["event_id"], batch[1]["event_id"]]


@pytest.mark.parametrize(
    "other", [{"milestone": 75}, {"viewer_id": "viewer-2"}, {"video_id": "video-2"}]
)
def test_milestone_of_another_value_viewer_or_video_is_appended(
    ingest: TestClient, redis_client: redis.Redis, settings: Settings, other: dict[str, Any]
) -> None:
    """Dedupe is per (video, viewer, milestone): changing any of them appends."""
    ingest.post("/v1/events", json=make_event("milestone", milestone=50))
    response = ingest.post("/v1/events", json=make_event("milestone", **{"milestone": 50, **other}))
    assert response.json()["accepted"] == 1
    assert len(entries(redis_client, settings)) == 2


def test_dedupe_key_is_set_with_the_configured_ttl(
    make_client: ClientFactory, redis_client: redis.Redis
) -> None:
    """The key {stream}:dedupe:{video}:{viewer}:m50 (':' in ids encoded) expires within the TTL."""
    client, settings = make_client(dedupe_ttl_seconds=120)
    client.post("/v1/events", json=make_event("milestone", video_id="v.9", viewer_id="u:4"))
    key = f"{settings.stream}:dedupe:v.9:u%3A4:m50"
    assert redis_client.exists(key) == 1
    assert 0 < redis_client.ttl(key) <= 120


def test_milestones_of_pairs_whose_ids_join_alike_are_not_duplicates(
    ingest: TestClient, redis_client: redis.Redis, settings: Settings
) -> None:
    """Video col-a:b with viewer c and video col-a with viewer b:c keep two dedupe keys."""
    first = make_event("milestone", video_id="col-a:b", viewer_id="c")
    second = make_event("milestone", video_id="col-a", viewer_id="b:c")
    assert ingest.post("/v1/events", json=first).json()["accepted"] == 1
    assert ingest.post("/v1/events", json=second).json() == {
        "accepted": 1,
        "duplicates": 0,
        "rejected": [],
    }
    assert len(entries(redis_client, settings)) == 2
    assert len(redis_client.keys(f"{settings.stream}:dedupe:*")) == 2


def test_rejected_or_refused_milestone_sets_no_dedupe_key(
    make_client: ClientFactory, redis_client: redis.Redis
) -> None:
    """A milestone refused for backpressure leaves no key: its retry is not a duplicate."""
    client, settings = make_client(max_stream_length=1)
    client.post("/v1/events", json=make_event("play"))
    milestone = make_event("milestone")
    assert client.post("/v1/events", json=milestone).status_code == 503
    assert redis_client.keys(f"{settings.stream}:dedupe:*") == []


def test_concurrent_identical_milestones_on_two_replicas_append_exactly_one(
    make_client: ClientFactory, redis_client: redis.Redis
) -> None:
    """Racing requests for one milestone, through two ingest apps, append it exactly once."""
    replicas = [make_client()[0], make_client()[0]]
    settings = make_client()[1]
    barrier = threading.Barrier(16)
    answers: list[dict[str, Any]] = []
    lock = threading.Lock()

    def send(client: TestClient) -> None:
        event = make_event("milestone", milestone=90, session_id=uuid.uuid4().hex)
        barrier.wait()
        body = client.post("/v1/events", json=event).json()
        with lock:
            answers.append(body)

    threads = [threading.Thread(target=send, args=(replicas[i % 2],)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 16
    assert sum(a["accepted"] for a in answers) == 1
    assert sum(a["duplicates"] for a in answers) == 15
    assert len(entries(redis_client, settings)) == 1


# -- Redis away, backpressure ----------------------------------------------------------


def test_unreachable_redis_is_503_with_retry_after(make_client: ClientFactory) -> None:
    """With Redis unreachable the ingest answers 503 + Retry-After, never 202."""
    client, _settings = make_client(
        redis_url=f"redis://127.0.0.1:{free_port()}/0", retry_after_seconds=7
    )
    response = client.post("/v1/events", json=[make_event(), make_event("milestone")])
    assert "retry" in error_of(response, 503)
    assert response.headers["retry-after"] == "7"


def test_stream_over_its_backpressure_mark_is_503_and_appends_nothing(
    make_client: ClientFactory, redis_client: redis.Redis
) -> None:
    """Once the stream holds max_stream_length entries, requests get 503 + Retry-After."""
    client, settings = make_client(max_stream_length=2)
    assert client.post("/v1/events", json=[make_event(), make_event()]).status_code == 202
    response = client.post("/v1/events", json=make_event())
    assert "retry" in error_of(response, 503)
    assert response.headers["retry-after"] == str(settings.retry_after_seconds)
    assert len(entries(redis_client, settings)) == 2


def test_backpressure_mark_is_soft_a_round_may_pass_it_the_next_is_refused(
    make_client: ClientFactory, redis_client: redis.Redis
) -> None:
    """The mark is checked once a round: a round under it passes it whole, the next gets 503."""
    client, settings = make_client(max_stream_length=3)
    assert client.post("/v1/events", json=[make_event(), make_event()]).status_code == 202
    five = [make_event() for _ in range(5)]
    assert client.post("/v1/events", json=five).json()["accepted"] == 5
    assert len(entries(redis_client, settings)) == 7
    assert "retry" in error_of(client.post("/v1/events", json=make_event()), 503)
    assert len(entries(redis_client, settings)) == 7
    redis_client.xtrim(settings.stream, maxlen=0)
    assert client.post("/v1/events", json=make_event()).status_code == 202  # seen again


def test_milestone_whose_append_fails_keeps_no_dedupe_key(
    make_client: ClientFactory, redis_client: redis.Redis
) -> None:
    """Dedupe and append are one step: a failed XADD takes its dedupe key back; retry appends."""
    client, settings = make_client()
    assert client.post("/v1/events", json=make_event()).status_code == 202
    redis_client.delete(settings.stream)
    redis_client.set(settings.stream, "not a stream")  # every XADD now fails (WRONGTYPE)
    milestone = make_event("milestone", milestone=75)
    failed = client.post("/v1/events", json=[make_event("play"), milestone])
    assert "retry" in error_of(failed, 503)
    assert redis_client.keys(f"{settings.stream}:dedupe:*") == []
    redis_client.delete(settings.stream)
    retried = client.post("/v1/events", json=[make_event("play"), milestone])
    assert retried.json() == {"accepted": 2, "duplicates": 0, "rejected": []}
    assert len(redis_client.keys(f"{settings.stream}:dedupe:*")) == 1
    assert len(entries(redis_client, settings)) == 2


# -- CORS, health, tracker -------------------------------------------------------------


def test_cors_preflight_allows_a_json_post_from_any_origin(ingest: TestClient) -> None:
    """An OPTIONS preflight for POST with Content-Type is allowed for any origin by default."""
    response = ingest.options(
        "/v1/events",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "content-type" in response.headers["access-control-allow-headers"].lower()


def test_simple_cors_post_carries_allow_origin(ingest: TestClient) -> None:
    """A cross-origin POST (as sendBeacon makes) gets Access-Control-Allow-Origin."""
    response = ingest.post(
        "/v1/events",
        content=orjson.dumps(make_event()),
        headers={"Origin": "https://shop.example", "content-type": "text/plain"},
    )
    assert response.status_code == 202
    assert response.headers["access-control-allow-origin"] == "*"


def test_cors_answers_only_configured_origins(make_client: ClientFactory) -> None:
    """With VIDPULSE_CORS_ORIGINS set, other origins get no CORS grant."""
    client, _ = make_client(cors_origins="https://a.example")
    preflight = {"Access-Control-Request-Method": "POST"}
    allowed = client.options("/v1/events", headers={"Origin": "https://a.example", **preflight})
    assert allowed.headers["access-control-allow-origin"] == "https://a.example"
    denied = client.options("/v1/events", headers={"Origin": "https://b.example", **preflight})
    assert denied.status_code == 400
    assert "access-control-allow-origin" not in denied.headers


def test_healthz_answers_while_redis_is_away(make_client: ClientFactory) -> None:
    """/healthz says the process is alive, whatever Redis does."""
    client, _ = make_client(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_200_when_redis_answers(ingest: TestClient) -> None:
    """/readyz is 200 when Redis answers."""
    response = ingest.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"


def test_readyz_is_503_when_redis_is_unreachable(make_client: ClientFactory) -> None:
    """/readyz is 503, naming redis, when Redis does not answer."""
    client, _ = make_client(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "redis" in response.json()["error"]


def test_tracker_js_is_served_as_javascript_with_cache_headers(ingest: TestClient) -> None:
    """GET /v1/tracker.js answers JavaScript with a Cache-Control header."""
    response = ingest.get("/v1/tracker.js")
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] in (
        "text/javascript",
        "application/javascript",
    )
    assert "max-age" in response.headers["cache-control"]
    assert "vidpulse" in response.text
