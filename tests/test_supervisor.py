"""`vidpulse run`: the whole pipeline in one command, stopped cleanly by Ctrl-C."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx2
import psycopg

from tests.commands import settings_env, start_vidpulse, wait_for
from tests.factories import make_event
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
    with log_path.open("wb") as log:
        proc = start_vidpulse("run", "--port", str(port), env=settings_env(settings), log=log)
        try:
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
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    output = log_path.read_text(errors="replace")
    assert code == 0, output
    assert f"http://127.0.0.1:{port}/v1/events" in output
    assert "Traceback" not in output, output
