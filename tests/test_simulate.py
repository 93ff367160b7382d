"""`vidpulse simulate`: realistic tracker traffic against a live ingest."""

from __future__ import annotations

import json

import redis

from tests.browser.servers import LiveIngest
from tests.commands import run_vidpulse, settings_env
from vidpulse.devservices import free_port
from vidpulse.settings import Settings


def test_simulate_fills_the_stream_with_valid_events(
    live_ingest: LiveIngest, settings: Settings, redis_client: redis.Redis
) -> None:
    """Every simulated event is accepted (none rejected) and what was accepted is in the stream."""
    done = run_vidpulse(
        "simulate",
        "--rate",
        "300",
        "--duration",
        "2",
        "--seed",
        "7",
        "--json",
        "--url",
        f"{live_ingest.origin}/v1/events",
        env=settings_env(settings),
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["accepted"] > 100
    assert report["rejected"] == 0
    assert report["errors"] == 0
    assert report["undelivered"] == 0
    assert redis_client.xlen(settings.stream) == report["accepted"]


def test_simulate_against_nothing_fails_with_one_line(settings: Settings) -> None:
    """With no ingest at the URL, simulate exits 1 with a one-line reason and no traceback."""
    url = f"http://127.0.0.1:{free_port()}/v1/events"
    done = run_vidpulse(
        "simulate", "--rate", "50", "--duration", "1", "--url", url, env=settings_env(settings)
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0
    assert url in done.stderr
