"""The JSON API under /api/v1 (bearer auth is the Mount's middleware, in app.py).

Routes validate their parameters (dashboard.params), read through the cache
(dashboard.reads) and answer JSON, or CSV for lists and daily series. Errors are
raised and turned into responses once, by the app's exception handlers.
"""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from pydantic import ValidationError
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dashboard import params, reads
from dashboard.catalogue import UPSERT, CatalogueEntry, describe, row_params
from dashboard.data import fetch_one
from dashboard.data import overview as overview_data
from dashboard.data import pipeline as pipeline_data
from dashboard.data import video as video_data
from dashboard.data import videos as videos_data
from dashboard.data import viewers as viewers_data
from dashboard.data.videos import BadCursor
from dashboard.openapi import document
from dashboard.responses import ApiError, JSONResponse, bad_param, csv_response, wants_csv
from vidpulse.keys import Keys

log = structlog.get_logger("vidpulse.dashboard")

_MAX_PUT_BYTES = 16 * 1024


def _json(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type="application/json")


def _answer(
    body: bytes, csv_wanted: bool, rows_key: str, columns: list[str], filename: str
) -> Response:
    """The JSON answer as it is, or the list under `rows_key` as CSV."""
    if not csv_wanted:
        return _json(body)
    return csv_response(orjson.loads(body)[rows_key], columns, filename)


async def overview(request: Request) -> Response:
    q = request.query_params
    params.known_only(q, ("from", "to", "format"))
    csv_wanted = wants_csv(request)
    day_from, day_to = params.day_range(q)
    body = await reads.overview_json(request, day_from, day_to)
    return _answer(body, csv_wanted, "daily", overview_data.DAILY_COLUMNS, "overview-daily.csv")


async def videos(request: Request) -> Response:
    q = request.query_params
    params.known_only(
        q, ("sort", "order", "course_id", "include_preview", "q", "limit", "cursor", "format")
    )
    csv_wanted = wants_csv(request)
    query = params.video_query(q, 50)
    if query.cursor is not None:
        try:
            videos_data.decode_cursor(query.cursor, query.sort, query.order)
        except BadCursor as exc:
            raise bad_param("cursor", str(exc)) from None
    body = await reads.videos_json(request, query)
    if csv_wanted:
        answer = orjson.loads(body)
        headers = {"X-Next-Cursor": answer["next_cursor"]} if answer["next_cursor"] else {}
        response = csv_response(answer["rows"], videos_data.COLUMNS, "videos.csv")
        response.headers.update(headers)
        return response
    return _json(body)


async def popular(request: Request) -> Response:
    q = request.query_params
    params.known_only(q, ("limit", "format"))
    csv_wanted = wants_csv(request)
    body = await reads.popular_json(request, params.limit(q, 10))
    return _answer(body, csv_wanted, "rows", videos_data.POPULAR_COLUMNS, "popular-videos.csv")


async def video(request: Request) -> Response:
    q = request.query_params
    params.known_only(q, ("from", "to", "format"))
    csv_wanted = wants_csv(request)
    video_id = params.path_ident(request.path_params["video_id"], "video_id")
    day_from, day_to = params.day_range(q)
    body = await reads.video_json(request, video_id, day_from, day_to)
    return _answer(body, csv_wanted, "daily", video_data.DAILY_COLUMNS, f"{video_id}-daily.csv")


async def put_video(request: Request) -> Response:
    """Create or replace a catalogue entry: 201 created, 200 replaced, 422 invalid."""
    video_id = params.path_ident(request.path_params["video_id"], "video_id")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > _MAX_PUT_BYTES:
        raise ApiError(413, f"body is over the limit of {_MAX_PUT_BYTES} bytes")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > _MAX_PUT_BYTES:
            raise ApiError(413, f"body is over the limit of {_MAX_PUT_BYTES} bytes")
    try:
        entry = CatalogueEntry.model_validate_json(raw)
    except ValidationError as exc:
        raise ApiError(422, describe(exc)) from None
    async with request.state.write_pool.connection() as conn:
        row = await fetch_one(conn, UPSERT, row_params(video_id, entry))
    assert row is not None
    await _catalogue_changed(request, video_id)
    created = row.pop("created")
    return JSONResponse(row, status_code=201 if created else 200)


async def _catalogue_changed(request: Request, video_id: str) -> None:
    keys = Keys(request.state.settings.stream)
    pipe = request.state.redis.pipeline(transaction=False)
    pipe.incr(keys.cache_version("catalogue"))
    pipe.incr(keys.cache_version(f"video:{video_id}"))
    try:
        await pipe.execute()
    except (RedisError, OSError) as exc:
        # The entry is saved; answers cached before it show the old title until their TTL.
        log.warning("cache_version_not_bumped", error=str(exc), video_id=video_id)


async def viewer_progress(request: Request) -> Response:
    q = request.query_params
    params.known_only(q, ("video_id", "limit", "format"))
    csv_wanted = wants_csv(request)
    viewer_id = params.path_ident(request.path_params["viewer_id"], "viewer_id")
    video_id = params.ident(q, "video_id")
    body = await reads.viewer_progress_json(request, viewer_id, video_id, params.limit(q, 100))
    return _answer(body, csv_wanted, "rows", viewers_data.COLUMNS, f"{viewer_id}-progress.csv")


async def pipeline(request: Request) -> Response:
    q = request.query_params
    params.known_only(q, ("format",))
    csv_wanted = wants_csv(request)
    report: dict[str, Any] = await reads.pipeline(request)
    if csv_wanted:
        return csv_response(report["groups"], pipeline_data.GROUP_COLUMNS, "pipeline.csv")
    return JSONResponse(report)


async def openapi(request: Request) -> Response:
    return JSONResponse(document())


routes: list[Route] = [
    Route("/overview", overview, methods=["GET"]),
    Route("/videos", videos, methods=["GET"]),
    Route("/videos/popular", popular, methods=["GET"]),
    Route("/videos/{video_id}", video, methods=["GET"]),
    Route("/videos/{video_id}", put_video, methods=["PUT"]),
    Route("/viewers/{viewer_id}/progress", viewer_progress, methods=["GET"]),
    Route("/pipeline", pipeline, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]
