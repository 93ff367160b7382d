"""Real uvicorn servers on 127.0.0.1, started as child processes with identical flags."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

# The one set of server flags every HTTP comparison uses: only the app differs.
UVICORN_FLAGS = (
    "--factory",
    "--host",
    "127.0.0.1",
    "--workers",
    "1",
    "--loop",
    "uvloop",
    "--http",
    "httptools",
    "--log-level",
    "warning",
    "--no-access-log",
    # As `vidpulse ingest` runs (ingest/server.py): X-Forwarded-For is the app's business.
    "--no-proxy-headers",
    "--backlog",
    "4096",
)
INGEST_APP = "ingest.app:app_from_env"
BARE_APP = "bench.bare:create_app"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def uvicorn_server(
    app: str, env: dict[str, str] | None = None, *, workers: int = 1
) -> Iterator[tuple[str, int]]:
    """Run `app` under uvicorn; yields (base URL, server pid); stops it on exit."""
    port = free_port()
    flags = list(UVICORN_FLAGS)
    flags[flags.index("--workers") + 1] = str(workers)
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", app, *flags, "--port", str(port)],
        env=env or dict(os.environ),
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_listening(proc, port)
        yield base, proc.pid
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the process (and its worker children), SIGKILL after `grace` seconds."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def _wait_listening(proc: subprocess.Popen[bytes], port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before listening")
        try:
            # Any answer means the app is up (the bare app has no /healthz: 404 is fine).
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1.0):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not come up within {timeout:.0f}s")
