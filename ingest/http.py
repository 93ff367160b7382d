"""The HTTP helpers every route of the ingest shares.

JSON responses and errors, reading a body within its limits, the accepted content
types, what a request's headers leave in its stream entries, and the 202/503 answer
to an append. `ingest.app` (POST /v1/events and friends), `ingest.legacy` (the
compatibility routes) and `ingest.openapi` build on this module; it imports none
of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from time import perf_counter
from typing import Any

import orjson
import structlog
from redis.exceptions import RedisError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Send

from ingest.appender import Appender, Backpressure, Item
from ingest.deadlines import BodyDeadlines
from vidpulse.events import EdgeRules
from vidpulse.settings import Settings
from vidpulse.telemetry import INGEST_APPEND_SECONDS, count_ingest_events

log = structlog.get_logger("vidpulse.ingest")

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


async def send_json(
    send: Send,
    status: int,
    content: Any,
    headers: dict[str, str] | None = None,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Send a whole JSON response (an empty body when `content` is None); `extra`:
    raw headers to end the header list with."""
    body = b"" if content is None else orjson.dumps(content)
    raw_headers = [(b"content-length", str(len(body)).encode())]
    if content is not None:
        raw_headers.append((b"content-type", b"application/json"))
    if headers:
        for name, value in headers.items():
            raw_headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    if extra:
        raw_headers += extra
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
        status, body, headers = store_unavailable(exc, request.state.settings)
        return JSONResponse(body, status_code=status, headers=headers)
    INGEST_APPEND_SECONDS.observe(perf_counter() - started)
    accepted = sum(appended)
    count_ingest_events(accepted, len(appended) - accepted, len(rejected))
    return JSONResponse(
        {"accepted": accepted, "duplicates": len(appended) - accepted, "rejected": rejected},
        status_code=202,
    )


def store_unavailable(
    exc: Exception, settings: Settings
) -> tuple[int, dict[str, str], dict[str, str]]:
    """The 503 for events that could not be put in the stream: (status, body, headers)."""
    retry = {"Retry-After": str(settings.retry_after_seconds)}
    if isinstance(exc, Backpressure):
        return 503, {"error": "the pipeline is behind; keep the events and retry later"}, retry
    log.warning("redis_unavailable", error=str(exc))
    error = "the event store is unavailable; keep the events and retry later"
    return 503, {"error": error}, retry
