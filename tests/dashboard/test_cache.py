"""The cache: repeated reads skip PostgreSQL; what the processors commit shows at once."""

from __future__ import annotations

from typing import Any

import psycopg
import redis
from starlette.testclient import TestClient

from tests.dashboard.conftest import Feeder, sql_rows
from vidpulse.keys import Keys
from vidpulse.settings import Settings

READS = (
    "/api/v1/overview",
    "/api/v1/videos?limit=5",
    "/api/v1/videos/popular",
    "/api/v1/videos/video-00000",
    "/api/v1/viewers/viewer-00000/progress",
)


def pool_requests(api: TestClient) -> int:
    """Connections handed out by the app's pool so far: one per database round of a read."""
    stats: dict[str, int] = api.app.state.pool.get_stats()  # type: ignore[attr-defined]
    return stats.get("requests_num", 0)


def test_a_repeated_read_is_served_from_redis_without_postgresql(
    fed: Feeder, api: TestClient
) -> None:
    """The second identical read asks the pool for no connection, and answers the same."""
    first = {path: api.get(path) for path in READS}
    assert all(r.status_code == 200 for r in first.values()), {
        p: r.text for p, r in first.items() if r.status_code != 200
    }
    before = pool_requests(api)
    assert before >= len(READS)
    for path in READS:
        assert api.get(path).content == first[path].content
    assert pool_requests(api) == before
    # A different parameter is a different answer: that one reads PostgreSQL.
    api.get("/api/v1/videos?limit=6")
    assert pool_requests(api) == before + 1


def test_after_more_events_are_processed_the_next_read_reflects_them(
    fed: Feeder, api: TestClient, db: psycopg.Connection[Any]
) -> None:
    """Every cached answer moves on once the processors commit new events."""
    old = {path: api.get(path).json() for path in READS}
    fed.feed(fed.sessions(8, sessions=60))
    overview = api.get("/api/v1/overview").json()
    [totals] = sql_rows(db, "SELECT sum(views)::bigint AS views FROM video_metrics")
    assert overview["views"] == totals["views"] > old["/api/v1/overview"]["views"]
    video = api.get("/api/v1/videos/video-00000").json()
    [row] = sql_rows(db, "SELECT views FROM video_metrics WHERE video_id = 'video-00000'")
    assert video["summary"]["views"] == row["views"]
    assert video != old["/api/v1/videos/video-00000"]
    listed = api.get("/api/v1/videos?limit=5").json()["rows"]
    want = sql_rows(
        db,
        """SELECT m.video_id, m.views FROM video_metrics m WHERE NOT EXISTS (
               SELECT 1 FROM video_sessions s WHERE s.video_id = m.video_id AND s.is_preview)
           ORDER BY m.views DESC, m.video_id DESC LIMIT 5""",
    )
    assert [(r["video_id"], r["views"]) for r in listed] == [
        (r["video_id"], r["views"]) for r in want
    ]


def test_one_video_is_invalidated_only_by_its_own_events(
    fed: Feeder, api: TestClient, dash_settings: Settings, redis_client: redis.Redis
) -> None:
    """A batch touching other videos leaves a video's cached page valid; its own does not."""
    keys = Keys(dash_settings.stream)
    api.get("/api/v1/videos/video-00000")
    mine = redis_client.get(keys.cache_version("video:video-00000"))
    other = redis_client.get(keys.cache_version("video:video-00001"))
    assert mine is not None
    assert other is not None
    before = pool_requests(api)
    redis_client.incr(keys.cache_version("video:video-00001"))
    redis_client.incr(keys.cache_version("metrics"))
    api.get("/api/v1/videos/video-00000")
    assert pool_requests(api) == before
    redis_client.incr(keys.cache_version("video:video-00000"))
    api.get("/api/v1/videos/video-00000")
    assert pool_requests(api) > before


def test_a_catalogue_change_shows_in_the_next_reads(fed: Feeder, api: TestClient) -> None:
    """A new title appears at once in the list, popular, the video and viewer progress."""
    for path in READS:
        api.get(path)
    assert api.put("/api/v1/videos/video-00000", json={"title": "Welcome"}).status_code == 201
    assert api.get("/api/v1/videos/video-00000").json()["summary"]["title"] == "Welcome"
    for path in (
        "/api/v1/videos?limit=500&include_preview=true",
        "/api/v1/videos/popular?limit=500",
    ):
        titles = {r["video_id"]: r["title"] for r in api.get(path).json()["rows"]}
        assert titles["video-00000"] == "Welcome", path
        assert {t for v, t in titles.items() if v != "video-00000"} == {None}


def test_redis_down_serves_from_postgresql(
    fed: Feeder, make_settings: Any, db: psycopg.Connection[Any]
) -> None:
    """Without Redis the cache steps aside: answers still come, from PostgreSQL."""
    from dashboard.app import create_app
    from tests.dashboard.conftest import AUTH, TOKEN

    settings = make_settings(admin_tokens=TOKEN, redis_url="redis://127.0.0.1:1/0")
    with TestClient(create_app(settings), headers=AUTH) as client:
        response = client.get("/api/v1/overview")
    [totals] = sql_rows(db, "SELECT sum(views)::bigint AS views FROM video_metrics")
    assert response.status_code == 200
    assert response.json()["views"] == totals["views"]


def test_the_process_memo_answers_briefly_and_never_skips_auth(
    fed: Feeder, make_settings: Any, db: psycopg.Connection[Any]
) -> None:
    """With the memo on, new commits still show within its moment, and tokens are checked."""
    import time

    from dashboard.app import create_app
    from tests.dashboard.conftest import AUTH, TOKEN

    settings = make_settings(admin_tokens=TOKEN, cache_local_ms=200, stream=fed.settings.stream)
    with TestClient(create_app(settings), headers=AUTH) as client:
        first = client.get("/api/v1/overview")
        before = pool_requests(client)
        assert client.get("/api/v1/overview").content == first.content
        assert pool_requests(client) == before
        denied = client.get("/api/v1/overview", headers={"Authorization": "Bearer " + "x" * 30})
        assert denied.status_code == 401
        fed.feed(fed.sessions(9, sessions=30))
        [totals] = sql_rows(db, "SELECT sum(views)::bigint AS views FROM video_metrics")
        deadline = time.monotonic() + 10
        views = first.json()["views"]
        while views != totals["views"] and time.monotonic() < deadline:
            time.sleep(0.05)
            views = client.get("/api/v1/overview").json()["views"]
        assert views == totals["views"] > first.json()["views"]


async def _race(settings: Settings) -> list[str]:
    import redis.asyncio as aioredis

    from dashboard.cache import Cache

    client = aioredis.Redis.from_url(settings.redis_url)
    cache = Cache(client, settings)
    keys = Keys(settings.stream)
    computed: list[str] = []

    async def slow_read() -> Any:
        # A processor commits and bumps while this read is still querying.
        await client.incr(keys.cache_version("metrics"))
        computed.append("old")
        return {"snapshot": "old"}

    async def fresh_read() -> Any:
        computed.append("new")
        return {"snapshot": "new"}

    try:
        first = await cache.json("race", {}, ["metrics"], slow_read)
        second = await cache.json("race", {}, ["metrics"], fresh_read)
        third = await cache.json("race", {}, ["metrics"], fresh_read)
    finally:
        await client.aclose()
    return [first.decode(), second.decode(), third.decode(), *computed]


def test_an_answer_computed_across_a_commit_is_not_served_after_it(
    dash_settings: Settings,
) -> None:
    """Versions are read before the query: a read racing a commit files under the old ones."""
    import asyncio

    first, second, third, *computed = asyncio.run(_race(dash_settings))
    assert first == '{"snapshot":"old"}'
    assert second == third == '{"snapshot":"new"}'
    assert computed == ["old", "new"]  # the third read was a hit


async def _stampede(settings: Settings, readers: int) -> tuple[set[bytes], int]:
    import asyncio

    import redis.asyncio as aioredis

    from dashboard.cache import Cache

    client = aioredis.Redis.from_url(settings.redis_url)
    cache = Cache(client, settings)
    release = asyncio.Event()
    calls = 0
    looked_up = 0
    lookup = cache._lookup

    async def counted_lookup(**kwargs: Any) -> Any:
        nonlocal looked_up
        answer = await lookup(**kwargs)
        looked_up += 1
        return answer

    cache._lookup = counted_lookup  # type: ignore[assignment]

    async def query() -> Any:
        nonlocal calls
        calls += 1
        await release.wait()
        return {"rows": calls}

    async def release_when_all_missed() -> None:
        # Every reader has had its miss from Redis; let the one computation finish.
        while looked_up < readers:
            await asyncio.sleep(0.01)
        release.set()

    try:
        bodies = await asyncio.gather(
            *(cache.json("stampede", {}, ["metrics"], query) for _ in range(readers)),
            release_when_all_missed(),
        )
    finally:
        await client.aclose()
    return {b for b in bodies if b is not None}, calls


def test_identical_misses_at_once_query_the_database_once(dash_settings: Settings) -> None:
    """Many readers missing the same answer together share one computation."""
    import asyncio

    bodies, calls = asyncio.run(_stampede(dash_settings, 20))
    assert calls == 1
    assert bodies == {b'{"rows":1}'}
