"""The ingest app: `create_app(settings)` serves POST /v1/events and friends."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator
from pathlib import Path
from time import perf_counter
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ingest.appender import Appender, Backpressure, Batch
from ingest.cors import LeanCORSMiddleware, SimpleCORS, refusal
from ingest.deadlines import BodyDeadlines
from ingest.fastpath import vouch
from ingest.http import (
    CLOSE,
    JSONResponse,
    RequestError,
    check_mime,
    edge_rules,
    header_text,
    page_address,
    receive_body,
    send_json,
    store_unavailable,
)
from ingest.legacy import legacy_routes
from ingest.openapi import openapi_route
from vidpulse.events import FieldError, InvalidEvent, now_ms, parse_event
from vidpulse.keys import Keys
from vidpulse.redisclient import async_client, is_cluster
from vidpulse.settings import Settings
from vidpulse.telemetry import (
    INGEST_APPEND_SECONDS,
    INGEST_REQUESTS,
    RequestMetricsMiddleware,
    count_ingest_events,
    metrics_route,
)

TRACKER_JS = Path(__file__).with_name("static") / "tracker.js"
_MAX_USER_AGENT = 512
EVENTS_PATH = "/v1/events"
# A uvicorn worker's collection thresholds (see `app_from_env`).
GC_THRESHOLDS = (10_000, 10, 10)


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
        """As a Starlette route, behind the app's middleware (CORS headers are theirs)."""
        await self.handle(scope, receive, send, None)

    async def handle(
        self, scope: Scope, receive: Receive, send: Send, cors: SimpleCORS | None
    ) -> int:
        """Answer the request; returns the status sent. With `cors`, this adds the CORS
        headers (and refuses an Origin that may not post) as the app's middleware would."""
        content_type = ""
        declared: str | None = None
        user_agent = referer = ""
        origin: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"content-length":
                declared = value.decode("latin-1")
            elif name == b"user-agent":
                user_agent = header_text(value, _MAX_USER_AGENT)
            elif name == b"referer":
                referer = page_address(value)
            elif name == b"origin" and origin is None:
                origin = value
        extra = None
        if cors is not None:
            extra = cors.extra(origin)
            if extra is None:
                assert origin is not None
                refused, refused_headers = refusal(origin.decode("latin-1"))
                start = {"type": "http.response.start", "status": 403, "headers": refused_headers}
                await send(start)
                await send({"type": "http.response.body", "body": refused})
                return 403
        settings = self.settings
        try:
            check_mime(content_type)
            body = await receive_body(
                receive, declared, settings.max_body_bytes, scope["state"]["deadlines"]
            )
            raw_events = event_list(body, settings.max_events_per_request)
        except RequestError as exc:
            close = CLOSE if exc.status in (408, 413) else None
            await send_json(send, exc.status, exc.body, close, extra)
            return exc.status
        except ClientDisconnect:
            await send_json(send, 400, None, None, extra)
            return 400

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
            refused_all = {"error": "no valid event in the request", "rejected": rejected}
            await send_json(send, 422, refused_all, None, extra)
            return 422
        appender: Appender = scope["state"]["appender"]
        batch = Batch(received_at, user_agent.encode(), referer.encode(), events)
        started = perf_counter()
        try:
            appended = await appender.append_batch(batch)
        except (Backpressure, RedisError, OSError) as exc:
            status, error, headers = store_unavailable(exc, self.settings)
            await send_json(send, status, error, headers, extra)
            return status
        INGEST_APPEND_SECONDS.observe(perf_counter() - started)
        accepted = sum(appended)
        count_ingest_events(accepted, len(appended) - accepted, len(rejected))
        answer = {
            "accepted": accepted,
            "duplicates": len(appended) - accepted,
            "rejected": rejected,
        }
        await send_json(send, 202, answer, None, extra)
        return 202


class IngestApp(Starlette):
    """The ingest's Starlette app, which serves its one hot request itself.

    A POST /v1/events goes straight to `EventsEndpoint.handle`, which does what the
    middleware stack would (the request count, the CORS headers and refusal, the 500 of
    an unexpected error) without its layers: on a one-event request the stack (error
    and exception wrappers, the metrics and CORS middleware, routing) cost as much as
    the endpoint's own work. Every other request, and every POST /v1/events when the
    rate limit is on or the app is mounted under a root path, goes through Starlette.
    """

    def __init__(self, *, events: EventsEndpoint | None, cors: SimpleCORS, **options: Any) -> None:
        super().__init__(**options)
        self.events = events
        self.cors = cors
        self._counted: dict[int, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        events = self.events
        if (
            events is None
            or scope["type"] != "http"
            or scope["path"] != EVENTS_PATH
            or scope["method"] != "POST"
            or scope.get("root_path")
        ):
            await super().__call__(scope, receive, send)
            return
        status = 500
        try:
            status = await events.handle(scope, receive, send, self.cors)
        except Exception:
            # As Starlette's ServerErrorMiddleware: a plain 500, then the error goes on
            # to the server, which logs it.
            await PlainTextResponse("Internal Server Error", status_code=500)(scope, receive, send)
            raise
        finally:
            counter = self._counted.get(status)
            if counter is None:
                counter = self._counted[status] = INGEST_REQUESTS.labels(EVENTS_PATH, str(status))
            counter.inc()


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

    events = EventsEndpoint(settings)
    routes = [
        Route(EVENTS_PATH, events, methods=["POST"]),
        openapi_route(settings),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/v1/tracker.js", tracker_js, methods=["GET"]),
        *legacy_routes(settings),
        metrics_route(settings),
        *(extra_routes or []),
    ]
    cors_options: dict[str, Any] = {
        "allow_origins": settings.cors_origin_list,
        "allow_methods": ["POST", "GET", "OPTIONS"],
        "allow_headers": ["Content-Type"],
        "expose_headers": ["Retry-After"],
        "max_age": 86400,
    }
    middleware = [
        Middleware(RequestMetricsMiddleware, paths=[route.path for route in routes]),
        Middleware(LeanCORSMiddleware, **cors_options),
    ]
    if settings.rate_limit:
        from ingest.ratelimit import RateLimitMiddleware

        # Inside CORS: a browser can read the 429 of an allowed origin.
        middleware.append(Middleware(RateLimitMiddleware, settings=settings))
    # With the rate limit (a middleware of its own) every request goes through the stack.
    return IngestApp(
        events=None if settings.rate_limit else events,
        cors=SimpleCORS(CORSMiddleware(events, **cors_options)),
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
    app = create_app(settings)
    # What the worker holds once started (modules, the models, the app) stays: frozen,
    # it is out of the collector's way. And a collection every 10,000 allocations, not
    # 700: a 100-event body parses into about 1,500 objects, so at 700 a request's own
    # live objects were walked (and promoted, to be walked again) mid-request (-6 % of
    # the instructions of a 100-event request).
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    return app
