"""The dashboard's pages in a real headless Chromium, served by uvicorn over real data.

A simulated audience goes through the ingest and the four processors; one video gets a
title in the catalogue. One browser session then logs in (a wrong token first), reads the
overview, the videos list, one video and the pipeline, at desktop width and at 360 px,
and logs out. A screenshot of each page is kept in tests/artifacts/dashboard/ (git-ignored).
"""

from __future__ import annotations

import base64
import json
import random
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from selenium import webdriver
from selenium.webdriver.common.by import By
from starlette.testclient import TestClient

from dashboard.formats import clock, hours, pct
from processors.registry import PROCESSORS
from tests.browser.chromium import Tab, eventually
from tests.browser.servers import LiveDashboard
from tests.factories import run_burst
from tools.audience import Session, generate_audience
from vidpulse.events import now_ms
from vidpulse.settings import Settings

pytestmark = pytest.mark.browser

TOKEN = "dashboard-browser-test-token-0123456789"
TITLE = "Intro to <b>retention</b> & friends"
LATE = 3
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "dashboard"

# Collects what the page reports as going wrong: uncaught errors, console.error calls
# and Content-Security-Policy violations. Installed through the DevTools protocol, so
# it runs before the page's own scripts and is not subject to the page's CSP.
ERROR_HOOK = """
window.__problems = [];
const note = (kind, text) => window.__problems.push(kind + ": " + text);
window.addEventListener("error",
  (e) => note("error", e.message || String(e.target && e.target.src)), true);
window.addEventListener("unhandledrejection", (e) => note("rejection", String(e.reason)));
document.addEventListener("securitypolicyviolation",
  (e) => note("csp", e.violatedDirective + " " + e.blockedURI));
const consoleError = console.error.bind(console);
console.error = (...args) => { note("console", args.join(" ")); consoleError(...args); };
"""


@pytest.fixture
def audience_data(
    settings: Settings, ingest: TestClient, redis_client: redis.Redis
) -> tuple[str, int]:
    """A seeded audience posted through the ingest and processed, but for its last
    LATE sessions (so the pipeline has a lag to show).

    Returns the most viewed video and the number of events left unprocessed.
    """
    sessions = generate_audience(
        random.Random(11), videos=4, viewers=40, sessions=90, now_ms=now_ms()
    )

    def post(batch: list[Session]) -> None:
        for s in batch:
            events, headers = s.events, {"User-Agent": s.user_agent}
            for start in range(0, len(events), 40):
                response = ingest.post(
                    "/v1/events", json=events[start : start + 40], headers=headers
                )
                assert response.status_code == 202, response.text

    post(sessions[:-LATE])
    for name in PROCESSORS:
        run_burst(settings, name)
    processed = redis_client.xlen(settings.stream)
    post(sessions[-LATE:])
    unprocessed = int(redis_client.xlen(settings.stream)) - int(processed)  # type: ignore[arg-type]
    counts: dict[str, int] = {}
    for s in sessions[:-LATE]:
        video_id = s.events[0]["video_id"]
        counts[video_id] = counts.get(video_id, 0) + 1
    return max(counts, key=lambda v: counts[v]), unprocessed


@pytest.fixture
def dashboard(make_settings: Any, audience_data: tuple[str, int]) -> Iterator[LiveDashboard]:
    server = LiveDashboard(make_settings(admin_tokens=TOKEN))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def hooked_tab(chromium: webdriver.Chrome) -> Iterator[Tab]:
    """The browser with the error hook on every page; desktop size; hook removed after."""
    hook = chromium.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": ERROR_HOOK})
    chromium.set_window_size(1280, 900)
    chromium.get_log("browser")  # drop what earlier tests left
    yield Tab(chromium)
    chromium.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    chromium.execute_cdp_cmd(
        "Page.removeScriptToEvaluateOnNewDocument", {"identifier": hook["identifier"]}
    )
    chromium.get("about:blank")


def put_title(origin: str, video_id: str) -> None:
    body = json.dumps({"title": TITLE, "course_title": "Analytics 101"}).encode()
    request = urllib.request.Request(
        f"{origin}/api/v1/videos/{video_id}",
        data=body,
        method="PUT",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status in (200, 201)


def screenshot(tab: Tab, name: str) -> Path:
    """The whole page (beyond the window) as a PNG in the artifacts folder."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = tab.driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
    )
    path = ARTIFACTS / f"{name}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def problems(tab: Tab) -> list[str]:
    """What went wrong on the current page, as the hook and the browser's log saw it."""
    hooked: list[str] = tab.js("return window.__problems || []")
    logged = [
        entry["message"]
        for entry in tab.driver.get_log("browser")
        if entry["level"] in ("SEVERE", "WARNING")
    ]
    return hooked + logged


def stat(tab: Tab, key: str) -> str:
    element = tab.driver.find_element(By.CSS_SELECTOR, f'[data-stat="{key}"] dd')
    return str(element.text)


def chart(tab: Tab, canvas_id: str) -> dict[str, Any]:
    """Labels and dataset sizes read back from the Chart.js instance on a canvas."""
    found: dict[str, Any] = eventually(
        lambda: tab.js(
            "const c = window.Chart && Chart.getChart(document.getElementById(arguments[0]));"
            " return c ? {labels: c.data.labels.length,"
            " datasets: c.data.datasets.map(d => d.data.length)} : null;",
            canvas_id,
        ),
        f"the chart {canvas_id} to be drawn",
    )
    return found


def login(tab: Tab, token: str) -> None:
    field = tab.driver.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    tab.driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()


def test_dashboard_pages_in_a_browser(
    hooked_tab: Tab,
    dashboard: LiveDashboard,
    audience_data: tuple[str, int],
    db: psycopg.Connection[Any],
) -> None:
    """Login (wrong token first), every page with its charts and SQL-true numbers, no
    console or CSP errors, usable at 360 px, and logout sends every page back to login."""
    tab, origin, (top, unprocessed) = hooked_tab, dashboard.origin, audience_data
    put_title(origin, top)

    tab.open(f"{origin}/videos")
    eventually(lambda: tab.driver.current_url == f"{origin}/login", "the redirect to login")
    screenshot(tab, "login")
    login(tab, "not-the-token-but-long-enough-0000")
    message = eventually(
        lambda: tab.driver.find_elements(By.ID, "login-error"), "the wrong-token message"
    )
    assert "not valid" in message[0].text
    screenshot(tab, "login-wrong-token")
    assert [p for p in problems(tab) if "401 (Unauthorized)" not in p] == []
    login(tab, TOKEN)
    eventually(lambda: tab.driver.current_url == f"{origin}/", "the overview after login")

    # Overview: the headline numbers are the database's.
    views, viewers, videos, completions, watch_seconds, rate = db.execute(
        "SELECT sum(views), (SELECT count(DISTINCT viewer_id) FROM video_watch_progress),"
        " count(*), sum(completions), sum(watch_seconds),"
        " avg(100.0 * completions / views) FILTER (WHERE views > 0) FROM video_metrics"
    ).fetchone() or (0, 0, 0, 0, 0.0, 0)
    assert stat(tab, "views") == f"{views:,}"
    assert stat(tab, "unique_viewers") == f"{viewers:,}"
    assert stat(tab, "videos") == f"{videos:,}"
    assert stat(tab, "completions") == f"{completions:,}"
    assert stat(tab, "watch_hours") == hours(watch_seconds)
    # The API rounds the mean rate to 2 decimals; the page shows 1.
    assert stat(tab, "avg_completion_rate") == pct(round(float(rate), 2))
    assert chart(tab, "chart-daily")["labels"] == 30
    assert chart(tab, "chart-buckets")["labels"] == 3
    assert (
        TITLE in tab.driver.find_element(By.ID, "popular-title").find_element(By.XPATH, "..").text
    )
    screenshot(tab, "overview")
    assert problems(tab) == []

    # Videos: titles from the catalogue, ids otherwise; a title links to its video.
    tab.open(f"{origin}/videos?sort=views&order=desc")
    table = tab.driver.find_element(By.ID, "videos-table")
    assert TITLE in table.text
    screenshot(tab, "videos")
    assert problems(tab) == []
    table.find_element(By.LINK_TEXT, TITLE).click()
    eventually(lambda: tab.driver.current_url == f"{origin}/videos/{top}", "the video page")

    # One video: the retention chart has one point per segment of the heatmap.
    (last_start,) = db.execute(
        "SELECT max(segment_start) FROM video_heatmap WHERE video_id = %s", (top,)
    ).fetchone() or (None,)
    segments = int(last_start // dashboard.settings.segment_seconds) + 1
    drawn = chart(tab, "chart-retention")
    assert drawn == {"labels": segments, "datasets": [segments] * 3}
    rows = tab.driver.find_elements(By.CSS_SELECTOR, "#segments-table tbody tr")
    assert len(rows) == segments
    assert tab.driver.find_element(By.TAG_NAME, "h1").text.startswith(TITLE)
    # The biggest drop-off before the last segment (where finishers stop), in words.
    (drop_start,) = db.execute(
        "SELECT segment_start FROM video_heatmap WHERE video_id = %s AND segment_start < %s"
        " ORDER BY drop_offs DESC, segment_start LIMIT 1",
        (top, last_start),
    ).fetchone() or (None,)
    drop_end = drop_start + dashboard.settings.segment_seconds
    moments = tab.driver.find_element(By.ID, "key-moments").text
    assert f"Biggest drop-off: {clock(drop_start)}\u2013{clock(drop_end)}" in moments
    assert chart(tab, "chart-funnel")["labels"] == 4
    assert chart(tab, "chart-devices")["labels"] >= 1
    screenshot(tab, "video")
    assert problems(tab) == []

    tab.open(f"{origin}/pipeline")
    assert chart(tab, "chart-backlog")["labels"] == len(PROCESSORS)
    lags = tab.driver.find_elements(By.CSS_SELECTOR, "#groups-table tbody td:nth-child(3)")
    assert [cell.text for cell in lags] == [f"{unprocessed:,}"] * len(PROCESSORS)
    screenshot(tab, "pipeline")
    assert problems(tab) == []

    # 360 px wide: nothing wider than the screen.
    tab.driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 360, "height": 780, "deviceScaleFactor": 2, "mobile": True},
    )
    tab.open(f"{origin}/videos/{top}")
    chart(tab, "chart-retention")
    assert tab.js("return document.documentElement.scrollWidth") <= 360
    screenshot(tab, "video-360px")
    for name, path in (("overview", "/"), ("videos", "/videos"), ("pipeline", "/pipeline")):
        tab.open(origin + path)
        assert tab.js("return document.documentElement.scrollWidth") <= 360, path
        screenshot(tab, f"{name}-360px")
    assert problems(tab) == []
    tab.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    # The checks above would see a violation: an inline script added to a page is
    # refused by the CSP, and the hook reports it.
    tab.js(
        "const s = document.createElement('script'); s.textContent = 'window.ran = 1';"
        " document.body.append(s);"
    )
    seen = eventually(lambda: problems(tab), "the CSP violation report")
    assert any(p.startswith("csp: script-src") for p in seen), seen
    assert not tab.js("return window.ran")

    # Logout: every page asks for the login again.
    tab.driver.find_element(By.CSS_SELECTOR, ".logout button").click()
    eventually(lambda: tab.driver.current_url == f"{origin}/login", "the login page after logout")
    for path in ("/", "/videos", f"/videos/{top}", "/pipeline"):
        tab.open(origin + path)
        assert tab.driver.current_url == f"{origin}/login", path
    assert problems(tab) == []
