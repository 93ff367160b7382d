"""The ingest's edge against hostile input (docs/security.md): bounds, origins, signed viewers,
rate limits, what is kept of a request, and the OpenAPI description.

Everything goes through the real app and Redis; where the effect is in the tables, the
processors run too and PostgreSQL is read.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx2
import orjson
import psycopg
import pytest
import redis
from starlette.testclient import TestClient

from ingest.app import create_app
from tests.browser.servers import LiveIngest
from tests.factories import BROWSER_UA, make_event, run_burst
from tests.ingest.conftest import ClientFactory
from vidpulse import viewers
from vidpulse.events import now_ms
from vidpulse.settings import Settings

KEY = "platform-secret"


def stream_events(client: redis.Redis, settings: Settings) -> list[dict[str, Any]]:
    return [orjson.loads(f[b"event"]) for _, f in client.xrange(settings.stream)]


def field_errors(response: httpx2.Response) -> set[str]:
    """The fields named by a 422's rejected list (asserting it is a 422 with an error)."""
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"].strip()
    return {e["field"] for r in body["rejected"] for e in r["errors"]}


# -- numbers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (make_event("progress", duration_s=172800.0, played=[[0, 172801]]), "duration_s"),
        (make_event("session_start", duration_s=1e308), "duration_s"),
        (make_event("play", position_s=43201.5), "position_s"),
        (make_event("seek", from_s=0.0, to_s=1e300), "to_s"),
    ],
    ids=["two-days", "1e308", "position", "seek-end"],
)
def test_numbers_over_the_maximum_are_refused_with_the_field_named(
    ingest: TestClient,
    redis_client: redis.Redis,
    settings: Settings,
    event: dict[str, Any],
    field: str,
) -> None:
    """Over VIDPULSE_MAX_DURATION_SECONDS (or it + 1): 422 naming the field, nothing appended."""
    assert field in field_errors(ingest.post("/v1/events", json=event))
    assert redis_client.xlen(settings.stream) == 0


def test_the_maximum_duration_is_a_setting(make_client: ClientFactory) -> None:
    """A lower VIDPULSE_MAX_DURATION_SECONDS refuses what the default accepts; its edge passes."""
    client, _ = make_client(max_duration_seconds=600)
    assert "duration_s" in field_errors(
        client.post("/v1/events", json=make_event("progress", duration_s=601.0))
    )
    at_edge = make_event("progress", duration_s=600.0, position_s=601.0, played=[[0, 601]])
    assert client.post("/v1/events", json=at_edge).json()["accepted"] == 1


def test_compatibility_routes_refuse_durations_over_the_maximum(ingest: TestClient) -> None:
    """video-view with a two-day duration is 422 naming video_duration_seconds."""
    body = {"session_id": "s-1", "video_id": "v-1", "video_duration_seconds": 172800.0}
    response = ingest.post("/api/analytics/video-view", json=body)
    assert "video_duration_seconds" in field_errors(response)


# -- retries ---------------------------------------------------------------------------


def test_retried_events_without_id_are_counted_once_by_the_processors(
    ingest: TestClient,
    make_settings: Any,
    db: psycopg.Connection[Any],
) -> None:
    """The same id-less play sent twice is one row and one play: its id comes from its content."""
    play = make_event("play", event_id=None)
    browser = {"user-agent": BROWSER_UA}  # a browser's play counts (a bot's would not)
    assert ingest.post("/v1/events", json=play, headers=browser).status_code == 202
    retry = ingest.post("/v1/events", content=orjson.dumps(play), headers=browser)
    assert retry.status_code == 202
    settings = make_settings()
    for name in ("raw", "metrics"):
        run_burst(settings, name)
    assert db.execute("SELECT count(*) FROM video_events").fetchone() == (1,)
    assert db.execute("SELECT plays FROM video_metrics").fetchall() == [(1,)]


class ReplyDroppingProxy:
    """A TCP relay to Redis that, once `drop_replies` is set, reads Redis's next reply (so the
    command surely ran) and closes the client's connection instead of passing it on."""

    def __init__(self, upstream_url: str) -> None:
        parts = redis.connection.parse_url(upstream_url)
        self.upstream = (parts.get("host", "localhost"), int(parts.get("port", 6379)))
        self.db = int(parts.get("db", 0))
        self.drop_replies = threading.Event()
        self.withhold_replies = threading.Event()  # read them, pass none on, stay open
        self.dropped = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/{self.db}"

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, replies: bool) -> None:
        try:
            while data := src.recv(65536):
                if replies and self.drop_replies.is_set():
                    self.dropped.set()
                    break
                if replies and self.withhold_replies.is_set():
                    self.dropped.set()
                    continue
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@contextlib.contextmanager
def through_proxy(make_settings: Any) -> Iterator[tuple[TestClient, ReplyDroppingProxy, Settings]]:
    """An ingest client whose Redis connections go through a ReplyDroppingProxy."""
    settings = make_settings()
    proxy = ReplyDroppingProxy(settings.redis_url)
    try:
        app = create_app(make_settings(redis_url=proxy.url))
        with TestClient(app, headers={"user-agent": BROWSER_UA}) as client:
            yield client, proxy, settings
    finally:
        proxy.close()


def test_retry_after_a_503_that_did_append_is_counted_once(
    make_settings: Any, redis_client: redis.Redis, db: psycopg.Connection[Any]
) -> None:
    """Redis appends but its reply is lost: 503; the client's retry is a duplicate, one play."""
    with through_proxy(make_settings) as (client, proxy, settings):
        # The first call loads the append script; later ones only name it.
        assert client.post("/v1/events", json=make_event("pause")).status_code == 202
        play = make_event("play", event_id=None)
        proxy.drop_replies.set()
        lost = client.post("/v1/events", json=play)
        assert lost.status_code == 503
        assert "retry" in lost.json()["error"]
        assert proxy.dropped.is_set()
        assert redis_client.xlen(settings.stream) == 2  # it was appended all the same
        proxy.drop_replies.clear()
        assert client.post("/v1/events", json=play).status_code == 202
    assert redis_client.xlen(settings.stream) == 3
    for name in ("raw", "metrics"):
        run_burst(settings, name)
    assert db.execute(
        "SELECT type, count(*) FROM video_events GROUP BY 1 ORDER BY 1"
    ).fetchall() == [
        ("pause", 1),
        ("play", 1),
    ]
    assert db.execute("SELECT plays FROM video_metrics").fetchall() == [(1,)]


def test_milestone_whose_reply_is_lost_has_its_key_and_its_entry_together(
    make_settings: Any, redis_client: redis.Redis
) -> None:
    """Reply lost after a milestone's append: key and entry both there; the retry is a duplicate."""
    with through_proxy(make_settings) as (client, proxy, settings):
        assert client.post("/v1/events", json=make_event("pause")).status_code == 202
        milestone = make_event("milestone", milestone=25)
        proxy.drop_replies.set()
        assert client.post("/v1/events", json=[make_event(), milestone]).status_code == 503
        assert proxy.dropped.is_set()
        assert redis_client.xlen(settings.stream) == 3
        assert len(redis_client.keys(f"{settings.stream}:dedupe:*")) == 1
        proxy.drop_replies.clear()
        again = client.post("/v1/events", json=milestone).json()
        assert (again["accepted"], again["duplicates"]) == (0, 1)
    assert redis_client.xlen(settings.stream) == 3


def test_redis_that_stops_answering_is_503_not_a_hang(
    make_settings: Any, redis_client: redis.Redis
) -> None:
    """Redis runs the append but no reply ever comes: the request gets 503 after the timeout."""
    with through_proxy(make_settings) as (client, proxy, settings):
        assert client.post("/v1/events", json=make_event("pause")).status_code == 202
        proxy.withhold_replies.set()
        withheld = client.post("/v1/events", json=make_event())
        assert withheld.status_code == 503
        assert "retry" in withheld.json()["error"]
        assert proxy.dropped.is_set()
        assert redis_client.xlen(settings.stream) == 2


# -- origins and content types ---------------------------------------------------------


@pytest.mark.parametrize("content_type", ["application/json", "text/plain;charset=UTF-8"])
def test_post_from_an_origin_not_listed_is_403_and_appends_nothing(
    make_client: ClientFactory, redis_client: redis.Redis, content_type: str
) -> None:
    """With VIDPULSE_CORS_ORIGINS set, another Origin's post (sendBeacon's too) is 403 JSON."""
    client, settings = make_client(cors_origins="https://shop.example")
    body = orjson.dumps(make_event())
    refused = client.post(
        "/v1/events",
        content=body,
        headers={"content-type": content_type, "origin": "https://evil.example"},
    )
    assert refused.status_code == 403
    assert "https://evil.example" in refused.json()["error"]
    watched = {"videoId": "v", "event": "watched_50_percent", "ts": now_ms(), "userId": "u"}
    legacy = client.post("/analytics", json=watched, headers={"origin": "https://evil.example"})
    assert legacy.status_code == 403
    assert redis_client.xlen(settings.stream) == 0
    listed = client.post(
        "/v1/events",
        content=body,
        headers={"content-type": content_type, "origin": "https://shop.example"},
    )
    assert listed.status_code == 202
    assert listed.headers["access-control-allow-origin"] == "https://shop.example"
    # Server-to-server posts carry no Origin and are not a browser's cross-origin request.
    assert client.post("/v1/events", json=make_event()).status_code == 202
    assert redis_client.xlen(settings.stream) == 2


def test_form_posts_get_415_saying_what_to_send(ingest: TestClient) -> None:
    """curl's default form content type is 415, naming application/json and text/plain."""
    response = ingest.post(
        "/v1/events",
        content=orjson.dumps(make_event()),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 415
    assert "send Content-Type: application/json (or text/plain" in response.json()["error"]


# -- signed viewers --------------------------------------------------------------------


def test_signed_viewers_need_their_signature_and_it_is_not_stored(
    make_client: ClientFactory, redis_client: redis.Redis
) -> None:
    """With a signing key: unsigned or wrongly signed named viewers are 422; anon- needs none."""
    client, settings = make_client(viewer_signing_key=KEY)
    key = KEY.encode()
    unsigned = make_event(viewer_id="user-42")
    assert field_errors(client.post("/v1/events", json=unsigned)) == {"viewer_sig"}
    forged = make_event(viewer_id="user-42", viewer_sig=viewers.sign(key, "user-43"))
    assert field_errors(client.post("/v1/events", json=forged)) == {"viewer_sig"}
    signed = make_event(viewer_id="user-42", viewer_sig=viewers.sign(key, "user-42"))
    anonymous = make_event(viewer_id="anon-7c1f")
    response = client.post("/v1/events", json=[signed, anonymous])
    assert response.json() == {"accepted": 2, "duplicates": 0, "rejected": []}
    stored = stream_events(redis_client, settings)
    assert [e["viewer_id"] for e in stored] == ["user-42", "anon-7c1f"]
    assert all("viewer_sig" not in e for e in stored)


def test_compatibility_routes_check_signed_viewers_too(
    make_client: ClientFactory, redis_client: redis.Redis
) -> None:
    """/analytics and video-view with a named user need userSig / user_sig under a key."""
    client, settings = make_client(viewer_signing_key=KEY)
    watched = {"videoId": "v", "event": "watched_50_percent", "ts": now_ms(), "userId": "u-1"}
    assert field_errors(client.post("/analytics", json=watched)) == {"userSig"}
    signed = {**watched, "userSig": viewers.sign(KEY.encode(), "u-1")}
    assert client.post("/analytics", json=signed).json()["accepted"] == 1
    view = {"session_id": "s-1", "video_id": "v", "video_duration_seconds": 60.0, "user_id": "u-1"}
    assert field_errors(client.post("/api/analytics/video-view", json=view)) == {"user_sig"}
    view["user_sig"] = viewers.sign(KEY.encode(), "u-1")
    assert client.post("/api/analytics/video-view", json=view).json()["accepted"] == 1
    report = {"session_id": "s-1", "current_position_seconds": 10.0, "play_count": 1}
    assert client.post("/api/analytics/video-progress", json=report).json()["accepted"] == 2
    assert all("viewer_sig" not in e for e in stream_events(redis_client, settings))


# -- rate limit ------------------------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after_per_client_address(
    make_client: ClientFactory, redis_client: redis.Redis
) -> None:
    """Over VIDPULSE_RATE_LIMIT a client gets 429 + Retry-After; another address is not held."""
    client, settings = make_client(rate_limit="3/minute")
    for _ in range(3):
        assert client.post("/v1/events", json=make_event()).status_code == 202
    refused = client.post("/v1/events", json=make_event())
    assert refused.status_code == 429
    assert "3 per 1 minute" in refused.json()["error"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert client.get("/healthz").status_code == 200  # only posts are counted
    other = TestClient(client.app, client=("10.9.8.7", 5000))
    with other:
        assert other.post("/v1/events", json=make_event()).status_code == 202
    assert redis_client.xlen(settings.stream) == 4


def test_rate_limit_believes_forwarded_addresses_only_through_trusted_hops(
    make_client: ClientFactory, redis_client: redis.Redis
) -> None:
    """Behind one trusted proxy the client is X-Forwarded-For's last entry; no address is kept."""
    client, settings = make_client(rate_limit="2/minute", trusted_proxy_hops=1)

    def post(forwarded: str) -> int:
        headers = {"x-forwarded-for": forwarded}
        return client.post("/v1/events", json=make_event(), headers=headers).status_code

    assert [post("203.0.113.5"), post("203.0.113.5"), post("203.0.113.5")] == [202, 202, 429]
    # A client writing its own entries further left is still the address the proxy saw.
    assert post("198.51.100.1, 203.0.113.5") == 429
    assert post("203.0.113.5, 198.51.100.77") == 202
    # Without trusted hops the header is not believed at all: the peer is the client.
    direct, _ = make_client(rate_limit="1/minute")
    headers = {"x-forwarded-for": "192.0.2.1"}
    assert direct.post("/v1/events", json=make_event(), headers=headers).status_code == 202
    headers = {"x-forwarded-for": "192.0.2.2"}
    assert direct.post("/v1/events", json=make_event(), headers=headers).status_code == 429
    stored = b"".join(
        bytes(k) + b"".join(bytes(v) for v in _values(redis_client, k))
        for k in redis_client.scan_iter(match=f"{settings.stream.rsplit(':', 1)[0]}:*")
    )
    for address in (b"203.0.113.5", b"198.51.100", b"192.0.2."):
        assert address not in stored


def _values(client: redis.Redis, key: bytes) -> list[Any]:
    kind = client.type(key)
    if kind == b"string":
        return [client.get(key)]
    if kind == b"stream":
        return [v for _, fields in client.xrange(key) for v in fields.values()]
    if kind == b"hash":
        return list(client.hgetall(key).values())
    return []


# -- what is kept of a request ---------------------------------------------------------


def test_headers_are_utf8_and_the_referer_loses_its_query_and_fragment(
    live_ingest: LiveIngest,
    settings: Settings,
    db: psycopg.Connection[Any],
) -> None:
    """video_sessions shows the UA as café and the page without ?email=…&token=… or #…."""
    # Through a real server: the raw header bytes reach the app as they were sent.
    user_agent = "Mozilla/5.0 (X11; Linux x86_64) café-browser/1.0".encode()
    page = b"https://learn.example/lesson/3?email=ann@example.com&token=s3cr3t#t=30"
    headers = {"user-agent": user_agent + b"\xff", "referer": page}
    event = make_event("session_start")
    url = live_ingest.origin + "/v1/events"
    assert httpx2.post(url, json=event, headers=headers).status_code == 202
    for name in ("raw", "progress"):
        run_burst(settings, name)
    row = db.execute("SELECT user_agent, referrer FROM video_sessions").fetchone()
    assert row == (user_agent.decode() + "\ufffd", "https://learn.example/lesson/3")
    payload = db.execute("SELECT payload::text FROM video_events").fetchone()
    assert payload is not None
    assert "token" not in payload[0]
    assert "ann@example.com" not in payload[0]


# -- OpenAPI ---------------------------------------------------------------------------


def test_openapi_document_describes_every_post_route_with_its_answers(
    ingest: TestClient,
) -> None:
    """GET /v1/openapi.json is OpenAPI 3.1 with /v1/events and the compatibility routes."""
    response = ingest.get("/v1/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"] == "3.1.0"
    expected = {
        "/v1/events",
        "/analytics",
        "/api/analytics/video-view",
        "/api/analytics/video-progress",
        "/api/analytics/video-complete",
    }
    assert set(document["paths"]) == expected
    events = document["paths"]["/v1/events"]["post"]
    assert set(events["requestBody"]["content"]) == {"application/json", "text/plain"}
    assert {"202", "400", "403", "408", "413", "415", "422", "429", "503"} <= set(
        events["responses"]
    )
    event = document["components"]["schemas"]["Event"]
    assert event["additionalProperties"] is False
    assert event["properties"]["duration_s"]["anyOf"][0]["maximum"] == 43200
    assert event["properties"]["ts"]["maximum"] >= now_ms()
