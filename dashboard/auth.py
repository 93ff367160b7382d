"""Who may read: bearer tokens for the API, a signed session for the pages."""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from dashboard.responses import JSONResponse
from vidpulse.settings import Settings

SESSION_KEY = "authenticated"


def token_ok(settings: Settings, token: str) -> bool:
    """True when `token` is one of the configured admin tokens (constant-time compare).

    Every configured token is compared, whatever matched, so the time taken does
    not tell which one (or how much of one) was right.
    """
    given = token.encode()
    found = False
    for candidate in settings.admin_token_list:
        found |= hmac.compare_digest(given, candidate.encode())
    return found


def logged_in(request: Request) -> bool:
    """True when the request's signed session cookie says a token was given at login."""
    return bool(request.session.get(SESSION_KEY))


def bearer_token(authorization: str) -> str | None:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class BearerAuth:
    """ASGI middleware: under `prefix`, 401 JSON unless `Authorization: Bearer <admin token>`."""

    def __init__(self, app: ASGIApp, settings: Settings, prefix: str = "/") -> None:
        self.app = app
        self.settings = settings
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        header = ""
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value.decode("latin-1")
        token = bearer_token(header)
        if token is None:
            await _unauthorized(send, "an Authorization: Bearer <token> header is required")
            return
        if not token_ok(self.settings, token):
            await _unauthorized(send, "the bearer token is not valid")
            return
        await self.app(scope, receive, send)


async def _unauthorized(send: Send, error: str) -> None:
    body = JSONResponse({"error": error}).body
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b'Bearer realm="vidpulse"'),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
