"""POST /v1/events, answered by the app itself, answers as Starlette's middleware would;
and what a uvicorn worker sets up for its speed."""

from __future__ import annotations

import gc
from collections.abc import Callable

import orjson
import pytest
from starlette.testclient import TestClient

from ingest.app import GC_THRESHOLDS, IngestApp, app_from_env, create_app
from tests.factories import make_event
from vidpulse.settings import Settings
from vidpulse.telemetry import INGEST_REQUESTS

Answer = tuple[int, list[tuple[bytes, bytes]], bytes]
BODIES = {
    "invalid": b'{"type": "play"}',
    "bad_json": b"{not json",
    "wrong_type": b'[{"type": 5}]',
}


def _answer(app: IngestApp, origin: str | None, body: bytes) -> Answer:
    headers = {"Content-Type": "text/plain;charset=UTF-8"}
    if origin is not None:
        headers["Origin"] = origin
    with TestClient(app) as client:
        response = client.post("/v1/events", content=body, headers=headers)
    kept = [(k, v) for k, v in response.headers.raw if k.lower() != b"date"]
    return response.status_code, kept, response.content


@pytest.mark.parametrize("origins", ["*", "https://shop.example,https://b.example"])
@pytest.mark.parametrize("origin", [None, "https://shop.example", "https://evil.example"])
@pytest.mark.parametrize("kind", ["event", *BODIES])
def test_same_answer_as_through_the_middleware(
    make_settings: Callable[..., Settings], origins: str, origin: str | None, kind: str
) -> None:
    settings = make_settings(cors_origins=origins)
    answers = []
    for direct in (True, False):
        app = create_app(settings)
        assert isinstance(app, IngestApp)
        assert app.events is not None
        if not direct:
            app.events = None  # every request through Starlette's middleware and routing
        # A fresh event each time: the same one twice would be a duplicate milestone.
        body = BODIES[kind] if kind in BODIES else orjson.dumps(make_event("play"))
        answers.append(_answer(app, origin, body))
    assert answers[0] == answers[1]
    status = answers[0][0]
    refused = origin == "https://evil.example" and origins != "*"
    expected = 403 if refused else {"event": 202, "invalid": 422, "bad_json": 400}.get(kind, 422)
    assert status == expected


def test_direct_answers_are_counted(make_settings: Callable[..., Settings]) -> None:
    counter = INGEST_REQUESTS.labels("/v1/events", "400")
    before = counter._value.get()
    with TestClient(create_app(make_settings())) as client:
        response = client.post("/v1/events", content=b"{not json")
    assert response.status_code == 400
    assert counter._value.get() == before + 1


def test_a_worker_freezes_its_start_up_objects_and_collects_less_often() -> None:
    """`app_from_env` (each uvicorn worker's factory) tunes the worker's collector."""
    before = gc.get_threshold()
    try:
        app_from_env()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
