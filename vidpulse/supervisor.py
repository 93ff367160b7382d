"""`vidpulse run`: the ingest and every processor as child processes, for a laptop."""

from __future__ import annotations

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


def free_ports(first: int, count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` ports from `first` upwards that nothing listens on now (none if first is 0)."""
    ports: list[int] = []
    candidate = first
    while first and len(ports) < count and candidate <= 65535:
        with socket.socket() as probe:
            try:
                probe.bind((host, candidate))
                ports.append(candidate)
            except OSError:
                pass
        candidate += 1
    return ports


def run_pipeline(
    *, host: str, port: int, metrics_port: int = 0, metrics_host: str = "127.0.0.1"
) -> int:
    """Run until SIGINT/SIGTERM; restart a child that dies; stop all children cleanly.

    With `metrics_port`, each processor serves its metrics on the next free port from it.
    """
    name = socket.gethostname()
    children = {"ingest": _command("ingest", "--host", host, "--port", str(port))}
    ports = free_ports(metrics_port, len(PROCESSORS), metrics_host)
    metrics_ports = dict(zip(PROCESSORS, ports, strict=False))
    for processor in PROCESSORS:
        # Stable consumer names: a restarted child finishes its own pending entries first.
        children[processor] = _command("process", processor, "--consumer", f"{name}-run")
        children[processor] += ["--metrics-port", str(metrics_ports.get(processor, 0))]
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    running = {key: subprocess.Popen(cmd) for key, cmd in children.items()}
    log.info(
        "pipeline_started", ingest=f"http://{host}:{port}/v1/events", processors=list(PROCESSORS)
    )
    print(
        f"vidpulse is running: POST events to http://{host}:{port}/v1/events, "
        f"tracker at http://{host}:{port}/v1/tracker.js. Ctrl-C stops everything.",
        flush=True,
    )
    print(f"metrics: ingest http://{host}:{port}/metrics", flush=True)
    for processor, mport in metrics_ports.items():
        print(f"metrics: {processor} http://{metrics_host}:{mport}/metrics", flush=True)
    while not stop.wait(0.5):
        for key, proc in list(running.items()):
            code = proc.poll()
            if code is not None and not stop.is_set():
                log.warning("child_exited_restarting", child=key, exit_code=code)
                time.sleep(_RESTART_DELAY_S)
                running[key] = subprocess.Popen(children[key])
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
