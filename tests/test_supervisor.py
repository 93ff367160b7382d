"""`vidpulse run`: the whole pipeline in one command, stopped cleanly by Ctrl-C."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx2
import psycopg
import pytest
import redis

from tests.commands import (
    interrupt,
    run_vidpulse,
    running_vidpulse,
    settings_env,
    start_vidpulse,
    wait_for,
)
from tests.factories import make_event
from tools.supervisor import PipelineFailed, supervise
from vidpulse.devservices import free_port
from vidpulse.settings import Settings


def _healthy(url: str) -> bool:
    try:
        return httpx2.get(url, timeout=1).status_code == 200
    except httpx2.HTTPError:
        return False


def test_run_serves_processes_and_stops_on_sigint(
    settings: Settings, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """`vidpulse run` migrates, takes a beacon into video_events, and exits 0 on SIGINT."""
    port = free_port()
    log_path = tmp_path / "run.log"
    env = settings_env(settings)
    with (
        log_path.open("wb") as log,
        running_vidpulse("run", "--port", str(port), env=env, log=log) as proc,
    ):
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _healthy(f"{base}/readyz"), 60, "the ingest to answer")
        event = make_event("session_start")
        response = httpx2.post(f"{base}/v1/events", json=event, timeout=10)
        assert response.status_code == 202, response.text
        wait_for(
            lambda: db.execute(
                "SELECT 1 FROM video_events WHERE event_id = %s", (event["event_id"],)
            ).fetchone(),
            60,
            "the event in video_events",
        )
        code = interrupt(proc)
    output = log_path.read_text(errors="replace")
    assert code == 0, output
    assert f"http://127.0.0.1:{port}/v1/events" in output
    assert "Traceback" not in output, output


def test_run_on_a_busy_port_exits_1_at_once_naming_the_port(settings: Settings) -> None:
    """A second `vidpulse run` on a taken port: exit 1, one line naming it, nothing started."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_vidpulse("run", "--port", str(port), env=settings_env(settings), timeout=30)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert f"port {port}" in line
    assert "vidpulse is running" not in result.stdout


def test_child_failing_at_start_is_given_up_after_a_few_tries_stopping_the_rest(
    tmp_path: Path,
) -> None:
    """A child exiting at once is restarted with backoff, then given up; the others stop."""
    starts = tmp_path / "starts"
    crash = f"open({str(starts)!r}, 'a').write('x'); raise SystemExit(3)"
    commands = {
        "crashing": [sys.executable, "-c", crash],
        "healthy": [sys.executable, "-c", "import time; time.sleep(600)"],
    }
    with pytest.raises(PipelineFailed, match=r"crashing exited 4 times .*exit code 3"):
        supervise(commands, threading.Event(), first_delay_s=0.05, give_up_after=4)
    assert starts.read_text() == "xxxx"


def _interrupt(proc: subprocess.Popen[bytes]) -> None:
    """Ctrl-C a `vidpulse run` and wait for it (killed if it does not stop)."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_two_runs_on_one_host_use_distinct_consumer_names(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Two `vidpulse run` on one host: each processor group has two distinct consumers."""

    def consumers() -> set[str]:
        try:
            infos = redis_client.xinfo_consumers(settings.stream, "raw")
        except redis.ResponseError:
            return set()
        return {info["name"].decode() for info in infos}

    with contextlib.ExitStack() as stack:
        pids = []
        for i in range(2):
            log = stack.enter_context((tmp_path / f"run{i}.log").open("wb"))
            args = ("run", "--port", str(free_port()))
            proc = start_vidpulse(*args, env=settings_env(settings), log=log)
            stack.callback(_interrupt, proc)
            pids.append(str(proc.pid))
        names = wait_for(lambda: len(consumers()) == 2 and consumers(), 90, "two consumers")
    assert all(n.startswith(socket.gethostname()) for n in names)
    assert {n.split("-")[-2] for n in names} == set(pids)
