"""CORS for the ingest: Starlette's middleware, without its cost where no Origin is sent.

Beacons from the tracker's own origin, server-side integrations and load balancers'
probes carry no Origin header; for those Starlette's CORSMiddleware only adds
`Vary: Origin` to the response, yet builds header objects and wraps `send` on every
request. This does the same for them more cheaply and hands every request that does
carry an Origin (and every non-HTTP scope) to Starlette's middleware unchanged.
"""

from __future__ import annotations

from typing import Any

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class LeanCORSMiddleware:
    """Behaves as `CORSMiddleware(app, **options)`; faster for requests without Origin."""

    def __init__(self, app: ASGIApp, /, **options: Any) -> None:
        self.app = app
        self.cors = CORSMiddleware(app, **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or any(name == b"origin" for name, _ in scope["headers"]):
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
