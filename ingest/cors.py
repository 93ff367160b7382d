"""CORS for the ingest: Starlette's middleware, without its cost where no Origin is sent.

Beacons from the tracker's own origin, server-side integrations and load balancers'
probes carry no Origin header; for those Starlette's CORSMiddleware only adds
`Vary: Origin` to the response, yet builds header objects and wraps `send` on every
request. This does the same for them more cheaply and hands every request that does
carry an Origin (and every non-HTTP scope) to Starlette's middleware unchanged.

CORS alone only keeps a page of another origin from reading the answer; its beacon
would still be counted. So a POST whose Origin is not allowed is refused here, with a
403, before its body is read (sendBeacon's text/plain posts carry an Origin too). A
request without an Origin (a server-side integration) is not a browser's cross-origin
request and is let through.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class SimpleCORS:
    """The headers `CORSMiddleware` adds to a simple (non-preflight) response, without it.

    For a route that builds its own response headers: `extra(origin)` is what Starlette's
    middleware would append to them (the response carrying no Vary of its own), or None
    for an Origin that may not post here (the route answers `refusal(origin)`).
    """

    def __init__(self, cors: CORSMiddleware) -> None:
        self.cors = cors
        self._simple = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in cors.simple_headers.items()
        ]
        self._any = [*self._simple, (b"vary", b"Origin")]

    def extra(self, origin: bytes | None) -> list[tuple[bytes, bytes]] | None:
        if origin is None:
            return VARY_ORIGIN
        cors = self.cors
        if cors.allow_all_origins and not cors.allow_credentials:
            return self._any
        if not cors.is_allowed_origin(origin.decode("latin-1")):
            return None
        # The origin itself, replacing a "*" in place as Starlette's MutableHeaders does.
        allow = (b"access-control-allow-origin", origin)
        explicit = [allow if n == allow[0] else (n, v) for n, v in self._simple]
        if allow not in explicit:
            explicit.append(allow)
        return [*explicit, (b"vary", b"Origin")]


VARY_ORIGIN = [(b"vary", b"Origin")]


def refusal(origin: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The 403 body and headers for a POST from an origin that may not post here."""
    error = f"origin {origin[:200]!r} may not post here (VIDPULSE_CORS_ORIGINS)"
    body = orjson.dumps({"error": error})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"vary", b"Origin"),
        (b"connection", b"close"),
    ]
    return body, headers


class LeanCORSMiddleware:
    """Behaves as `CORSMiddleware(app, **options)`; faster for requests without Origin."""

    def __init__(self, app: ASGIApp, /, **options: Any) -> None:
        self.app = app
        self.cors = CORSMiddleware(app, **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.cors(scope, receive, send)
            return
        origin = next((value for name, value in scope["headers"] if name == b"origin"), None)
        if origin is not None:
            text = origin.decode("latin-1")
            if scope["method"] == "POST" and not self.cors.is_allowed_origin(text):
                await self._refuse(text, send)
                return
            await self.cors(scope, receive, send)
            return

        async def send_varying_on_origin(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                vary = [v.decode("latin-1") for k, v in headers if k.lower() == b"vary"]
                if vary:
                    headers = [(k, v) for k, v in headers if k.lower() != b"vary"]
                value = ", ".join([*vary, "Origin"]).encode("latin-1")
                message["headers"] = [*headers, (b"vary", value)]
            await send(message)

        await self.app(scope, receive, send_varying_on_origin)

    async def _refuse(self, origin: str, send: Send) -> None:
        body, headers = refusal(origin)
        await send({"type": "http.response.start", "status": 403, "headers": headers})
        await send({"type": "http.response.body", "body": body})
