"""The HTML pages: login and logout, overview, videos, one video, pipeline.

Server-rendered Jinja2 templates (`dashboard/templates/`) over the same answers the
JSON API gives (`dashboard/data/`). Charts are drawn by `static/dashboard.js` from JSON
data blocks in the page, so the Content-Security-Policy needs no inline script or style.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.templating import Jinja2Templates

from dashboard import charts, formats, params, reads
from dashboard.auth import SESSION_KEY, logged_in, token_ok
from dashboard.data import videos as videos_data
from dashboard.responses import ApiError

CSRF_KEY = "csrf"
MAX_FORM_BYTES = 4096
MAX_TOKEN_CHARS = 1024
VIDEOS_PER_PAGE = 50
# The API's sort keys, as the videos page names them.
SORT_LABELS = {
    "views": "Views",
    "watched_50": "Reached 50%",
    "completion_rate": "Completion rate",
    "watch_seconds": "Watch time",
    "last_event_at": "Last activity",
}
POPULAR_ON_OVERVIEW = 5

Handler = Callable[[Request], Awaitable[Response]]


def _csrf_token(request: Request) -> str:
    """This session's form token, made on first use (the login form makes it)."""
    token = request.session.get(CSRF_KEY)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        request.session[CSRF_KEY] = token
    return token


def _page_context(request: Request) -> dict[str, Any]:
    return {"csrf": _csrf_token(request)}


templates = Jinja2Templates(
    directory=Path(__file__).with_name("templates"), context_processors=[_page_context]
)
templates.env.filters.update(formats.FILTERS)


def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    """A page; never stored by a browser or proxy (it holds data and the form token)."""
    return templates.TemplateResponse(
        request, name, context, status_code=status, headers={"Cache-Control": "no-store"}
    )


# --- logging in and out ------------------------------------------------------------


class FormRejected(Exception):
    """A form post that is not one of our own pages' (no CSRF token, foreign origin, too big)."""


async def _own_form(request: Request) -> dict[str, str]:
    """The fields of a small url-encoded form posted by one of this site's pages.

    Reads at most MAX_FORM_BYTES; the session's CSRF token must come back in the form,
    and a browser's Origin header, when it names a site, must name this one. (Under
    `Referrer-Policy: no-referrer` browsers send `Origin: null` for our own forms.)
    """
    origin = request.headers.get("origin")
    if origin not in (None, "null") and urlsplit(origin).netloc != request.headers.get("host"):
        raise FormRejected("The form was posted from another site")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormRejected("The form is too large")
    try:
        fields = dict(parse_qsl(body.decode(), max_num_fields=8))
    except (UnicodeDecodeError, ValueError):
        raise FormRejected("The form could not be read") from None
    expected = request.session.get(CSRF_KEY)
    given = fields.get(CSRF_KEY, "")
    if not isinstance(expected, str) or not hmac.compare_digest(given.encode(), expected.encode()):
        raise FormRejected("The form has expired")
    return fields


def _login_page(request: Request, error: str | None = None, status: int = 200) -> Response:
    return render(request, "login.html", {"error": error, "max_token": MAX_TOKEN_CHARS}, status)


async def login_form(request: Request) -> Response:
    if logged_in(request):
        return RedirectResponse(request.url_for("page_overview"), status_code=303)
    return _login_page(request)


async def login(request: Request) -> Response:
    """Check the token; on success a fresh session (new CSRF token) and the overview."""
    try:
        fields = await _own_form(request)
    except FormRejected as exc:
        return _login_page(request, f"{exc}: please log in again.", 403)
    token = fields.get("token", "").strip()
    if not token or len(token) > MAX_TOKEN_CHARS or not token_ok(request.state.settings, token):
        return _login_page(request, "That token is not valid. Check it and try again.", 401)
    request.session.clear()
    request.session[SESSION_KEY] = True
    request.session[CSRF_KEY] = secrets.token_urlsafe(32)
    return RedirectResponse(request.url_for("page_overview"), status_code=303)


async def logout(request: Request) -> Response:
    try:
        await _own_form(request)
    except FormRejected:
        # Not our form: keep the session (a foreign page must not sign people out).
        return RedirectResponse(request.url_for("page_overview"), status_code=303)
    request.session.clear()
    return RedirectResponse(request.url_for("page_login"), status_code=303)


def _login_required(handler: Handler) -> Handler:
    async def page(request: Request) -> Response:
        if not logged_in(request):
            return RedirectResponse(request.url_for("page_login"), status_code=303)
        try:
            return await handler(request)
        except ApiError as exc:
            return _problem(request, exc.status, "That page cannot be shown", exc.error)

    page.__name__ = handler.__name__
    page.__doc__ = handler.__doc__
    return page


# --- the pages ---------------------------------------------------------------------


async def overview_page(request: Request) -> Response:
    """Headline numbers, views per day, completion bands, the most watched videos."""
    day_from, day_to = params.day_range(request.query_params)
    answer = orjson.loads(await reads.overview_json(request, day_from, day_to))
    popular = orjson.loads(await reads.popular_json(request, POPULAR_ON_OVERVIEW))
    return render(request, "overview.html", charts.overview(answer, popular))


def _videos_url(request: Request, **query: Any) -> str:
    kept = {k: v for k, v in query.items() if v not in (None, "", False)}
    return (
        f"{request.url_for('page_videos')}?{urlencode(kept)}"
        if kept
        else str(request.url_for("page_videos"))
    )


async def videos_page(request: Request) -> Response:
    """Every video: sortable by the API's sort keys, filtered, a page at a time (keyset)."""
    query_params = request.query_params
    query = params.video_query(query_params, VIDEOS_PER_PAGE)
    filters = {
        "q": query.q or "",
        "course_id": query.course_id or "",
        "include_preview": query.include_preview,
    }
    # Kept in every link (sort, next page), but not a filter a person clears.
    size = {"limit": query.limit if query.limit != VIDEOS_PER_PAGE else None}
    error = None
    try:
        answer = orjson.loads(await reads.videos_json(request, query))
    except videos_data.BadCursor:
        answer, error = {"rows": [], "next_cursor": None}, "That page link is out of date."

    def sort_link(key: str) -> str:
        # A second click on the sorted column turns the order round.
        order = "asc" if key == query.sort and query.order == "desc" else "desc"
        return _videos_url(request, **filters, **size, sort=key, order=order)

    return render(
        request,
        "videos.html",
        {
            "section": "videos",
            "rows": answer["rows"],
            "sort": query.sort,
            "order": query.order,
            "filters": {**filters, "active": any(filters.values())},
            "sort_links": {key: sort_link(key) for key in videos_data.SORTS},
            "sort_labels": SORT_LABELS,
            "next_link": answer["next_cursor"]
            and _videos_url(
                request,
                **filters,
                **size,
                sort=query.sort,
                order=query.order,
                cursor=answer["next_cursor"],
            ),
            "first_link": query.cursor
            and _videos_url(request, **filters, **size, sort=query.sort, order=query.order),
            "error": error,
        },
    )


async def video_page(request: Request) -> Response:
    """One video: retention per segment with drop-offs and rewatch, funnel, devices, days."""
    video_id = params.path_ident(request.path_params["video_id"], "video_id")
    day_from, day_to = params.day_range(request.query_params)
    answer = orjson.loads(await reads.video_json(request, video_id, day_from, day_to))
    segment_seconds = request.state.settings.segment_seconds
    return render(request, "video.html", charts.video(answer, segment_seconds))


async def pipeline_page(request: Request) -> Response:
    """Per processor group: lag, pending entries, dead letters (what `vidpulse status` shows)."""
    report = await reads.pipeline(request)
    return render(request, "pipeline.html", charts.pipeline(report))


def _problem(request: Request, status: int, title: str, text: str) -> Response:
    return render(request, "problem.html", {"title": title, "text": text}, status)


routes: list[BaseRoute] = [
    Route("/", _login_required(overview_page), name="page_overview"),
    Route("/videos", _login_required(videos_page), name="page_videos"),
    Route("/videos/{video_id}", _login_required(video_page), name="page_video"),
    Route("/pipeline", _login_required(pipeline_page), name="page_pipeline"),
    Route("/login", login_form, methods=["GET"], name="page_login"),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"], name="page_logout"),
]
