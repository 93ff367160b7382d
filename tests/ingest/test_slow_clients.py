"""Slow clients against a live uvicorn ingest: stalled bodies are cut off, memory stays flat."""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx2

from tests.browser.servers import HOST, LiveIngest
from tests.factories import make_event
from vidpulse.settings import Settings

CONNECTIONS = 300
HEAD = (
    b"POST /v1/events HTTP/1.1\r\nHost: ingest\r\nContent-Type: application/json\r\n"
    b"Content-Length: 4000\r\n\r\n"
)


def rss_bytes() -> int:
    """This process's resident memory (the live server runs in one of its threads)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def read_until_closed(socks: list[socket.socket], deadline: float) -> dict[socket.socket, bytes]:
    """What each socket received until the server closed it (or the deadline passed)."""
    received = dict.fromkeys(socks, b"")
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        open_count = len(socks)
        while open_count and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                if data:
                    received[sock] += data
                else:
                    selector.unregister(sock)
                    open_count -= 1
    return received


def test_stalled_bodies_are_answered_408_and_closed_without_memory_growth(
    make_settings: Callable[..., Settings],
) -> None:
    """300 connections sending headers and a few body bytes, then stalling: each gets 408 and
    is closed by the server within the body timeout; the server's memory does not balloon."""
    settings = make_settings(body_timeout_seconds=1.0)
    server = LiveIngest(settings)
    server.start()
    socks: list[socket.socket] = []
    try:
        before = rss_bytes()
        for _ in range(CONNECTIONS):
            sock = socket.create_connection((HOST, server.port))
            sock.sendall(HEAD + b'{"ty')
            socks.append(sock)
        received = read_until_closed(socks, time.monotonic() + 30)
        closed = [s for s, data in received.items() if data.startswith(b"HTTP/1.1 408 ")]
        assert len(closed) == CONNECTIONS, {d[:40] for d in received.values()}
        assert all(b"did not arrive within 1 s" in received[s] for s in closed)
        grown = rss_bytes() - before
        assert grown < 64 * 1024 * 1024, f"RSS grew by {grown / 2**20:.0f} MiB"
        # And the server still serves.
        url = server.origin + "/v1/events"
        assert httpx2.post(url, json=make_event()).status_code == 202
    finally:
        for sock in socks:
            sock.close()
        server.stop()


def test_connections_past_the_concurrency_limit_get_503_at_once(
    make_settings: Callable[..., Settings],
) -> None:
    """With VIDPULSE_INGEST_LIMIT_CONCURRENCY=20, stalled requests past 20 are answered 503."""
    settings = make_settings(body_timeout_seconds=2.0, ingest_limit_concurrency=20)
    server = LiveIngest(settings)
    server.start()
    socks: list[socket.socket] = []
    try:
        for _ in range(40):
            sock = socket.create_connection((HOST, server.port))
            sock.sendall(HEAD + b'{"ty')
            socks.append(sock)
        received = read_until_closed(socks, time.monotonic() + 30)
        statuses = sorted(data[9:12] for data in received.values())
        assert statuses.count(b"503") >= 20, statuses
        assert set(statuses) <= {b"408", b"503"}, statuses
    finally:
        for sock in socks:
            sock.close()
        server.stop()
