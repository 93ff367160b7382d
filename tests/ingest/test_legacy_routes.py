"""The compatibility routes, against a real Redis: bodies in, canonical events out."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx2
import orjson
import psycopg
import pytest
import redis
from starlette.testclient import TestClient

from tests.factories import BROWSER_UA, PAGE, run_burst
from tests.ingest.conftest import ClientFactory
from vidpulse.devservices import free_port
from vidpulse.events import MAX_PAST_MS, now_ms, parse_event
from vidpulse.keys import Keys
from vidpulse.settings import Settings

VIEW = "/api/analytics/video-view"
PROGRESS = "/api/analytics/video-progress"
COMPLETE = "/api/analytics/video-complete"


def streamed(client: redis.Redis, settings: Settings) -> list[dict[str, Any]]:
    """The events of the test's stream, oldest first, each checked against the contract."""
    events = []
    for _, fields in client.xrange(settings.stream):
        event = orjson.loads(fields[b"event"])
        parse_event(event)
        events.append(event)
    return events


def error_of(response: httpx2.Response, status: int) -> str:
    """Assert `response` is a JSON error with this status; return its `error` string."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert isinstance(error, str)
    assert error.strip()
    return error


def watched50_body(**fields: Any) -> dict[str, Any]:
    """A body of the watched-50% call; `fields` override (None removes a field)."""
    body = {
        "videoId": "video-1",
        "event": "watched_50_percent",
        "ts": int(time.time()),
        "userId": "user-1",
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


def view(**fields: Any) -> dict[str, Any]:
    """A video-view body; `fields` override (None removes a field)."""
    body = {
        "video_id": "video-7",
        "course_id": "course-3",
        "session_id": "1699123456789-kx7m2n4",
        "video_duration_seconds": 600,
        "lesson_id": "lesson-1",
        "is_preview": False,
        "user_id": "user-42",
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


def progress(**fields: Any) -> dict[str, Any]:
    """A video-progress body; `fields` override (None removes a field)."""
    body = {
        "session_id": "1699123456789-kx7m2n4",
        "current_position_seconds": 120,
        "watch_time_seconds": 118.5,
        "play_count": 1,
        "pause_count": 0,
        "seek_count": 0,
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


# -- POST /analytics: the watched-50% call -----------------------------------------------


def test_watched50_event_becomes_a_milestone_50_event_in_the_stream(
    ingest: TestClient, redis_client: redis.Redis, settings: Settings
) -> None:
    """watched_50_percent (ts in seconds) is appended as milestone 50, viewer = userId, ts in ms."""
    body = watched50_body(ts=int(time.time()) - 30)
    response = ingest.post(
        "/analytics", json=body, headers={"User-Agent": BROWSER_UA, "Referer": PAGE}
    )
    assert response.status_code == 202
    assert response.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    [event] = streamed(redis_client, settings)
    assert event["type"] == "milestone"
    assert event["milestone"] == 50
    assert event["video_id"] == "video-1"
    assert event["viewer_id"] == "user-1"
    assert event["ts"] == body["ts"] * 1000
    assert event["session_id"].startswith("watched50-")
    assert "position_s" not in event
    [(_, fields)] = redis_client.xrange(settings.stream)
    assert fields[b"user_agent"].decode() == BROWSER_UA
    assert fields[b"referer"].decode() == PAGE


def test_watched50_event_id_is_the_same_for_every_retry_of_a_video_and_user(
    ingest: TestClient, redis_client: redis.Redis, settings: Settings
) -> None:
    """The event_id is uuid5 of video and user: a resend after the dedupe TTL is the same event."""
    assert ingest.post("/analytics", json=watched50_body()).json()["accepted"] == 1
    redis_client.delete(Keys(settings.stream).watched50_dedupe("video-1", "user-1"))
    assert ingest.post("/analytics", json=watched50_body(ts=now_ms())).json()["accepted"] == 1
    first, second = streamed(redis_client, settings)
    assert first["event_id"] == second["event_id"]
    assert first["session_id"] == second["session_id"]
    assert uuid.UUID(first["event_id"]).version == 5


def test_watched50_ts_in_milliseconds_is_taken_as_is(
    ingest: TestClient, redis_client: redis.Redis, settings: Settings
) -> None:
    """A ts of 1e11 or more is milliseconds (Date.now()); fractions of seconds are kept as ms."""
    ms = now_ms() - 5000
    assert ingest.post("/analytics", json=watched50_body(ts=ms)).status_code == 202
    assert (
        ingest.post("/analytics", json=watched50_body(userId="u2", ts=ms / 1000)).status_code == 202
    )
    assert [e["ts"] for e in streamed(redis_client, settings)] == [ms, ms]


def test_watched50_body_as_text_plain_is_accepted(
    ingest: TestClient, redis_client: redis.Redis, settings: Settings
) -> None:
    """A sendBeacon / fetch-with-a-string body (text/plain) is accepted like JSON."""
    response = ingest.post(
        "/analytics",
        content=orjson.dumps(watched50_body()),
        headers={"content-type": "text/plain;charset=UTF-8"},
    )
    assert response.status_code == 202
    assert len(streamed(redis_client, settings)) == 1


def test_watched50_repeat_is_a_duplicate_under_its_dedupe_key_with_its_ttl(
    make_client: ClientFactory, redis_client: redis.Redis
) -> None:
    """The second watched_50 of a video and user is a duplicate; its dedupe key has the TTL."""
    client, settings = make_client(dedupe_ttl_seconds=120)
    assert (
        client.post("/analytics", json=watched50_body(videoId="v.9", userId="u:4")).json()[
            "accepted"
        ]
        == 1
    )
    again = client.post("/analytics", json=watched50_body(videoId="v.9", userId="u:4", ts=now_ms()))
    assert again.status_code == 202
    assert again.json() == {"accepted": 0, "duplicates": 1, "rejected": []}
    assert len(streamed(redis_client, settings)) == 1
    key = f"{settings.stream}:dedupe:video:v.9:user:u%3A4:watched50"
    assert key == Keys(settings.stream).watched50_dedupe("v.9", "u:4")
    assert redis_client.exists(key) == 1
    assert 0 < redis_client.ttl(key) <= 120


def test_watched50_pairs_whose_ids_join_alike_keep_their_own_dedupe_keys(
    ingest: TestClient, redis_client: redis.Redis, settings: Settings
) -> None:
    """Video a:user:b with user c and video a with user b:user:c are two milestones, not one."""
    first = ingest.post("/analytics", json=watched50_body(videoId="a:user:b", userId="c"))
    second = ingest.post("/analytics", json=watched50_body(videoId="a", userId="b:user:c"))
    assert first.json()["accepted"] == second.json()["accepted"] == 1
    assert len(streamed(redis_client, settings)) == 2


@pytest.mark.parametrize("other", [{"userId": "user-2"}, {"videoId": "video-2"}])
def test_watched50_for_another_user_or_video_is_appended(
    ingest: TestClient, redis_client: redis.Redis, settings: Settings, other: dict[str, str]
) -> None:
    """Dedupe is per (video, user): another user or video is a new milestone."""
    ingest.post("/analytics", json=watched50_body())
    assert ingest.post("/analytics", json=watched50_body(**other)).json()["accepted"] == 1
    assert len(streamed(redis_client, settings)) == 2


@pytest.mark.parametrize("event", ["watched_25_percent", "play", 50, None])
def test_watched50_other_event_is_422_naming_the_supported_one(
    ingest: TestClient, redis_client: redis.Redis, settings: Settings, event: Any
) -> None:
    """Only watched_50_percent is accepted; anything else is 422 naming it, and sets no key."""
    body = watched50_body()
    body["event"] = event
    assert "watched_50_percent" in error_of(ingest.post("/analytics", json=body), 422)
    assert streamed(redis_client, settings) == []
    assert redis_client.keys(f"{settings.stream}:dedupe:*") == []


WATCHED50_REJECTIONS: list[tuple[dict[str, Any], str]] = [
    ({"videoId": None}, "videoId"),
    ({"userId": None}, "userId"),
    ({"ts": None}, "ts"),
    ({"event": None}, "event"),
    ({"videoId": "video 1"}, "videoId"),
    ({"userId": ""}, "userId"),
    ({"userId": "u" * 129}, "userId"),
    ({"videoId": 17}, "videoId"),
    ({"ts": "1699999999"}, "ts"),
    ({"ts": True}, "ts"),
    ({"ts": -5}, "ts"),
    ({"ts": int(time.time()) - 8 * 86400}, "ts"),
    ({"ts": now_ms() - MAX_PAST_MS - 60_000}, "ts"),
    ({"ts": int(time.time()) + 3600}, "ts"),
    ({"sessionId": "s-1"}, "sessionId"),
]


@pytest.mark.parametrize(
    ("fields", "field"),
    WATCHED50_REJECTIONS,
    ids=[f"{r[1]}-{i}" for i, r in enumerate(WATCHED50_REJECTIONS)],
)
def test_watched50_body_breaking_its_rules_is_422_naming_the_field(
    ingest: TestClient,
    redis_client: redis.Redis,
    settings: Settings,
    fields: dict[str, Any],
    field: str,
) -> None:
    """Missing, mistyped, out-of-alphabet, out-of-window or unknown fields: 422 naming the field."""
    response = ingest.post("/analytics", json=watched50_body(**fields))
    error = error_of(response, 422)
    assert field in error
    [rejected] = response.json()["rejected"]
    assert field in [e["field"] for e in rejected["errors"]]
    assert streamed(redis_client, settings) == []


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"{", "application/json", 400),
        (b"", "application/json", 400),
        (b"[]", "application/json", 422),
        (b'"watched_50_percent"', "application/json", 422),
        (orjson.dumps(watched50_body()), "application/x-www-form-urlencoded", 415),
    ],
)
def test_watched50_body_that_is_not_one_json_object_is_a_json_error(
    ingest: TestClient, body: bytes, content_type: str, status: int
) -> None:
    """Not JSON, not an object, or another content type: a JSON error, never a 500."""
    response = ingest.post("/analytics", content=body, headers={"content-type": content_type})
    error_of(response, status)


def test_watched50_oversized_body_is_413(make_client: ClientFactory) -> None:
    """The body limit of POST /v1/events holds here too."""
    client, _ = make_client(max_body_bytes=200)
    error_of(
        client.post("/analytics", json=watched50_body(videoId="v" * 128, extra="x" * 200)), 413
    )


def test_watched50_with_redis_unreachable_is_503_with_retry_after(
    make_client: ClientFactory,
) -> None:
    """No Redis: 503 + Retry-After, so the client keeps the event."""
    client, _ = make_client(redis_url=f"redis://127.0.0.1:{free_port()}/0", retry_after_seconds=3)
    response = client.post("/analytics", json=watched50_body())
    assert "retry" in error_of(response, 503)
    assert response.headers["retry-after"] == "3"


def test_watched50_refused_for_backpressure_sets_no_dedupe_key(
    make_client: ClientFactory, redis_client: redis.Redis
) -> None:
    """A watched_50 refused with 503 sets no dedupe key: its retry is appended, not a duplicate."""
    client, settings = make_client(max_stream_length=1)
    redis_client.xadd(settings.stream, {"event": "{}"})
    error_of(client.post("/analytics", json=watched50_body()), 503)
    assert redis_client.keys(f"{settings.stream}:dedupe:*") == []
    redis_client.delete(settings.stream)
    assert client.post("/analytics", json=watched50_body()).json()["accepted"] == 1


def test_watched50_events_count_once_per_viewer_in_watched_50_count(
    ingest: TestClient, settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """Through the metrics processor: two users (one posting twice) give watched_50_count = 2."""
    for user in ("user-1", "user-1", "user-2"):
        assert (
            ingest.post(
                "/analytics", json=watched50_body(videoId="watched", userId=user)
            ).status_code
            == 202
        )
    ingest.post("/analytics", json=watched50_body(videoId="other", userId="user-1"))
    run_burst(settings, "metrics")
    rows = db.execute(
        "SELECT video_id, watched_50_count, unique_viewers, views FROM video_metrics"
        " ORDER BY video_id"
    ).fetchall()
    assert rows == [("other", 1, 1, 0), ("watched", 2, 2, 0)]


# -- POST /api/analytics/*: the view/progress/complete routes -----------------------------


def test_video_view_becomes_session_start_and_remembers_the_session(
    make_client: ClientFactory, redis_client: redis.Redis
) -> None:
    """video-view appends session_start with every context field and keeps the session hash."""
    client, settings = make_client(legacy_session_ttl_seconds=300)
    before = now_ms()
    response = client.post(VIEW, json=view(), headers={"User-Agent": BROWSER_UA, "Referer": PAGE})
    assert response.status_code == 202
    assert response.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    [event] = streamed(redis_client, settings)
    assert {k: v for k, v in event.items() if k not in ("event_id", "ts")} == {
        "type": "session_start",
        "video_id": "video-7",
        "session_id": "1699123456789-kx7m2n4",
        "viewer_id": "user-42",
        "position_s": 0.0,
        "duration_s": 600.0,
        "course_id": "course-3",
        "lesson_id": "lesson-1",
        "is_preview": False,
    }
    assert before <= event["ts"] <= now_ms()
    [(_, fields)] = redis_client.xrange(settings.stream)
    assert fields[b"user_agent"].decode() == BROWSER_UA
    assert fields[b"referer"].decode() == PAGE
    key = Keys(settings.stream).legacy_session("1699123456789-kx7m2n4")
    assert key == f"{settings.stream}:legacy:session:1699123456789-kx7m2n4"
    remembered = {k.decode(): v.decode() for k, v in redis_client.hgetall(key).items()}
    assert remembered["video_id"] == "video-7"
    assert remembered["viewer_id"] == "user-42"
    assert remembered["course_id"] == "course-3"
    assert remembered["lesson_id"] == "lesson-1"
    assert remembered["is_preview"] == "0"
    assert float(remembered["duration_s"]) == 600
    assert 0 < redis_client.ttl(key) <= 300


def test_repeated_video_view_is_the_same_session_start(
    ingest: TestClient, redis_client: redis.Redis, settings: Settings
) -> None:
    """A retried video-view re-sends the same event_id, so the view counts once downstream."""
    ingest.post(VIEW, json=view())
    assert ingest.post(VIEW, json=view()).status_code == 202
    first, second = streamed(redis_client, settings)
    assert first["event_id"] == second["event_id"]


def test_video_view_without_user_id_gets_an_anonymous_viewer_per_session(
    ingest: TestClient, redis_client: redis.Redis, settings: Settings
) -> None:
    """Without user_id the viewer is anon-<uuid5 of the session>, also on the session's progress."""
    ingest.post(VIEW, json=view(user_id=None, session_id="s-a"))
    ingest.post(VIEW, json=view(user_id=None, session_id="s-b"))
    ingest.post(PROGRESS, json=progress(session_id="s-a"))
    start_a, start_b, *rest = streamed(redis_client, settings)
    assert start_a["viewer_id"].startswith("anon-")
    assert start_a["viewer_id"] != start_b["viewer_id"]
    assert {e["viewer_id"] for e in rest} == {start_a["viewer_id"]}


def test_video_progress_becomes_progress_and_the_rise_of_counts_becomes_events(
    ingest: TestClient, redis_client: redis.Redis, settings: Settings
) -> None:
    """progress carries position and duration (no played); each count's rise is that many events."""
    ingest.post(VIEW, json=view())
    first = ingest.post(PROGRESS, json=progress(play_count=2, pause_count=1, seek_count=1))
    assert first.json() == {"accepted": 5, "duplicates": 0, "rejected": []}
    second = ingest.post(
        PROGRESS,
        json=progress(current_position_seconds=150.5, play_count=3, pause_count=1, seek_count=1),
    )
    assert second.json()["accepted"] == 2
    events = streamed(redis_client, settings)
    assert [e["type"] for e in events] == [
        "session_start", "play", "play", "pause", "seek", "progress", "play", "progress",
    ]  # fmt: skip
    for event in events[1:]:
        assert event["video_id"] == "video-7"
        assert event["viewer_id"] == "user-42"
        assert event["course_id"] == "course-3"
        assert event["lesson_id"] == "lesson-1"
        assert "played" not in event
    assert events[5]["position_s"] == 120
    assert events[5]["duration_s"] == 600
    assert events[7]["position_s"] == 150.5
    assert (events[4]["from_s"], events[4]["to_s"]) == (0, 120)
    assert len({e["event_id"] for e in events}) == len(events)
    key = Keys(settings.stream).legacy_session("1699123456789-kx7m2n4")
    counts = redis_client.hmget(key, ["play_count", "pause_count", "seek_count", "position_s"])
    assert counts == [b"3", b"1", b"1", b"150.5"]


def test_retried_video_progress_re_sends_the_same_event_ids(
    ingest: TestClient, redis_client: redis.Redis, settings: Settings
) -> None:
    """The same report twice (a client retry) makes the same event ids: processors count it once."""
    ingest.post(VIEW, json=view())
    body = progress(play_count=1)
    ingest.post(PROGRESS, json=body)
    key = Keys(settings.stream).legacy_session("1699123456789-kx7m2n4")
    redis_client.hset(key, "play_count", "0")  # as if the first answer was lost before it was kept
    ingest.post(PROGRESS, json=body)
    (
        _,
        *first,
    ) = streamed(redis_client, settings)
    ids = [e["event_id"] for e in first]
    assert len(ids) == 4
    assert ids[:2] == ids[2:]


def test_count_that_falls_or_stays_sends_no_events_and_is_not_lowered(
    ingest: TestClient, redis_client: redis.Redis, settings: Settings
) -> None:
    """Counts are cumulative: a lower or equal report adds no play/pause/seek events."""
    ingest.post(VIEW, json=view())
    ingest.post(PROGRESS, json=progress(play_count=3))
    response = ingest.post(PROGRESS, json=progress(play_count=2, current_position_seconds=130))
    assert response.json()["accepted"] == 1
    assert [e["type"] for e in streamed(redis_client, settings)][-1] == "progress"
    key = Keys(settings.stream).legacy_session("1699123456789-kx7m2n4")
    assert redis_client.hget(key, "play_count") == b"3"


def test_a_count_jump_is_capped_per_report(
    ingest: TestClient, redis_client: redis.Redis, settings: Settings
) -> None:
    """A count rising by more than 100 in one report adds 100 events, never thousands."""
    ingest.post(VIEW, json=view())
    assert ingest.post(PROGRESS, json=progress(pause_count=10**9)).json()["accepted"] == 102
    pauses = [e for e in streamed(redis_client, settings) if e["type"] == "pause"]
    assert len(pauses) == 100


def test_video_complete_becomes_complete_once_per_session(
    ingest: TestClient, redis_client: redis.Redis, settings: Settings
) -> None:
    """video-complete appends complete at the given or last known position; repeats share one id."""
    ingest.post(VIEW, json=view())
    ingest.post(PROGRESS, json=progress(current_position_seconds=500))
    assert ingest.post(COMPLETE, json={"session_id": "1699123456789-kx7m2n4"}).status_code == 202
    again = {"session_id": "1699123456789-kx7m2n4", "current_position_seconds": 560}
    assert ingest.post(COMPLETE, json=again).status_code == 202
    *_, first, second = streamed(redis_client, settings)
    assert (first["type"], first["position_s"], first["duration_s"]) == ("complete", 500, 600)
    assert (second["type"], second["position_s"]) == ("complete", 560)
    assert first["event_id"] == second["event_id"]


@pytest.mark.parametrize("path", [PROGRESS, COMPLETE])
def test_report_for_an_unknown_session_is_404_saying_to_post_a_view_first(
    ingest: TestClient, redis_client: redis.Redis, settings: Settings, path: str
) -> None:
    """progress/complete of a session no video-view announced (or expired) is 404, not appended."""
    error = error_of(ingest.post(path, json=progress(session_id="never-seen")), 404)
    assert "never-seen" in error
    assert "video-view" in error
    assert streamed(redis_client, settings) == []


def test_expired_session_is_unknown(make_client: ClientFactory, redis_client: redis.Redis) -> None:
    """The session hash lives legacy_session_ttl_seconds after its last request."""
    client, settings = make_client(legacy_session_ttl_seconds=1)
    client.post(VIEW, json=view())
    key = Keys(settings.stream).legacy_session("1699123456789-kx7m2n4")
    deadline = time.monotonic() + 10
    while redis_client.exists(key) and time.monotonic() < deadline:
        time.sleep(0.1)
    error_of(client.post(PROGRESS, json=progress()), 404)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (PROGRESS, progress(video_id="video-8"), "video_id"),
        (COMPLETE, progress(user_id="user-43"), "user_id"),
        (VIEW, view(video_id="video-8"), "session_id"),
        (VIEW, view(user_id="user-43"), "session_id"),
    ],
)
def test_request_naming_another_video_or_viewer_for_a_session_is_409(
    ingest: TestClient,
    redis_client: redis.Redis,
    settings: Settings,
    path: str,
    body: dict[str, Any],
    field: str,
) -> None:
    """A session belongs to the video and viewer of its first video-view; others are a conflict."""
    ingest.post(VIEW, json=view())
    assert field in error_of(ingest.post(path, json=body), 409)
    assert len(streamed(redis_client, settings)) == 1


def test_known_harmless_extra_fields_are_ignored(
    ingest: TestClient, redis_client: redis.Redis, settings: Settings
) -> None:
    """Request-context and derived fields such a client may send are accepted and not kept."""
    extra = {
        "user_agent": "spoofed",
        "referrer": "https://x.example",
        "ip_address": "203.0.113.9",
        "device_type": "desktop",
        "completion_percentage": 20.5,
        "max_position_seconds": 130,
    }
    assert ingest.post(VIEW, json=view(**extra)).status_code == 202
    assert ingest.post(PROGRESS, json=progress(**extra)).status_code == 202
    entries = redis_client.xrange(settings.stream)
    assert all(
        b"203.0.113.9" not in f[b"event"] and b"spoofed" not in f[b"event"] for _, f in entries
    )
    assert all(f[b"user_agent"] == b"testclient" for _, f in entries)


REPORT_REJECTIONS: list[tuple[str, dict[str, Any], str]] = [
    (VIEW, view(video_id=None), "video_id"),
    (VIEW, view(session_id=None), "session_id"),
    (VIEW, view(video_duration_seconds=None), "video_duration_seconds"),
    (VIEW, view(video_duration_seconds=0), "video_duration_seconds"),
    (VIEW, view(video_duration_seconds="600"), "video_duration_seconds"),
    (VIEW, view(session_id="has space"), "session_id"),
    (VIEW, view(is_preview="false"), "is_preview"),
    (VIEW, view(course_id=7), "course_id"),
    (VIEW, view(current_position_seconds=700), "current_position_seconds"),
    (VIEW, view(favourite_colour="blue"), "favourite_colour"),
    (PROGRESS, progress(current_position_seconds=None), "current_position_seconds"),
    (PROGRESS, progress(current_position_seconds=-1), "current_position_seconds"),
    (PROGRESS, progress(current_position_seconds=602), "current_position_seconds"),
    (PROGRESS, progress(play_count="3"), "play_count"),
    (PROGRESS, progress(pause_count=1.5), "pause_count"),
    (PROGRESS, progress(seek_count=-1), "seek_count"),
    (PROGRESS, progress(watch_time_seconds="1m"), "watch_time_seconds"),
    (PROGRESS, progress(lesson_id=["l"]), "lesson_id"),
    (PROGRESS, progress(played=[[0, 5]]), "played"),
    (COMPLETE, {"session_id": "1699123456789-kx7m2n4", "current_position_seconds": True},
     "current_position_seconds"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "body", "field"),
    REPORT_REJECTIONS,
    ids=[f"{r[0].rsplit('-', 1)[-1]}-{r[2]}-{i}" for i, r in enumerate(REPORT_REJECTIONS)],
)
def test_report_route_body_breaking_its_rules_is_422_naming_the_field(
    ingest: TestClient,
    redis_client: redis.Redis,
    settings: Settings,
    path: str,
    body: dict[str, Any],
    field: str,
) -> None:
    """Missing, mistyped, out-of-range or unknown fields: 422 naming the field, nothing appended."""
    if path != VIEW:
        ingest.post(VIEW, json=view())
    before = len(streamed(redis_client, settings))
    response = ingest.post(path, json=body)
    assert field in error_of(response, 422)
    [rejected] = response.json()["rejected"]
    assert field in [e["field"] for e in rejected["errors"]]
    assert len(streamed(redis_client, settings)) == before


@pytest.mark.parametrize("path", [VIEW, PROGRESS, COMPLETE])
@pytest.mark.parametrize(
    ("body", "status"), [(b"nope", 400), (b"[{}]", 422), (b"null", 422), (b"{}", 422)]
)
def test_report_route_body_that_is_not_a_json_object_is_a_json_error(
    ingest: TestClient, path: str, body: bytes, status: int
) -> None:
    """Bodies that are not one JSON object, or an empty one, answer a JSON error, never a 500."""
    error_of(ingest.post(path, content=body, headers={"content-type": "text/plain"}), status)


@pytest.mark.parametrize("path", [VIEW, PROGRESS])
def test_report_route_with_redis_unreachable_is_503_with_retry_after(
    make_client: ClientFactory, path: str
) -> None:
    """No Redis: 503 + Retry-After, whether the session lookup or the append fails."""
    client, _ = make_client(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    body = view() if path == VIEW else progress()
    response = client.post(path, json=body)
    assert "retry" in error_of(response, 503)
    assert response.headers["retry-after"]


def test_report_route_session_reaches_the_tables_without_played_ranges(
    ingest: TestClient, settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """Through the processors: view, counts, position, completion; no coverage, no heatmap views."""
    headers = {"User-Agent": BROWSER_UA, "Referer": PAGE}
    ingest.post(VIEW, json=view(), headers=headers)
    ingest.post(PROGRESS, json=progress(play_count=2, pause_count=1, seek_count=1), headers=headers)
    ingest.post(
        PROGRESS, json=progress(current_position_seconds=580, play_count=2), headers=headers
    )
    ingest.post(COMPLETE, json={"session_id": "1699123456789-kx7m2n4"}, headers=headers)
    for name in ("raw", "heatmap", "progress", "metrics"):
        run_burst(settings, name)
    assert db.execute("SELECT count(*) FROM video_events").fetchone() == (8,)
    session = db.execute(
        "SELECT video_id, viewer_id, course_id, lesson_id, plays, pauses, seeks, position_s,"
        " max_position_s, watch_seconds, unique_seconds, completed, browser, referrer"
        " FROM video_sessions"
    ).fetchone()
    assert session == (
        "video-7", "user-42", "course-3", "lesson-1", 2, 1, 1, 580, 580, 0, 0, True,
        "Chrome", PAGE,
    )  # fmt: skip
    metrics = db.execute(
        "SELECT views, unique_viewers, plays, pauses, seeks, completions, watch_seconds"
        " FROM video_metrics WHERE video_id = 'video-7'"
    ).fetchone()
    assert metrics == (1, 1, 2, 1, 1, 1, 0)
    heatmap = db.execute(
        "SELECT segment_start, views, watch_seconds, drop_offs FROM video_heatmap"
    ).fetchall()
    assert heatmap == [(580, 0, 0, 1)]  # only the drop-off, from the latest position
    progress_row = db.execute(
        "SELECT viewer_id, position_s, duration_s, completed FROM video_watch_progress"
    ).fetchone()
    assert progress_row == ("user-42", 580, 600, True)
