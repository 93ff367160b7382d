"""How the ingest is served: uvicorn's connection limits, from the settings.

`vidpulse ingest` and the test suite's live server both take their uvicorn options
from `uvicorn_options`, so what the tests hold a server to is what operators run.
"""

from __future__ import annotations

from typing import Any

from vidpulse.settings import Settings


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.Config / uvicorn.run keyword arguments bounding connections and requests.

    Past `limit_concurrency` open connections (or running requests) new ones get 503;
    an idle keep-alive connection closes after `timeout_keep_alive`; a request whose
    headers are not complete within `h11_max_incomplete_event_size` bytes is refused
    (h11; httptools, the default parser when installed, has its own fixed bounds). The
    body's time limit is the app's (VIDPULSE_BODY_TIMEOUT_SECONDS, answered 408).
    X-Forwarded-For is left to the app (`proxy_headers` off): only the rate limit reads
    it, through VIDPULSE_TRUSTED_PROXY_HOPS.
    """
    return {
        "limit_concurrency": settings.ingest_limit_concurrency,
        "timeout_keep_alive": settings.ingest_keep_alive_seconds,
        "h11_max_incomplete_event_size": settings.ingest_max_header_bytes,
        "backlog": settings.ingest_backlog,
        "proxy_headers": False,
        "access_log": False,  # an access log would keep client addresses
        "server_header": False,
    }
