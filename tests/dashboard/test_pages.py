"""The HTML pages over HTTP: login and its attacks, the session cookie, what the pages hold.

The browser test (tests/browser/test_dashboard.py) draws the charts; these check the
server side without a browser, against real Redis and PostgreSQL.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import pytest
from starlette.testclient import TestClient

from dashboard.app import create_app
from dashboard.data.videos import SORTS
from tests.dashboard.conftest import AUTH, TOKEN, Feeder
from vidpulse.settings import Settings

PAGES = ("/", "/videos", "/videos/video-00001", "/pipeline")


@pytest.fixture
def browser(dash_settings: Settings) -> Iterator[TestClient]:
    """A cookie-keeping client of the dashboard, not logged in, no bearer token."""
    with TestClient(create_app(dash_settings), base_url="http://dash.test") as client:
        yield client


def csrf_of(client: TestClient) -> str:
    """The CSRF token of the login form (made for this client's session)."""
    page = client.get("/login")
    assert page.status_code == 200
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None
    return found[1]


def log_in(client: TestClient) -> None:
    response = client.post(
        "/login", data={"csrf": csrf_of(client), "token": TOKEN}, follow_redirects=False
    )
    assert response.status_code == 303
    assert response.headers["location"] == "http://dash.test/"


def redirected_to_login(client: TestClient, path: str) -> bool:
    response = client.get(path, follow_redirects=False)
    return response.status_code == 303 and response.headers["location"].endswith("/login")


def test_every_page_asks_for_the_login_first(browser: TestClient) -> None:
    """Without a session every page redirects to /login; a bearer token does not count."""
    for path in PAGES:
        assert redirected_to_login(browser, path), path
        response = browser.get(path, headers=AUTH, follow_redirects=False)
        assert response.status_code == 303, path


def test_a_wrong_token_gets_the_form_again_with_401(browser: TestClient) -> None:
    """A wrong, empty or huge token: 401 with the form and a message; no session."""
    csrf = csrf_of(browser)
    for token in ("x" * 30, "", TOKEN + "x", "y" * 2000):
        response = browser.post("/login", data={"csrf": csrf, "token": token})
        assert response.status_code == 401
        assert "That token is not valid" in response.text
        assert 'name="token"' in response.text
    assert redirected_to_login(browser, "/")


def test_login_without_the_forms_csrf_token_is_refused(browser: TestClient) -> None:
    """A right token posted without (or with another session's) CSRF token: 403, no session."""
    csrf_of(browser)
    for csrf in (None, "", "forged-token"):
        data = {"token": TOKEN} if csrf is None else {"token": TOKEN, "csrf": csrf}
        response = browser.post("/login", data=data, follow_redirects=False)
        assert response.status_code == 403
        assert "The form has expired" in response.text
        assert redirected_to_login(browser, "/")


def test_login_posted_from_another_site_is_refused(browser: TestClient) -> None:
    """An Origin naming another site: 403 even with a valid CSRF token and token."""
    response = browser.post(
        "/login",
        data={"csrf": csrf_of(browser), "token": TOKEN},
        headers={"Origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert response.status_code == 403
    assert "another site" in response.text
    assert redirected_to_login(browser, "/")


def test_an_oversized_or_garbled_login_form_is_refused(browser: TestClient) -> None:
    """A body over 4 KiB, or one that is not UTF-8: 403 with the form, not a stack trace."""
    csrf = csrf_of(browser)
    big = browser.post("/login", data={"csrf": csrf, "token": TOKEN, "pad": "p" * 10_000})
    assert big.status_code == 403
    assert "too large" in big.text
    garbled = browser.post(
        "/login",
        content=b"csrf=" + csrf.encode() + b"&token=\xff\xfe",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert garbled.status_code == 403
    assert redirected_to_login(browser, "/")


def test_the_session_cookie_is_signed_httponly_and_samesite_strict(browser: TestClient) -> None:
    """After login the cookie is HttpOnly and SameSite=Strict; a tampered one is no session."""
    csrf = csrf_of(browser)
    response = browser.post("/login", data={"csrf": csrf, "token": TOKEN}, follow_redirects=False)
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert browser.get("/", follow_redirects=False).status_code == 200
    value = browser.cookies["vidpulse_session"]
    browser.cookies.set("vidpulse_session", value[:-4] + "AAAA", domain="dash.test")
    assert redirected_to_login(browser, "/")


def test_logout_needs_the_sessions_csrf_token(browser: TestClient) -> None:
    """A logout posted without the CSRF token keeps the session; with it, every page
    asks for the login again."""
    log_in(browser)
    forged = browser.post("/logout", follow_redirects=False)
    assert forged.status_code == 303
    assert browser.get("/", follow_redirects=False).status_code == 200
    page = browser.get("/")
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None
    response = browser.post("/logout", data={"csrf": found[1]}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].endswith("/login")
    for path in PAGES:
        assert redirected_to_login(browser, path), path


class _Markup(HTMLParser):
    """What the CSP cares about in a page: inline scripts, style attributes, inline handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.inline: list[str] = []
        self.data_blocks = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script" and "src" not in names:
            if names.get("type") != "application/json":
                self.inline.append(f"<script {names}>")
            else:
                self.data_blocks += 1
        if "style" in names or tag == "style":
            self.inline.append(f"style on <{tag}>")
        self.inline.extend(f"{n} on <{tag}>" for n in names if n.startswith("on"))


def test_pages_need_no_inline_script_or_style_and_escape_titles(
    fed: Feeder, browser: TestClient, api: TestClient
) -> None:
    """Every page passes a CSP without 'unsafe-inline' (charts read JSON data blocks) and a
    catalogue title with markup in it is shown as text, never run."""
    title = '</script><script>alert(1)</script><b onmouseover="x()">T</b>'
    assert api.put("/api/v1/videos/video-00001", json={"title": title}).status_code in (200, 201)
    log_in(browser)
    blocks = 0
    for path in (*PAGES, "/login"):
        response = browser.get(path)
        assert response.status_code == 200, path
        assert response.headers["cache-control"] == "no-store"
        csp = response.headers["content-security-policy"]
        assert "unsafe-inline" not in csp
        assert "script-src 'self'" in csp
        markup = _Markup()
        markup.feed(response.text)
        assert markup.inline == [], path
        blocks += markup.data_blocks
        assert "<script>alert(1)" not in response.text
    assert blocks >= 6  # daily, completion bands, retention, funnel, devices, daily, backlog
    video = browser.get("/videos/video-00001").text
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in video


def test_an_empty_database_shows_no_data_yet(browser: TestClient) -> None:
    """Before any event: every page renders, saying there is no data yet."""
    log_in(browser)
    for path in ("/", "/videos"):
        response = browser.get(path)
        assert response.status_code == 200
        assert "No data yet" in response.text


def test_the_daily_chart_shows_the_days_asked_for(fed: Feeder, browser: TestClient) -> None:
    """?from=&to= choose the days of the daily chart; days without views say so."""
    log_in(browser)
    response = browser.get("/?from=2020-01-01&to=2020-01-07")
    assert response.status_code == 200
    assert 'value="2020-01-01"' in response.text
    assert "No views in this period" in response.text
    recent = browser.get("/videos/video-00000").text
    assert 'id="chart-daily-data"' in recent


def test_bad_page_parameters_and_unknown_videos_get_a_page_not_a_trace(
    browser: TestClient,
) -> None:
    """A bad sort or cursor, a bad id or an unknown video: an HTML page with the reason."""
    log_in(browser)
    cases = {
        "/videos?sort=title": 400,
        "/videos?include_preview=maybe": 400,
        "/videos?cursor=not-a-cursor": 200,
        "/videos/no%20such": 400,
        "/videos/never-seen": 404,
        "/?from=2026-13-01": 400,
        "/?from=2026-01-10&to=2026-01-01": 400,
    }
    for path, status in cases.items():
        response = browser.get(path)
        assert response.status_code == status, path
        assert response.headers["content-type"].startswith("text/html"), path
        assert "Traceback" not in response.text
    assert "That page link is out of date" in browser.get("/videos?cursor=x").text


def test_the_videos_pages_walk_every_video_once_in_the_chosen_order(
    fed: Feeder, browser: TestClient, db: Any
) -> None:
    """Following "Next page" (keyset cursor) lists each non-preview video once, sorted as
    asked, and the sort links keep the filters."""
    log_in(browser)
    expected = [
        row[0]
        for row in db.execute(
            "SELECT m.video_id FROM video_metrics m LEFT JOIN videos c USING (video_id)"
            " WHERE NOT coalesce(c.is_preview, EXISTS (SELECT 1 FROM progress_sessions p"
            "  WHERE p.video_id = m.video_id AND p.is_preview))"
            " ORDER BY m.watch_seconds ASC, m.video_id ASC"
        )
    ]
    seen: list[str] = []
    url: str | None = "/videos?sort=watch_seconds&order=asc&limit=3"
    while url:
        page = browser.get(url)
        assert page.status_code == 200
        seen += re.findall(r'href="http://dash.test/videos/([^"?]+)"', page.text)
        found = re.search(r'href="([^"]+)" rel="next"', page.text)
        url = html.unescape(found[1]) if found else None
    assert seen == expected
    assert len(expected) > 3
    sorted_page = browser.get("/videos?q=video-0&limit=3").text
    assert html.escape("/videos?q=video-0&limit=3&sort=views&order=asc") in sorted_page
    for key in SORTS:  # the page offers every order the API knows
        assert f'<option value="{key}"' in sorted_page


def test_a_catalogued_video_without_views_has_a_page_saying_so(
    browser: TestClient, api: TestClient
) -> None:
    """A video only in the catalogue: its page renders with its title and no-data notes."""
    entry = {"title": "Coming soon", "duration_s": 95, "course_id": "c-7", "course_title": "C & D"}
    assert api.put("/api/v1/videos/fresh-video", json=entry).status_code == 201
    log_in(browser)
    page = browser.get("/videos/fresh-video")
    assert page.status_code == 200
    assert "Coming soon" in page.text
    assert "1:35 long" in page.text
    assert (
        'href="http://dash.test/videos?course_id=c-7&amp;include_preview=true">C &amp; D</a>'
        in page.text
    )
    assert "No segment of this video has been played" in page.text
    assert "No viewers yet" in page.text
