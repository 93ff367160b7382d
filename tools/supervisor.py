"""`vidpulse run`: the ingest and every processor as child processes, for a laptop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import structlog

from processors.registry import PROCESSORS

log = structlog.get_logger("vidpulse.run")

_STOP_GRACE_S = 10.0
_FIRST_RESTART_DELAY_S = 1.0
_MAX_RESTART_DELAY_S = 30.0
# A child that exits sooner than this after its start "failed at start"; after this
# many such failures in a row the pipeline gives up rather than restart it forever.
_QUICK_EXIT_S = 10.0
_GIVE_UP_AFTER = 5
_METRICS_PORT_TRIES = 100


class PipelineFailed(Exception):
    """The pipeline cannot run (a port taken, a child failing at start); one line says why."""


@dataclass
class Child:
    """One supervised child process and its record of quick failures."""

    name: str
    command: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    quick_failures: int = 0
    restart_at: float | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.command)
        self.started_at = time.monotonic()
        self.restart_at = None


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "vidpulse", *args]


def check_port_free(host: str, port: int) -> None:
    """Raise PipelineFailed when something already listens on host:port."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        # As the servers bind: SO_REUSEADDR ignores old TIME_WAIT connections, not listeners.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise PipelineFailed(
                f"port {port} on {host} is not free ({exc.strerror}): stop what listens "
                f"there or choose another with --port"
            ) from None


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


def consumer_name(processor: str) -> str:
    """The consumer name of a processor child: unique per host and `vidpulse run`.

    Kept across the child's restarts within this run, so a restarted child finishes
    its own pending entries first.
    """
    return f"{socket.gethostname()}-{os.getpid()}-{processor}"


def run_pipeline(
    *,
    host: str,
    port: int,
    metrics_port: int = 0,
    metrics_host: str = "127.0.0.1",
    dashboard: tuple[str, int, str | None] | None = None,
) -> int:
    """Run until SIGINT/SIGTERM; restart a child that dies; stop all children cleanly.

    With `metrics_port`, each processor serves its metrics on the next free port from
    it. `dashboard`: (host, first port, the token made for this run or None) to run the
    dashboard too. Raises PipelineFailed when a child keeps failing at start.
    """
    children = {"ingest": _command("ingest", "--host", host, "--port", str(port))}
    if dashboard is not None:
        # Another run may hold the port: the dashboard takes the next free one and says so.
        d_host, d_port, _ = dashboard
        children["dashboard"] = _command(
            "dashboard", "--host", d_host, "--port", str(d_port), "--port-tries", "100"
        )
    ports = free_ports(metrics_port, len(PROCESSORS), metrics_host)
    metrics_ports = dict(zip(PROCESSORS, ports, strict=False))
    for processor in PROCESSORS:
        children[processor] = _command("process", processor, "--consumer", consumer_name(processor))
        # Another run starting at the same moment may take a port first: the next will do.
        children[processor] += ["--metrics-port", str(metrics_ports.get(processor, 0))]
        children[processor] += ["--metrics-port-tries", str(_METRICS_PORT_TRIES)]
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info(
        "pipeline_started", ingest=f"http://{host}:{port}/v1/events", processors=list(PROCESSORS)
    )
    print(
        f"vidpulse is running: POST events to http://{host}:{port}/v1/events, "
        f"tracker at http://{host}:{port}/v1/tracker.js. Ctrl-C stops everything.",
        flush=True,
    )
    # Each processor prints its own "metrics: NAME URL" line once it serves them.
    print(f"metrics: ingest http://{host}:{port}/metrics", flush=True)
    if dashboard is not None:
        token = dashboard[2] or "one of VIDPULSE_ADMIN_TOKENS"
        print(f"dashboard: sign in (or send Authorization: Bearer) with {token}", flush=True)
    return supervise(children, stop)


def supervise(
    commands: dict[str, list[str]],
    stop: threading.Event,
    *,
    first_delay_s: float = _FIRST_RESTART_DELAY_S,
    give_up_after: int = _GIVE_UP_AFTER,
) -> int:
    """Run the commands until `stop`; restart one that exits, with a growing delay.

    A child exiting `give_up_after` times in a row within seconds of its start stops
    everything: PipelineFailed, naming it. Returns 1 when a child had to be killed.
    """
    children = [Child(name, command) for name, command in commands.items()]
    for child in children:
        child.start()
    failed: PipelineFailed | None = None
    while failed is None and not stop.wait(0.2):
        now = time.monotonic()
        for child in children:
            if stop.is_set():  # Ctrl-C reaches the children too: their exits are no failures
                break
            failed = failed or _tend(child, now, first_delay_s, give_up_after)
    killed = _stop_all(children)
    log.info("pipeline_stopped")
    if failed is not None:
        raise failed
    return 1 if killed else 0


def _tend(
    child: Child, now: float, first_delay_s: float, give_up_after: int
) -> PipelineFailed | None:
    """Restart `child` when due; a PipelineFailed when it keeps failing at start."""
    if child.restart_at is not None:
        if now >= child.restart_at:
            child.start()
        return None
    assert child.proc is not None
    code = child.proc.poll()
    if code is None:
        return None
    quick = now - child.started_at < _QUICK_EXIT_S
    child.quick_failures = child.quick_failures + 1 if quick else 1
    if child.quick_failures >= give_up_after:
        return PipelineFailed(
            f"{child.name} exited {child.quick_failures} times in a row within "
            f"{_QUICK_EXIT_S:g}s of its start (last exit code {code}); stopped everything"
        )
    delay = min(_MAX_RESTART_DELAY_S, first_delay_s * 2 ** (child.quick_failures - 1))
    log.warning("child_exited_restarting", child=child.name, exit_code=code, restart_in_s=delay)
    child.restart_at = now + delay
    return None


def _stop_all(children: list[Child]) -> bool:
    """SIGTERM every running child, wait for the grace, kill the rest; True if any killed."""
    running = [c.proc for c in children if c.proc is not None and c.proc.poll() is None]
    for proc in running:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + _STOP_GRACE_S
    killed = False
    for child in children:
        if child.proc is None or child.proc not in running:
            continue
        try:
            child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("child_did_not_stop_killing", child=child.name)
            child.proc.kill()
            child.proc.wait()
            killed = True
    return killed
