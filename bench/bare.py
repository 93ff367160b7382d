"""The yardstick for single-event ingest: a bare Starlette endpoint.

It reads the request body and answers 202, nothing else: what any Starlette
endpoint behind the same uvicorn settings costs before it does useful work.
"""

from __future__ import annotations

import os
from pathlib import Path

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


def create_read_app() -> Starlette:
    """The yardstick for cached dashboard reads: GET answers fixed JSON bytes.

    The bytes are those of the file named by BENCH_BARE_BODY (the dashboard's own
    answer, so both sides send the same size), else a small object.
    """
    path = os.environ.get("BENCH_BARE_BODY")
    body = Path(path).read_bytes() if path else b'{"ok":true}'

    async def answer(request: Request) -> Response:
        return Response(body, media_type="application/json")

    return Starlette(routes=[Route("/{path:path}", answer, methods=["GET"])])
