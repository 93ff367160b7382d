"""The JSON API's numbers equal SQL over the tables; its parameters, errors and auth."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from dashboard.app import create_app
from tests.dashboard.conftest import AUTH, TOKEN, Feeder, sql_rows
from vidpulse.settings import Settings


def close(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and abs(float(a) - float(b)) < 1e-6
    return bool(a == b)


def test_overview_equals_sql_over_the_tables(
    fed: Feeder, api: TestClient, db: psycopg.Connection[Any]
) -> None:
    """Every headline number of /overview is what SQL over the tables says."""
    got = api.get("/api/v1/overview").json()
    [want] = sql_rows(
        db,
        """SELECT count(*) AS videos, sum(views)::bigint AS views,
                  sum(watch_seconds) AS watch_seconds, sum(completions)::bigint AS completions
           FROM video_metrics""",
    )
    assert got["videos"] == want["videos"] > 0
    assert got["views"] == want["views"] > 0
    assert close(got["watch_seconds"], want["watch_seconds"])
    assert got["watch_hours"] == round(float(want["watch_seconds"]) / 3600, 2)
    assert got["completions"] == want["completions"]
    [viewers] = sql_rows(db, "SELECT count(DISTINCT viewer_id) AS n FROM video_sessions")
    assert got["unique_viewers"] == viewers["n"] > 0
    rates = [
        100.0 * r["completions"] / r["views"]
        for r in sql_rows(db, "SELECT views, completions FROM video_metrics")
        if r["views"] > 0
    ]
    assert got["avg_completion_rate_pct"] == round(sum(rates) / len(rates), 2)
    assert got["completion_buckets"] == {
        "above_75": sum(r > 75 for r in rates),
        "from_50_to_75": sum(50 <= r <= 75 for r in rates),
        "below_50": sum(r < 50 for r in rates),
    }
    today = datetime.now(UTC).date()
    assert got["to"] == today.isoformat()
    assert got["from"] == (today - timedelta(days=29)).isoformat()
    assert len(got["daily"]) == 30
    daily = {
        r["day"].isoformat(): r
        for r in sql_rows(
            db,
            """SELECT day, sum(views)::bigint AS views, sum(watch_seconds) AS watch_seconds,
                      sum(completions)::bigint AS completions
               FROM video_metrics_daily GROUP BY day""",
        )
    }
    assert sum(d["views"] for d in got["daily"]) == got["views"]  # all traffic is recent
    for day in got["daily"]:
        want_day = daily.get(day["day"], {"views": 0, "watch_seconds": 0.0, "completions": 0})
        assert day["views"] == want_day["views"]
        assert close(day["watch_seconds"], want_day["watch_seconds"])
        assert day["completions"] == want_day["completions"]


def test_video_list_rows_equal_the_summary_view(
    fed: Feeder, api: TestClient, db: psycopg.Connection[Any]
) -> None:
    """Each row of /videos?include_preview=true is the video's row of video_analytics_summary."""
    got = api.get("/api/v1/videos", params={"include_preview": "true", "limit": 500}).json()
    want = {r["video_id"]: r for r in sql_rows(db, "SELECT * FROM video_analytics_summary")}
    assert {r["video_id"] for r in got["rows"]} == set(want)
    for row in got["rows"]:
        expected = want[row["video_id"]]
        for column, value in expected.items():
            if isinstance(value, datetime):
                value = value.isoformat()
            if column == "sessions" and value is None:
                value = 0
            assert close(row[column], value), (row["video_id"], column, row[column], value)
    views = [r["views"] for r in got["rows"]]
    assert views == sorted(views, reverse=True)


def test_popular_is_by_watched_50_then_views_without_previews(
    fed: Feeder, api: TestClient, db: psycopg.Connection[Any]
) -> None:
    """/videos/popular orders by watched_50_count, then views, and leaves previews out."""
    previews = {
        r["video_id"]
        for r in sql_rows(db, "SELECT DISTINCT video_id FROM video_sessions WHERE is_preview")
    }
    assert previews, "the audience has preview videos"
    rows = api.get("/api/v1/videos/popular", params={"limit": 500}).json()["rows"]
    want = [
        r["video_id"]
        for r in sql_rows(db, "SELECT video_id FROM popular_videos")
        if r["video_id"] not in previews
    ]
    assert [r["video_id"] for r in rows] == want
    keys = [(r["watched_50_count"], r["views"]) for r in rows]
    assert keys == sorted(keys, reverse=True)
    listed = api.get("/api/v1/videos", params={"limit": 500}).json()["rows"]
    assert not previews & {r["video_id"] for r in listed}
    assert len(api.get("/api/v1/videos/popular", params={"limit": 2}).json()["rows"]) == 2


def test_catalogue_preview_flag_overrides_the_events(
    fed: Feeder, api: TestClient, db: psycopg.Connection[Any]
) -> None:
    """A catalogued video's is_preview decides, whatever its sessions said."""
    [preview] = sql_rows(db, "SELECT video_id FROM video_sessions WHERE is_preview LIMIT 1")
    [plain] = sql_rows(
        db,
        """SELECT video_id FROM video_metrics m WHERE NOT EXISTS (
               SELECT 1 FROM video_sessions s WHERE s.video_id = m.video_id AND s.is_preview)
           LIMIT 1""",
    )
    assert (
        api.put(f"/api/v1/videos/{preview['video_id']}", json={"title": "Now full"}).status_code
        == 201
    )
    r = api.put(f"/api/v1/videos/{plain['video_id']}", json={"title": "Teaser", "is_preview": True})
    assert r.status_code == 201
    popular = {r["video_id"] for r in api.get("/api/v1/videos/popular?limit=500").json()["rows"]}
    assert preview["video_id"] in popular
    assert plain["video_id"] not in popular


def _ties(db: psycopg.Connection[Any], n: int) -> None:
    """Videos whose every sort key ties with others (and some with no views at all)."""
    db.execute(
        """INSERT INTO video_metrics (video_id, views, watch_seconds, watched_50_count,
                                      completions, last_event_at)
           SELECT 'tie-' || lpad(i::text, 3, '0'), i %% 3, (i %% 2) * 10.5, i %% 2, i %% 3 / 2,
                  CASE WHEN i %% 4 = 0 THEN NULL ELSE '2026-01-01T00:00:00Z'::timestamptz END
           FROM generate_series(1, %s) AS i""",
        (n,),
    )


@pytest.mark.parametrize("order", ["desc", "asc"])
def test_keyset_pages_return_every_row_exactly_once_with_ties(
    fed: Feeder, api: TestClient, db: psycopg.Connection[Any], order: str
) -> None:
    """Following next_cursor through any sort gives each video once, in the sort's order."""
    _ties(db, 40)
    everything = api.get(
        "/api/v1/videos", params={"include_preview": "true", "limit": 500, "order": order}
    ).json()["rows"]
    assert len(everything) >= 45
    for sort in ("views", "watched_50", "completion_rate", "watch_seconds", "last_event_at"):
        params: dict[str, Any] = {
            "sort": sort,
            "order": order,
            "limit": 7,
            "include_preview": "true",
        }
        seen: list[str] = []
        pages = 0
        while True:
            answer = api.get("/api/v1/videos", params=params).json()
            seen += [r["video_id"] for r in answer["rows"]]
            pages += 1
            if answer["next_cursor"] is None:
                break
            params["cursor"] = answer["next_cursor"]
            assert pages < 100
        assert len(seen) == len(set(seen)) == len(everything), sort
        whole = api.get(
            "/api/v1/videos",
            params={"sort": sort, "order": order, "limit": 500, "include_preview": "true"},
        ).json()["rows"]
        assert seen == [r["video_id"] for r in whole], sort


def test_filters_course_and_prefix(
    fed: Feeder, api: TestClient, db: psycopg.Connection[Any]
) -> None:
    """course_id keeps that course's videos; q matches an id or a title prefix, not a middle."""
    [some] = sql_rows(
        db, "SELECT course_id FROM video_sessions WHERE course_id IS NOT NULL LIMIT 1"
    )
    course = some["course_id"]
    want = {
        r["video_id"]
        for r in sql_rows(
            db, "SELECT DISTINCT video_id FROM video_sessions WHERE course_id = %s", course
        )
    }
    rows = api.get(
        "/api/v1/videos", params={"course_id": course, "include_preview": "true", "limit": 500}
    ).json()["rows"]
    assert {r["video_id"] for r in rows} == want
    [video] = sql_rows(db, "SELECT video_id FROM video_metrics ORDER BY video_id LIMIT 1")
    vid = video["video_id"]
    api.put(f"/api/v1/videos/{vid}", json={"title": "Zebra_Stripes 100%"})
    for q, hit in (
        ("zebra_s", True),
        ("Stripes", False),
        (vid[:3], True),
        ("%", False),
        ("_", False),
    ):
        ids = {
            r["video_id"]
            for r in api.get(
                "/api/v1/videos", params={"q": q, "include_preview": "true", "limit": 500}
            ).json()["rows"]
        }
        assert (vid in ids) is hit, q


def test_one_video_equals_sql_over_its_tables(
    fed: Feeder, api: TestClient, db: psycopg.Connection[Any], dash_settings: Settings
) -> None:
    """Summary, funnel, segments, key moments, daily and devices of /videos/{id} match SQL."""
    [top] = sql_rows(db, "SELECT * FROM video_metrics ORDER BY views DESC, video_id LIMIT 1")
    vid = top["video_id"]
    got = api.get(f"/api/v1/videos/{vid}").json()
    assert got["summary"]["views"] == top["views"]
    assert got["summary"]["unique_viewers"] == top["unique_viewers"]
    for step in got["funnel"]:
        count = top[f"watched_{step['milestone']}_count"]
        assert step["viewers"] == count
        assert step["pct_of_viewers"] == round(100.0 * count / top["unique_viewers"], 2)
    heat = {
        r["segment_start"]: r
        for r in sql_rows(db, "SELECT * FROM video_heatmap WHERE video_id = %s", vid)
    }
    seg = dash_settings.segment_seconds
    assert [s["start_s"] for s in got["segments"]] == [
        float(k * seg) for k in range(max(heat) // seg + 1)
    ]
    for s in got["segments"]:
        row = heat.get(int(s["start_s"]))
        views = row["views"] if row else 0
        assert s["views"] == views
        assert s["drop_offs"] == (row["drop_offs"] if row else 0)
        assert close(s["watch_seconds"], row["watch_seconds"] if row else 0.0)
        assert s["retention_pct"] == round(100.0 * views / top["views"], 2)
        if views:
            length = s["end_s"] - s["start_s"]
            assert s["rewatch"] == round(float(row["watch_seconds"]) / (views * length), 3)
    top_drops = sorted(got["segments"], key=lambda s: (-s["drop_offs"], s["start_s"]))[:3]
    assert got["key_moments"]["most_drop_offs"] == [s for s in top_drops if s["drop_offs"]]
    assert len(got["key_moments"]["most_rewatched"]) == 3
    rewatch = [s["rewatch"] for s in got["key_moments"]["most_rewatched"]]
    assert rewatch == sorted(rewatch, reverse=True)
    assert rewatch[0] == max(s["rewatch"] or 0 for s in got["segments"])
    devices = {
        r["device_type"]: r["n"]
        for r in sql_rows(
            db,
            "SELECT device_type, count(*) AS n FROM video_sessions WHERE video_id = %s GROUP BY 1",
            vid,
        )
    }
    assert {d["device_type"]: d["sessions"] for d in got["devices"]} == devices
    daily = {
        r["day"].isoformat(): r["views"]
        for r in sql_rows(db, "SELECT day, views FROM video_metrics_daily WHERE video_id = %s", vid)
    }
    assert {d["day"]: d["views"] for d in got["daily"] if d["views"]} == daily


def test_viewer_progress_rows_are_the_viewers_resume_rows(
    fed: Feeder, api: TestClient, db: psycopg.Connection[Any]
) -> None:
    """/viewers/{id}/progress answers the viewer's video_watch_progress rows, filterable."""
    [viewer] = sql_rows(
        db,
        """SELECT viewer_id FROM video_watch_progress GROUP BY 1
           ORDER BY count(*) DESC, 1 LIMIT 1""",
    )
    vid = viewer["viewer_id"]
    want = sql_rows(db, "SELECT * FROM video_watch_progress WHERE viewer_id = %s", vid)
    rows = api.get(f"/api/v1/viewers/{vid}/progress").json()["rows"]
    assert {r["video_id"]: r["position_s"] for r in rows} == {
        r["video_id"]: r["position_s"] for r in want
    }
    one = want[0]["video_id"]
    only = api.get(f"/api/v1/viewers/{vid}/progress", params={"video_id": one}).json()["rows"]
    assert [r["video_id"] for r in only] == [one]
    assert api.get("/api/v1/viewers/nobody-at-all/progress").json()["rows"] == []


def test_pipeline_is_what_status_reports(fed: Feeder, api: TestClient) -> None:
    """/pipeline lists the stream and each processor's group with no lag once drained."""
    got = api.get("/api/v1/pipeline").json()
    assert got["length"] > 0
    groups = {g["group"]: g for g in got["groups"]}
    for name in ("heatmap", "progress", "metrics"):
        assert groups[name]["pending"] == 0
        assert groups[name]["lag"] == 0


def test_unknown_video_is_404_json(api: TestClient) -> None:
    """An id neither seen nor catalogued answers 404 with a JSON error."""
    response = api.get("/api/v1/videos/no-such-video")
    assert response.status_code == 404
    assert "no-such-video" in response.json()["error"]
    assert api.get("/api/v1/no/such/route").status_code == 404


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/api/v1/videos?sort=title", "sort"),
        ("/api/v1/videos?order=up", "order"),
        ("/api/v1/videos?limit=501", "limit"),
        ("/api/v1/videos?limit=0", "limit"),
        ("/api/v1/videos?limit=-1", "limit"),
        ("/api/v1/videos?include_preview=maybe", "include_preview"),
        ("/api/v1/videos?cursor=garbage", "cursor"),
        ("/api/v1/videos?course_id=%27%3B--", "course_id"),
        ("/api/v1/videos?q=" + "x" * 200, "q"),
        ("/api/v1/videos?format=xml", "format"),
        ("/api/v1/videos?sortt=views", "sortt"),
        ("/api/v1/overview?from=2024-13-01", "from"),
        ("/api/v1/overview?to=yesterday", "to"),
        ("/api/v1/overview?from=2024-02-01&to=2024-01-01", "from"),
        ("/api/v1/overview?from=1900-01-01", "from"),
        ("/api/v1/videos/popular?limit=1e3", "limit"),
        ("/api/v1/videos/popular?limit=" + "9" * 5000, "limit"),
        ("/api/v1/overview?to=2024-1-01", "to"),
        ("/api/v1/videos/bad%20id", "video_id"),
        ("/api/v1/viewers/v1/progress?video_id=a/b", "video_id"),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(
    api: TestClient, path: str, param: str
) -> None:
    """A bad query parameter answers 400 JSON whose error names it."""
    response = api.get(path)
    assert response.status_code == 400, response.text
    assert param in response.json()["error"]


def test_a_cursor_of_another_sort_is_refused(api: TestClient, db: psycopg.Connection[Any]) -> None:
    """A cursor is tied to its sort and order: reusing it elsewhere is a 400."""
    _ties(db, 3)
    cursor = api.get("/api/v1/videos", params={"limit": 1}).json()["next_cursor"]
    assert cursor
    response = api.get(
        "/api/v1/videos", params={"limit": 1, "cursor": cursor, "sort": "watched_50"}
    )
    assert response.status_code == 400
    assert "cursor" in response.json()["error"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-of-a-decent-length-000"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer "},
        {"Authorization": TOKEN},
    ],
)
def test_without_a_valid_token_every_endpoint_is_401(
    dash_settings: Settings, headers: dict[str, str]
) -> None:
    """Missing, wrong, truncated or other-scheme tokens get 401 JSON with WWW-Authenticate."""
    with TestClient(create_app(dash_settings)) as client:
        for path in (
            "/api/v1/overview",
            "/api/v1/videos",
            "/api/v1/openapi.json",
            "/api/v1/pipeline",
            "/api/v1/videos/x",
            "/api/v1/nothing-here",
        ):
            response = client.get(path, headers=headers)
            assert response.status_code == 401, (path, headers)
            assert "error" in response.json()
            assert response.headers["www-authenticate"].startswith("Bearer")
        assert (
            client.put("/api/v1/videos/x", json={"title": "t"}, headers=headers).status_code == 401
        )
        ok = client.get(
            "/api/v1/overview", headers={"Authorization": "Bearer another-token-of-enough-length"}
        )
        assert ok.status_code == 200


def test_security_headers_on_every_response(api: TestClient) -> None:
    """CSP without inline script, no framing, no referrer: on answers and on errors."""
    for response in (
        api.get("/api/v1/overview"),
        api.get("/api/v1/videos/nope"),
        api.get("/api/v1/overview", headers={"Authorization": ""}),
    ):
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["x-content-type-options"] == "nosniff"


def test_metrics_are_served_to_prometheus_without_a_token(fed: Feeder, api: TestClient) -> None:
    """GET /metrics answers Prometheus text with the stream gauges, no token needed."""
    response = api.get("/metrics", headers={"Authorization": ""})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name for f in text_string_to_metric_families(response.text)}
    assert {
        "vidpulse_stream_length",
        "vidpulse_stream_lag_seconds",
        "vidpulse_redis_up",
    } <= families


def test_lists_and_daily_series_answer_csv(
    fed: Feeder, api: TestClient, db: psycopg.Connection[Any]
) -> None:
    """?format=csv and Accept: text/csv give the same rows as the JSON, with a header."""
    vid = "=HYPERLINK(1)"
    json_rows = api.get("/api/v1/videos", params={"limit": 500}).json()["rows"]
    first = json_rows[0]["video_id"]
    api.put(f"/api/v1/videos/{first}", json={"title": vid})
    response = api.get("/api/v1/videos", params={"limit": 500, "format": "csv"})
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["video_id"] for r in rows] == [r["video_id"] for r in json_rows]
    assert rows[0]["title"] == "'" + vid  # not run as a formula by a spreadsheet
    assert rows[0]["views"] == str(json_rows[0]["views"])
    for path in (
        "/api/v1/overview",
        f"/api/v1/videos/{first}",
        "/api/v1/videos/popular",
        "/api/v1/pipeline",
    ):
        by_accept = api.get(path, headers={"Accept": "text/csv"})
        assert by_accept.headers["content-type"].startswith("text/csv"), path
        assert by_accept.text.splitlines()[0].count(",") >= 2
    daily = list(csv.DictReader(io.StringIO(api.get("/api/v1/overview?format=csv").text)))
    assert len(daily) == 30
    assert sum(int(d["views"]) for d in daily) == api.get("/api/v1/overview").json()["views"]


def test_database_down_is_503_json(make_settings: Any) -> None:
    """PostgreSQL unreachable: the API answers 503 JSON, not a stack trace."""
    settings = make_settings(
        admin_tokens=TOKEN, database_url="postgresql://postgres@127.0.0.1:1/nothing"
    )
    with TestClient(create_app(settings), headers=AUTH) as client:
        response = client.get("/api/v1/overview")
    assert response.status_code == 503
    assert "database" in response.json()["error"]


def test_reads_go_to_the_read_replica_and_catalogue_writes_to_the_primary(
    make_settings: Any, db: Any
) -> None:
    """VIDPULSE_READ_DATABASE_URL: the API's reads use it (here unreachable: 503), the
    catalogue's PUT still writes to DATABASE_URL."""
    settings = make_settings(
        admin_tokens=TOKEN, read_database_url="postgresql://postgres@127.0.0.1:1/replica"
    )
    with TestClient(create_app(settings), headers=AUTH) as client:
        read = client.get("/api/v1/overview")
        written = client.put("/api/v1/videos/replica-v1", json={"title": "On the primary"})
    assert read.status_code == 503
    assert written.status_code == 201, written.text
    row = db.execute("SELECT title FROM videos WHERE video_id = 'replica-v1'").fetchone()
    assert row == ("On the primary",)


def test_the_dashboards_connections_are_named_in_pg_stat_activity(
    api: TestClient, db: psycopg.Connection[Any]
) -> None:
    """Its pool's connections show as vidpulse-dashboard beside the processors'."""
    assert api.get("/api/v1/overview").status_code == 200
    named = db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'vidpulse-dashboard'"
    ).fetchone()
    assert named is not None
    assert named[0] >= 1
