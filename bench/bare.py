"""The yardstick for single-event ingest: a bare Starlette endpoint.

It reads the request body and answers 202, nothing else: what any Starlette
endpoint behind the same uvicorn settings costs before it does useful work.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_BODY = b'{"accepted":1,"duplicates":0,"rejected":[]}'


async def accept(request: Request) -> Response:
    await request.body()
    return Response(_BODY, status_code=202, media_type="application/json")


def create_app() -> Starlette:
    return Starlette(routes=[Route("/v1/events", accept, methods=["POST"])])
