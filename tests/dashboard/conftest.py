"""The dashboard against real Redis and PostgreSQL, fed by a simulated audience.

Traffic goes through the real ingest and the real processors (in-process, burst mode).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from starlette.testclient import TestClient

from dashboard.app import create_app
from tests.factories import run_burst
from tools.audience import Session, generate_audience
from vidpulse.events import now_ms
from vidpulse.settings import Settings

TOKEN = "dashboard-test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROCESSORS = ("heatmap", "progress", "metrics")


@pytest.fixture
def dash_settings(make_settings: Callable[..., Settings]) -> Settings:
    # The per-process memo off: these tests look at what Redis and PostgreSQL answer.
    return make_settings(admin_tokens=f"{TOKEN},another-token-of-enough-length", cache_local_ms=0)


@dataclass
class Feeder:
    """Posts a simulated audience through the ingest and drains the processors."""

    settings: Settings
    ingest: TestClient

    def sessions(
        self, seed: int, *, videos: int = 10, viewers: int = 40, sessions: int = 90
    ) -> list[Session]:
        return generate_audience(
            random.Random(seed),
            videos=videos,
            viewers=viewers,
            sessions=sessions,
            now_ms=now_ms(),
        )

    def feed(self, crowd: list[Session]) -> None:
        for session in crowd:
            headers = {"User-Agent": session.user_agent}
            if session.referer:
                headers["Referer"] = session.referer
            response = self.ingest.post("/v1/events", json=session.events, headers=headers)
            assert response.status_code == 202, response.text
        self.drain()

    def drain(self) -> None:
        for name in PROCESSORS:
            run_burst(self.settings, name)


@pytest.fixture
def feeder(dash_settings: Settings) -> Iterator[Feeder]:
    from ingest.app import create_app as create_ingest

    with TestClient(create_ingest(dash_settings)) as ingest:
        yield Feeder(dash_settings, ingest)


@pytest.fixture
def fed(feeder: Feeder) -> Feeder:
    """A feeder whose audience has already been processed."""
    feeder.feed(feeder.sessions(7))
    return feeder


@pytest.fixture
def api(dash_settings: Settings) -> Iterator[TestClient]:
    """The dashboard app (lifespan running), sending a valid bearer token."""
    with TestClient(create_app(dash_settings), headers=AUTH) as client:
        yield client


def sql_rows(db: Any, query: str, *params: Any) -> list[dict[str, Any]]:
    from psycopg.rows import dict_row

    with db.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return list(cur.fetchall())
