"""`vidpulse run`: the ingest and every processor as child processes, for a laptop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import structlog

from processors.registry import PROCESSORS

log = structlog.get_logger("vidpulse.run")

_RESTART_DELAY_S = 2.0
_STOP_GRACE_S = 10.0


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "vidpulse", *args]


def run_pipeline(
    *, host: str, port: int, dashboard: tuple[str, int, str | None] | None = None
) -> int:
    """Run until SIGINT/SIGTERM; restart a child that dies; stop all children cleanly.

    `dashboard`: (host, port, token) to run the dashboard too; a token made for this
    run, or None when VIDPULSE_ADMIN_TOKENS holds them.
    """
    name = socket.gethostname()
    children = {"ingest": _command("ingest", "--host", host, "--port", str(port))}
    env = dict(os.environ)
    if dashboard is not None:
        d_host, d_port, token = dashboard
        children["dashboard"] = _command("dashboard", "--host", d_host, "--port", str(d_port))
        if token is not None:
            env["VIDPULSE_ADMIN_TOKENS"] = token
    for processor in PROCESSORS:
        # Stable consumer names: a restarted child finishes its own pending entries first.
        children[processor] = _command("process", processor, "--consumer", f"{name}-run")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    running = {key: subprocess.Popen(cmd, env=env) for key, cmd in children.items()}
    log.info(
        "pipeline_started", ingest=f"http://{host}:{port}/v1/events", processors=list(PROCESSORS)
    )
    print(
        f"vidpulse is running: POST events to http://{host}:{port}/v1/events, "
        f"tracker at http://{host}:{port}/v1/tracker.js. Ctrl-C stops everything.",
        flush=True,
    )
    if dashboard is not None:
        print(
            f"dashboard at http://{dashboard[0]}:{dashboard[1]}/ "
            f"(API: Authorization: Bearer <token>); admin token: "
            f"{dashboard[2] or 'one of VIDPULSE_ADMIN_TOKENS'}",
            flush=True,
        )
    while not stop.wait(0.5):
        for key, proc in list(running.items()):
            code = proc.poll()
            if code is not None and not stop.is_set():
                log.warning("child_exited_restarting", child=key, exit_code=code)
                time.sleep(_RESTART_DELAY_S)
                running[key] = subprocess.Popen(children[key], env=env)
    for proc in running.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + _STOP_GRACE_S
    failed = False
    for key, proc in running.items():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("child_did_not_stop_killing", child=key)
            proc.kill()
            failed = True
    log.info("pipeline_stopped")
    return 1 if failed else 0
