"""The dashboard app: `create_app(settings)` serves the JSON API and the HTML pages.

The lifespan owns one async Redis client (the cache, the pipeline status) and one
psycopg async connection pool; routes reach them through `request.state`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dashboard.api import routes as api_routes
from dashboard.auth import BearerAuth
from dashboard.cache import AnswerMemo, Cache
from dashboard.pages import routes as page_routes
from dashboard.responses import ApiError, JSONResponse
from vidpulse.database import application_name
from vidpulse.redisclient import async_client
from vidpulse.settings import Settings
from vidpulse.telemetry import metrics_route

log = structlog.get_logger("vidpulse.dashboard")

STATIC_DIR = Path(__file__).with_name("static")

SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
]


API_PREFIX = "/api/v1"


class PageSession(SessionMiddleware):
    """The signed session cookie, for the pages only: the API authenticates by token."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class SecurityHeaders:
    """ASGI middleware: the security headers on every response, errors included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse({"error": exc.error}, status_code=exc.status)


async def http_error(request: Request, exc: Exception) -> Response:
    """Routing errors (404, 405): JSON under /api, plain text elsewhere."""
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)
    return PlainTextResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)


async def database_down(request: Request, exc: Exception) -> Response:
    """PostgreSQL unreachable or the pool exhausted: 503, never a stack trace."""
    log.warning("database_unavailable", error=str(exc).splitlines()[0] if str(exc) else "")
    return JSONResponse(
        {"error": "the database is unavailable; retry later"},
        status_code=503,
        headers={"Retry-After": "5"},
    )


async def redis_down(request: Request, exc: Exception) -> Response:
    log.warning("redis_unavailable", error=str(exc))
    return JSONResponse(
        {"error": "Redis is unavailable; retry later"},
        status_code=503,
        headers={"Retry-After": "5"},
    )


async def internal_error(request: Request, exc: Exception) -> Response:
    """Anything unforeseen: logged with its traceback, answered as one line of JSON."""
    log.error("unhandled_error", path=request.url.path, exc_info=exc)
    return JSONResponse({"error": "internal error; it has been logged"}, status_code=500)


def _pool(url: str) -> AsyncConnectionPool[Any]:
    return AsyncConnectionPool(
        url,
        min_size=1,
        max_size=8,
        timeout=5,
        open=False,
        kwargs={
            "autocommit": True,
            "connect_timeout": 5,
            **application_name(url, "vidpulse-dashboard"),
        },
    )


def create_app(settings: Settings) -> Starlette:
    """Build the dashboard ASGI app (API under /api/v1, pages, /static)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        client = async_client(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
        # Reads go to VIDPULSE_READ_DATABASE_URL (a replica) when set; the catalogue's
        # writes (PUT /api/v1/videos/...) always to DATABASE_URL.
        pool = _pool(settings.read_url)
        write_pool = (
            pool if settings.read_url == settings.database_url else _pool(settings.database_url)
        )
        # Not waiting: the app starts (and answers 503) while PostgreSQL is away.
        for p in {id(pool): pool, id(write_pool): write_pool}.values():
            await p.open(wait=False)
        app.state.pool = pool
        app.state.redis = client
        try:
            yield {
                "settings": settings,
                "redis": client,
                "pool": pool,
                "write_pool": write_pool,
                "cache": Cache(client, settings),
            }
        finally:
            for p in {id(pool): pool, id(write_pool): write_pool}.values():
                await p.close()
            await client.aclose()

    routes = [
        *(Route(API_PREFIX + r.path, r.endpoint, methods=r.methods) for r in api_routes),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        metrics_route(settings),  # Prometheus scrapes without a token, like the ingest's
        *page_routes,
    ]
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(BearerAuth, settings=settings, prefix="/api/"),
        Middleware(AnswerMemo, settings=settings, prefix=API_PREFIX + "/"),
        Middleware(
            PageSession,
            secret_key=settings.session_secret,
            session_cookie="vidpulse_session",
            https_only=False,
            same_site="strict",
            max_age=12 * 3600,
        ),
    ]
    return Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={
            ApiError: api_error,
            HTTPException: http_error,
            psycopg.OperationalError: database_down,
            PoolTimeout: database_down,
            RedisError: redis_down,
            Exception: internal_error,
        },
    )


def app_from_env() -> Starlette:
    """Factory for uvicorn: reads the environment once."""
    from vidpulse import logs

    settings = Settings.from_env()
    logs.configure(settings.log_format, settings.log_level)
    return create_app(settings)
