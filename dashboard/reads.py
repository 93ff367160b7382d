"""The cached reads the API and the pages share: one function per answer.

Each takes the request (for its pool, cache and settings) and validated parameters,
and returns the answer as JSON bytes (`*_json`, what the API sends as is) or as plain
data (what the pages render). The scopes name the version keys the answer depends on.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from starlette.requests import Request

from dashboard.cache import Cache
from dashboard.data import overview as overview_data
from dashboard.data import pipeline as pipeline_data
from dashboard.data import video as video_data
from dashboard.data import videos as videos_data
from dashboard.data import viewers as viewers_data
from dashboard.data.videos import VideoQuery
from dashboard.responses import ApiError
from vidpulse.settings import Settings

# What each answer is read from: the processors writing its tables, and the catalogue.
OVERVIEW_SCOPES = ("metrics", "progress", "catalogue")
LIST_SCOPES = ("metrics", "progress", "catalogue")
VIEWER_SCOPES = ("progress", "catalogue")


def video_scopes(video_id: str) -> tuple[str, ...]:
    return (f"video:{video_id}", "catalogue")


def _cache(request: Request) -> Cache:
    cache: Cache = request.state.cache
    return cache


async def overview_json(request: Request, day_from: date, day_to: date) -> bytes:
    async def compute() -> Any:
        async with request.state.pool.connection() as conn:
            return await overview_data.overview(conn, day_from, day_to)

    params = {"from": day_from.isoformat(), "to": day_to.isoformat()}
    return await _cache(request).json("overview", params, OVERVIEW_SCOPES, compute)


async def videos_json(request: Request, query: VideoQuery) -> bytes:
    async def compute() -> Any:
        async with request.state.pool.connection() as conn:
            return await videos_data.videos(conn, query)

    return await _cache(request).json("videos", query.cache_params(), LIST_SCOPES, compute)


async def popular_json(request: Request, limit: int) -> bytes:
    async def compute() -> Any:
        async with request.state.pool.connection() as conn:
            return await videos_data.popular(conn, limit)

    return await _cache(request).json("popular", {"limit": limit}, LIST_SCOPES, compute)


async def video_json(request: Request, video_id: str, day_from: date, day_to: date) -> bytes:
    """Raises ApiError 404 for a video neither seen in events nor catalogued."""
    settings: Settings = request.state.settings

    async def compute() -> Any:
        async with request.state.pool.connection() as conn:
            return await video_data.video(
                conn, video_id, day_from, day_to, settings.segment_seconds
            )

    params = {"id": video_id, "from": day_from.isoformat(), "to": day_to.isoformat()}
    body = await _cache(request).json("video", params, video_scopes(video_id), compute)
    if body == b"null":
        raise ApiError(404, f"no video {video_id!r}: not seen in events nor in the catalogue")
    return body


async def viewer_progress_json(
    request: Request, viewer_id: str, video_id: str | None, limit: int
) -> bytes:
    async def compute() -> Any:
        async with request.state.pool.connection() as conn:
            return await viewers_data.progress(conn, viewer_id, video_id, limit)

    params = {"viewer": viewer_id, "video": video_id, "limit": limit}
    return await _cache(request).json("viewer", params, VIEWER_SCOPES, compute)


async def pipeline(request: Request) -> dict[str, Any]:
    """Not cached: it is read from Redis, as cheaply as a cache would be."""
    return await pipeline_data.pipeline(request.state.settings)
