"""Real HTTP servers for the browser tests: a page origin and the ingest on another one."""

from __future__ import annotations

import re
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from dashboard.app import create_app as create_dashboard
from ingest.app import create_app
from ingest.server import uvicorn_options
from vidpulse.settings import Settings

HOST = "127.0.0.1"
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class PageServer:
    """A threaded http.server on its own port (its own origin, so its own localStorage).

    Serves registered pages and files; files honour Range requests, which the browser
    uses to seek in a video.
    """

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        files = self.files

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path not in files:
                    self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain", {})
                    return
                body, content_type = files[path]
                headers = {"Accept-Ranges": "bytes", "Cache-Control": "no-store"}
                match = _RANGE.match(self.headers.get("Range", ""))
                if match and (match[1] or match[2]):
                    size = len(body)
                    if match[1]:
                        start = int(match[1])
                        end = min(int(match[2]), size - 1) if match[2] else size - 1
                    else:
                        start, end = max(0, size - int(match[2])), size - 1
                    if start > end:
                        headers["Content-Range"] = f"bytes */{size}"
                        self._send(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, b"", "", headers)
                        return
                    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
                    self._send(
                        HTTPStatus.PARTIAL_CONTENT, body[start : end + 1], content_type, headers
                    )
                    return
                self._send(HTTPStatus.OK, body, content_type, headers)

            def _send(
                self, status: HTTPStatus, body: bytes, content_type: str, headers: dict[str, str]
            ) -> None:
                self.send_response(status)
                if content_type:
                    self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: the tests assert on what the ingest received

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.origin = f"http://{HOST}:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add(self, path: str, body: bytes | str, content_type: str) -> str:
        """Serve `body` at `path`; returns its URL."""
        self.files[path] = (body.encode() if isinstance(body, str) else body, content_type)
        return self.origin + path

    def add_file(self, path: str, file: Path, content_type: str) -> str:
        return self.add(path, file.read_bytes(), content_type)

    def __enter__(self) -> PageServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class LiveIngest:
    """The real ingest app (`create_app`) served by uvicorn in a thread, on a fixed port.

    `stop()` takes it off the network; `start()` serves it again on the same port.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            self.port = int(probe.getsockname()[1])
        self.origin = f"http://{HOST}:{self.port}"
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    def make_app(self) -> ASGIApp:
        """The app this server runs (a subclass serves another one)."""
        return create_app(self.settings)

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, self.port))
        config = uvicorn.Config(
            self.make_app(),
            loop="asyncio",
            ws="none",
            lifespan="on",
            log_level="warning",
            timeout_graceful_shutdown=2,
            **uvicorn_options(self.settings),
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                sock.close()
                raise RuntimeError(f"{type(self).__name__} did not start on port {self.port}")
            time.sleep(0.02)
        self.server, self.thread = server, thread

    def stop(self) -> None:
        if self.server is None or self.thread is None:
            return
        self.server.should_exit = True
        self.thread.join(15)
        assert not self.thread.is_alive(), "the ingest did not stop"
        self.server = self.thread = None
        # Nothing listens any more: connections are refused, as when an ingest is down.
        with socket.socket() as probe:
            assert probe.connect_ex((HOST, self.port)) != 0


class LiveDashboard(LiveIngest):
    """The dashboard app (`dashboard.app.create_app`) served by uvicorn on its own port."""

    def make_app(self) -> ASGIApp:
        return create_dashboard(self.settings)
