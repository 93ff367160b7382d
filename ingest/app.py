"""The ingest app: `create_app(settings)` serves POST /v1/events and friends."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from ingest.appender import Appender, Backpressure, Item
from vidpulse.events import FieldError, InvalidEvent, now_ms, parse_event
from vidpulse.keys import Keys
from vidpulse.settings import Settings

log = structlog.get_logger("vidpulse.ingest")

TRACKER_JS = Path(__file__).with_name("static") / "tracker.js"
_MAX_USER_AGENT = 512
_MAX_REFERER = 2048


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class RequestError(Exception):
    """A request the ingest refuses as a whole; becomes a JSON error response."""

    def __init__(self, status: int, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.status = status
        self.body = {"error": error, **extra}


def error_response(exc: RequestError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(exc.body, status_code=exc.status, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) more than `limit` bytes without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"body is {declared} bytes; the limit is {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def check_content_type(request: Request) -> None:
    """JSON may come as application/json, or as text/plain from navigator.sendBeacon."""
    content_type = request.headers.get("content-type", "")
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime not in ("", "application/json", "text/plain"):
        raise RequestError(
            415, f"content type {mime!r} is not accepted; send application/json or text/plain"
        )


def event_list(body: bytes, limit: int) -> list[Any]:
    """The events of a body: one event object, an array, or {"events": [...]}."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, f"body is not valid JSON: {exc}") from None
    if isinstance(data, dict) and "events" in data:
        if set(data) != {"events"} or not isinstance(data["events"], list):
            raise RequestError(
                422, 'an {"events": ...} body must hold only "events", a JSON array of events'
            )
        data = data["events"]
    events = data if isinstance(data, list) else [data]
    if not events:
        raise RequestError(422, "the request holds no events", rejected=[])
    if len(events) > limit:
        raise RequestError(413, f"{len(events)} events in one request; the limit is {limit}")
    return events


def rejected_entry(index: int, errors: list[FieldError]) -> dict[str, Any]:
    return {"index": index, "errors": [e.as_dict() for e in errors]}


class EventsEndpoint:
    """POST /v1/events: validate every event, append the valid ones, report the rest."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = Keys(settings.stream)

    async def post(self, request: Request) -> Response:
        try:
            check_content_type(request)
            body = await read_body(request, self.settings.max_body_bytes)
            raw_events = event_list(body, self.settings.max_events_per_request)
        except RequestError as exc:
            return error_response(exc)
        except ClientDisconnect:
            return Response(status_code=400)

        received_at = now_ms()
        user_agent = request.headers.get("user-agent", "")[:_MAX_USER_AGENT]
        referer = request.headers.get("referer", "")[:_MAX_REFERER]
        items: list[Item] = []
        rejected: list[dict[str, Any]] = []
        for index, raw in enumerate(raw_events):
            try:
                event = parse_event(raw, now_ms=received_at)
            except InvalidEvent as exc:
                rejected.append(rejected_entry(index, exc.errors))
                continue
            dedupe = ""
            if event.type == "milestone" and event.milestone is not None:
                dedupe = self.keys.milestone_dedupe(
                    event.video_id, event.viewer_id, event.milestone
                )
            items.append(Item(event.stream_json(), received_at, user_agent, referer, dedupe))

        if not items:
            return JSONResponse(
                {"error": "no valid event in the request", "rejected": rejected}, status_code=422
            )
        return await append_and_answer(request, items, rejected)


async def append_and_answer(
    request: Request, items: list[Item], rejected: list[dict[str, Any]]
) -> Response:
    """Append `items` and answer 202, or 503 when they could not be put in the stream."""
    appender: Appender = request.state.appender
    settings: Settings = request.state.settings
    retry = {"Retry-After": str(settings.retry_after_seconds)}
    try:
        appended = await appender.append(items)
    except Backpressure:
        return JSONResponse(
            {"error": "the pipeline is behind; keep the events and retry later"},
            status_code=503,
            headers=retry,
        )
    except (RedisError, OSError) as exc:
        log.warning("redis_unavailable", error=str(exc))
        return JSONResponse(
            {"error": "the event store is unavailable; keep the events and retry later"},
            status_code=503,
            headers=retry,
        )
    accepted = sum(appended)
    return JSONResponse(
        {"accepted": accepted, "duplicates": len(appended) - accepted, "rejected": rejected},
        status_code=202,
    )


async def http_error(request: Request, exc: Exception) -> Response:
    """Routing errors (404, 405) as JSON too, like every other error of the ingest."""
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    try:
        await request.state.redis.ping()
    except (RedisError, OSError) as exc:
        return JSONResponse({"status": "unavailable", "error": f"redis: {exc}"}, status_code=503)
    return JSONResponse({"status": "ready"})


async def tracker_js(request: Request) -> Response:
    return FileResponse(
        TRACKER_JS,
        media_type="text/javascript; charset=utf-8",
        headers={"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"},
    )


def create_app(settings: Settings, *, extra_routes: list[Route] | None = None) -> Starlette:
    """Build the ingest ASGI app; the lifespan owns the Redis client."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        client = aioredis.Redis.from_url(
            settings.redis_url,
            socket_timeout=5,
            socket_connect_timeout=2,
            health_check_interval=30,
        )
        appender = Appender(
            client,
            stream=settings.stream,
            max_backlog=settings.max_stream_length,
            dedupe_ttl_seconds=settings.dedupe_ttl_seconds,
        )
        try:
            yield {"redis": client, "appender": appender, "settings": settings}
        finally:
            await client.aclose()

    from ingest.legacy import legacy_routes  # it builds on this module's helpers

    routes = [
        Route("/v1/events", EventsEndpoint(settings).post, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/v1/tracker.js", tracker_js, methods=["GET"]),
        *legacy_routes(settings),
        *(extra_routes or []),
    ]
    origins = settings.cors_origin_list
    middleware = [
        Middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["POST", "GET", "OPTIONS"],
            allow_headers=["Content-Type"],
            expose_headers=["Retry-After"],
            max_age=86400,
        )
    ]
    return Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error},
    )


def app_from_env() -> Starlette:
    """Factory for uvicorn workers: each worker process reads the environment once."""
    from vidpulse import logs

    settings = Settings.from_env()
    logs.configure(settings.log_format, settings.log_level)
    return create_app(settings)
