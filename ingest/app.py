"""The ingest app: `create_app(settings)` serves POST /v1/events and friends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Iterable
from pathlib import Path
from time import perf_counter
from typing import Any

import orjson
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ingest.appender import Appender, Backpressure, Batch, Item
from ingest.cors import LeanCORSMiddleware
from ingest.deadlines import BodyDeadlines
from ingest.fastpath import vouch
from vidpulse.events import EdgeRules, FieldError, InvalidEvent, now_ms, parse_event
from vidpulse.keys import Keys
from vidpulse.redisclient import async_client, is_cluster
from vidpulse.settings import Settings
from vidpulse.telemetry import (
    INGEST_APPEND_SECONDS,
    RequestMetricsMiddleware,
    count_ingest_events,
    metrics_route,
)

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


# Sent with answers given before the body was read to its end (408, 413): the rest of
# it would otherwise be taken for the next request on the connection.
CLOSE = {"Connection": "close"}


async def read_body(request: Request, settings: Settings) -> bytes:
    """The request body within the settings' size and time limits (else 413, 408)."""
    return await receive_body(
        request.receive,
        request.headers.get("content-length"),
        settings.max_body_bytes,
        request.state.deadlines,
    )


async def receive_body(
    receive: Receive, declared: str | None, limit: int, deadlines: BodyDeadlines
) -> bytes:
    """The body from the ASGI `receive`, refusing more than `limit` bytes (413) and a
    body that has not all arrived in the time `deadlines` allow (408).

    `declared` is the Content-Length header, if any: a body declared too large is
    refused before any of it is read. Raises ClientDisconnect if the client goes.
    """
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"body is {declared} bytes; the limit is {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    task = deadlines.watch()
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise RequestError(413, f"body is over the limit of {limit} bytes")
                chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    except asyncio.CancelledError:
        if deadlines.overdue(task):
            raise RequestError(
                408,
                f"the body did not arrive within {deadlines.seconds:g} s; "
                "send it whole and promptly",
            ) from None
        raise
    finally:
        deadlines.unwatch(task)


def check_content_type(request: Request) -> None:
    """JSON may come as application/json, or as text/plain from navigator.sendBeacon."""
    check_mime(request.headers.get("content-type", ""))


def check_mime(content_type: str) -> None:
    """Refuse (415) a content type other than JSON or sendBeacon's text/plain."""
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime not in ("", "application/json", "text/plain"):
        raise RequestError(
            415,
            f"content type {mime!r} is not accepted: the body is JSON, so send "
            "Content-Type: application/json (or text/plain, as navigator.sendBeacon does)",
        )


def header_text(value: bytes, limit: int) -> str:
    """A header's bytes as text: UTF-8 (browsers send it so), invalid bytes replaced."""
    return value[: limit * 4].decode("utf-8", errors="replace")[:limit]


def page_address(referer: bytes) -> str:
    """The Referer as kept: its query string and fragment cut (they carry tokens, emails)."""
    text = header_text(referer, _MAX_REFERER * 4)
    return text.split("#", 1)[0].split("?", 1)[0][:_MAX_REFERER]


def request_context(headers: Iterable[tuple[bytes, bytes]]) -> tuple[str, str]:
    """The (User-Agent, Referer) kept with each entry: all the stream keeps of a request."""
    user_agent = referer = ""
    for name, value in headers:
        if name == b"user-agent":
            user_agent = header_text(value, _MAX_USER_AGENT)
        elif name == b"referer":
            referer = page_address(value)
    return user_agent, referer


def edge_rules(settings: Settings) -> EdgeRules:
    """The contract rules of this deployment that only the ingest applies."""
    key = settings.viewer_signing_key.get_secret_value().encode() or None
    return EdgeRules(max_duration_s=settings.max_duration_seconds, viewer_key=key)


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
    """POST /v1/events: validate every event, append the valid ones, report the rest.

    A plain ASGI app rather than a Request -> Response function: this is the one hot
    route, and Starlette's request and response objects cost it more than its own work.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = Keys.of(settings)
        self.rules = edge_rules(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        content_type = ""
        declared: str | None = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"content-length":
                declared = value.decode("latin-1")
        user_agent, referer = request_context(scope["headers"])
        settings = self.settings
        try:
            check_mime(content_type)
            body = await receive_body(
                receive, declared, settings.max_body_bytes, scope["state"]["deadlines"]
            )
            raw_events = event_list(body, settings.max_events_per_request)
        except RequestError as exc:
            await send_json(send, exc.status, exc.body, CLOSE if exc.status in (408, 413) else None)
            return
        except ClientDisconnect:
            await send_json(send, 400, None)
            return

        received_at = now_ms()
        events: list[tuple[bytes, bytes]] = []
        rejected: list[dict[str, Any]] = []
        milestone_dedupe = self.keys.milestone_dedupe
        rules = self.rules
        for index, raw in enumerate(raw_events):
            # The fast path vouches for plainly valid events; the model decides the rest.
            vouched = vouch(raw, received_at, rules)
            if vouched is not None:
                event_json, fields = vouched
                milestone = fields.get("milestone")
            else:
                try:
                    event = parse_event(raw, now_ms=received_at, rules=rules)
                except InvalidEvent as exc:
                    rejected.append(rejected_entry(index, exc.errors))
                    continue
                event_json = event.stream_json()
                fields = {"video_id": event.video_id, "viewer_id": event.viewer_id}
                milestone = event.milestone if event.type == "milestone" else None
            dedupe = b""
            if milestone is not None:
                dedupe = milestone_dedupe(
                    fields["video_id"], fields["viewer_id"], milestone
                ).encode()
            events.append((dedupe, event_json))

        if not events:
            count_ingest_events(0, 0, len(rejected))
            refusal = {"error": "no valid event in the request", "rejected": rejected}
            await send_json(send, 422, refusal)
            return
        appender: Appender = scope["state"]["appender"]
        batch = Batch(received_at, user_agent.encode(), referer.encode(), events)
        started = perf_counter()
        try:
            appended = await appender.append_batch(batch)
        except (Backpressure, RedisError, OSError) as exc:
            status, error, headers = _unavailable(exc, self.settings)
            await send_json(send, status, error, headers)
            return
        INGEST_APPEND_SECONDS.observe(perf_counter() - started)
        accepted = sum(appended)
        count_ingest_events(accepted, len(appended) - accepted, len(rejected))
        answer = {
            "accepted": accepted,
            "duplicates": len(appended) - accepted,
            "rejected": rejected,
        }
        await send_json(send, 202, answer)


async def send_json(
    send: Send, status: int, content: Any, headers: dict[str, str] | None = None
) -> None:
    """Send a whole JSON response (an empty body when `content` is None)."""
    body = b"" if content is None else orjson.dumps(content)
    raw_headers = [(b"content-length", str(len(body)).encode())]
    if content is not None:
        raw_headers.append((b"content-type", b"application/json"))
    for name, value in (headers or {}).items():
        raw_headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


async def append_and_answer(
    request: Request, items: list[Item], rejected: list[dict[str, Any]]
) -> Response:
    """Append `items` and answer 202, or 503 when they could not be put in the stream."""
    appender: Appender = request.state.appender
    return await _answer(request, appender.append(items), rejected)


async def _answer(
    request: Request, appending: Awaitable[list[bool]], rejected: list[dict[str, Any]]
) -> Response:
    started = perf_counter()
    try:
        appended = await appending
    except (Backpressure, RedisError, OSError) as exc:
        status, body, headers = _unavailable(exc, request.state.settings)
        return JSONResponse(body, status_code=status, headers=headers)
    INGEST_APPEND_SECONDS.observe(perf_counter() - started)
    accepted = sum(appended)
    count_ingest_events(accepted, len(appended) - accepted, len(rejected))
    return JSONResponse(
        {"accepted": accepted, "duplicates": len(appended) - accepted, "rejected": rejected},
        status_code=202,
    )


def _unavailable(exc: Exception, settings: Settings) -> tuple[int, dict[str, str], dict[str, str]]:
    """The 503 for events that could not be put in the stream: (status, body, headers)."""
    retry = {"Retry-After": str(settings.retry_after_seconds)}
    if isinstance(exc, Backpressure):
        return 503, {"error": "the pipeline is behind; keep the events and retry later"}, retry
    log.warning("redis_unavailable", error=str(exc))
    error = "the event store is unavailable; keep the events and retry later"
    return 503, {"error": error}, retry


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


def make_appender(client: aioredis.Redis, settings: Settings) -> Appender:
    """The plain appender, or the partitioned one for partitions, a cluster or replica acks."""
    plain = settings.partitions == 1 and not settings.replica_acks
    if plain and not is_cluster(settings.redis_url):
        return Appender(
            client,
            stream=settings.stream,
            max_backlog=settings.max_stream_length,
            dedupe_ttl_seconds=settings.dedupe_ttl_seconds,
        )
    from ingest.partitioned import PartitionedAppender

    return PartitionedAppender(
        client,
        keys=Keys.of(settings),
        max_backlog=settings.max_stream_length,
        dedupe_ttl_seconds=settings.dedupe_ttl_seconds,
        replica_acks=settings.replica_acks,
        replica_timeout_ms=settings.replica_ack_timeout_ms,
    )


def create_app(settings: Settings, *, extra_routes: list[Route] | None = None) -> Starlette:
    """Build the ingest ASGI app; the lifespan owns the Redis client."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        client = async_client(
            settings.redis_url,
            socket_timeout=5,
            socket_connect_timeout=2,
            health_check_interval=30,
        )
        appender = make_appender(client, settings)
        deadlines = BodyDeadlines(settings.body_timeout_seconds)
        try:
            yield {
                "redis": client,
                "appender": appender,
                "settings": settings,
                "deadlines": deadlines,
            }
        finally:
            deadlines.close()
            await appender.close()
            await client.aclose()

    from ingest.legacy import legacy_routes  # it builds on this module's helpers
    from ingest.openapi import openapi_route

    routes = [
        Route("/v1/events", EventsEndpoint(settings), methods=["POST"]),
        openapi_route(settings),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/v1/tracker.js", tracker_js, methods=["GET"]),
        *legacy_routes(settings),
        metrics_route(settings),
        *(extra_routes or []),
    ]
    origins = settings.cors_origin_list
    middleware = [
        Middleware(RequestMetricsMiddleware, paths=[route.path for route in routes]),
        Middleware(
            LeanCORSMiddleware,
            allow_origins=origins,
            allow_methods=["POST", "GET", "OPTIONS"],
            allow_headers=["Content-Type"],
            expose_headers=["Retry-After"],
            max_age=86400,
        ),
    ]
    if settings.rate_limit:
        from ingest.ratelimit import RateLimitMiddleware

        # Inside CORS: a browser can read the 429 of an allowed origin.
        middleware.append(Middleware(RateLimitMiddleware, settings=settings))
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
