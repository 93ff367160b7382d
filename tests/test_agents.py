"""User-Agent classification, and bot events: kept raw, counted apart, left out of aggregates."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import hypothesis
import psycopg
import pytest
from crawlerdetect import CrawlerDetect
from hypothesis import given
from hypothesis import strategies as st
from psycopg.rows import dict_row
from starlette.testclient import TestClient

from tests.factories import make_event, run_burst
from tools.audience import USER_AGENTS
from vidpulse.agents import Agent, classify, is_crawler
from vidpulse.events import now_ms
from vidpulse.settings import Settings

GOOGLEBOT = USER_AGENTS[7]
HEADLESS = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/126.0.0.0 Safari/537.36"
)
T0 = now_ms() - 3_600_000


@pytest.mark.parametrize(
    ("user_agent", "expected"),
    [
        (USER_AGENTS[0], ("desktop", "Chrome", "Windows")),
        (USER_AGENTS[1], ("desktop", "Safari", "Mac OS X")),
        (USER_AGENTS[2], ("desktop", "Firefox", "Linux")),
        (USER_AGENTS[3], ("mobile", "Mobile Safari", "iOS")),
        (USER_AGENTS[4], ("mobile", "Chrome Mobile", "Android")),
        (USER_AGENTS[5], ("tablet", "Mobile Safari", "iOS")),
        (USER_AGENTS[6], ("desktop", "Edge", "Windows")),
        (
            "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/124.0.0.0 Safari/537.36",
            ("tablet", "Chrome", "Android"),
        ),
    ],
)
def test_browsers_are_people_with_their_device_browser_and_os(
    user_agent: str, expected: tuple[str, str, str]
) -> None:
    """Desktop, phone and tablet browsers are not bots and get ua-parser's families."""
    assert classify(user_agent) == Agent(*expected, is_bot=False)


@pytest.mark.parametrize(
    "user_agent",
    [
        GOOGLEBOT,
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.0; "
        "+https://openai.com/gptbot)",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        HEADLESS,
        "Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) "
        "PhantomJS/2.1.1 Safari/538.1",
        "curl/8.4.0",
        "python-requests/2.32.3",
        "Go-http-client/1.1",
        "Wget/1.21.4",
        "okhttp/4.12.0",
    ],
)
def test_crawlers_headless_browsers_and_http_libraries_are_bots(user_agent: str) -> None:
    """Crawlers, headless browsers and HTTP libraries are classified as bots."""
    agent = classify(user_agent)
    assert (agent.is_bot, agent.device_type) == (True, "bot")


@pytest.mark.parametrize("user_agent", [None, "", "   "])
def test_a_missing_user_agent_is_unknown_not_a_bot(user_agent: str | None) -> None:
    """No User-Agent (a relay that did not forward it) gives unknown device fields, no bot."""
    assert classify(user_agent) == Agent(None, None, None, False)


SAMPLES = [
    *USER_AGENTS,
    HEADLESS,
    "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
    "Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 Chrome/124.0 YaBrowser/24.4 YandexSearch/9",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 Chrome/124.0 Mobile Safari/537.36",
    "Dalvik/2.1.0 (Linux; U; Android 13; Pixel 7 Build/TQ3A)",
    "Safari/19618.2.12 CFNetwork/1494.0.7 Darwin/23.4.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/1 Lighthouse",
]


@pytest.mark.parametrize("user_agent", SAMPLES)
def test_crawler_verdicts_are_crawlerdetects(user_agent: str) -> None:
    """The RE2 matcher of CrawlerDetect's patterns agrees with CrawlerDetect itself."""
    assert is_crawler(user_agent) == CrawlerDetect().is_crawler(user_agent)


@hypothesis.settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.sampled_from(SAMPLES)
        | st.text("abcdefghijklmnopqrstuvwxyzABXY0123456789 ;/.()-_", max_size=40),
        min_size=1,
        max_size=4,
    ).map(" ".join)
)
def test_crawler_verdicts_agree_on_any_text(user_agent: str) -> None:
    """On arbitrary mixes of real and random User-Agent text the verdicts agree too."""
    assert is_crawler(user_agent) == CrawlerDetect().is_crawler(user_agent)


def _session(video: str, viewer: str, session: str) -> list[dict[str, Any]]:
    common = {"video_id": video, "viewer_id": viewer, "session_id": session}
    return [
        make_event("session_start", ts=T0, **common),
        make_event("play", ts=T0 + 1, **common),
        make_event("progress", ts=T0 + 30_000, position_s=30.0, played=[[0, 30]], **common),
        make_event("milestone", ts=T0 + 31_000, milestone=25, **common),
        make_event("complete", ts=T0 + 100_000, position_s=100.0, played=[[30, 100]], **common),
    ]


def _post(ingest: TestClient, events: list[dict[str, Any]], user_agent: str) -> None:
    response = ingest.post("/v1/events", json=events, headers={"User-Agent": user_agent})
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == len(events)


def _rows(db: psycopg.Connection[Any], query: str) -> list[dict[str, Any]]:
    with db.cursor(row_factory=dict_row) as cur:
        return cur.execute(query).fetchall()


def test_bot_events_stay_raw_count_as_bot_events_and_nowhere_else(
    ingest: TestClient, settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """Crawler and headless-browser events are in video_events (is_bot) and bot_events only."""
    _post(ingest, _session("v", "person", "s-person"), USER_AGENTS[2])
    _post(ingest, _session("v", "crawler", "s-crawler"), GOOGLEBOT)
    _post(ingest, _session("v", "headless", "s-headless"), HEADLESS)
    _post(ingest, _session("v-bots", "crawler", "s-crawler-2"), GOOGLEBOT)
    for name in ("raw", "heatmap", "progress", "metrics"):
        run_burst(settings, name)

    raw = _rows(db, "SELECT viewer_id, is_bot, count(*) AS n FROM video_events GROUP BY 1, 2")
    assert {(r["viewer_id"], r["is_bot"], r["n"]) for r in raw} == {
        ("person", False, 5),
        ("crawler", True, 10),
        ("headless", True, 5),
    }
    metrics = {r.pop("video_id"): r for r in _rows(db, "SELECT * FROM video_metrics")}
    person_only = {
        "views": 1, "unique_viewers": 1, "watch_seconds": 100.0, "plays": 1, "pauses": 0,
        "seeks": 0, "watched_25_count": 1, "watched_50_count": 0, "watched_75_count": 0,
        "watched_90_count": 0, "completions": 1, "unique_completers": 1,
    }  # fmt: skip
    assert {k: metrics["v"][k] for k in person_only} == person_only
    assert metrics["v"]["bot_events"] == 10
    assert metrics["v-bots"] == {
        **dict.fromkeys(person_only, 0),
        "watch_seconds": 0.0,
        "first_event_at": None,
        "last_event_at": None,
        "bot_events": 5,
    }
    daily = _rows(db, "SELECT video_id, unique_viewers, bot_events FROM video_metrics_daily")
    assert {(r["video_id"], r["unique_viewers"], r["bot_events"]) for r in daily} == {
        ("v", 1, 10),
        ("v-bots", 0, 5),
    }
    for table in ("video_sessions", "video_watch_progress"):
        assert [r["viewer_id"] for r in _rows(db, f"SELECT viewer_id FROM {table}")] == ["person"]
    heatmap = _rows(db, "SELECT DISTINCT video_id, views FROM video_heatmap")
    assert [(r["video_id"], r["views"]) for r in heatmap] == [("v", 1)]
    members = _rows(db, "SELECT DISTINCT member FROM metrics_members")
    assert {r["member"] for r in members} == {"person", "s-person"}
    sessions = _rows(db, "SELECT session_id FROM heatmap_sessions")
    assert [r["session_id"] for r in sessions] == ["s-person"]


def test_warm_builds_both_parsers_before_the_first_header() -> None:
    """A processor calls warm() before its first read, so its first batch does not build
    ua-parser's resolver and the crawler patterns (about 0.2 s)."""
    probe = (
        "import ua_parser\n"
        "from vidpulse import agents\n"
        "before = ('parser' in vars(ua_parser), agents._detector.cache_info().currsize)\n"
        "agents.warm()\n"
        "after = ('parser' in vars(ua_parser), agents._detector.cache_info().currsize)\n"
        "print(before, after)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["(False,", "0)", "(True,", "1)"]
