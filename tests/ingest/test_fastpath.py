"""The ingest's fast path (ingest/fastpath.py) agrees with the wire contract's model."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest import fastpath
from tests.factories import make_event
from vidpulse.audience import flatten, generate_sessions
from vidpulse.events import EVENT_TYPES, MAX_PAST_MS, InvalidEvent, now_ms, parse_event

NOW = 1_790_000_000_000

# Values that sit on or just past the edges of the contract, or are of surprising types.
TRICKY: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    0.0,
    -0.0,
    0.5,
    16,
    16.0,
    16.000001,
    25,
    25.0,
    50,
    90,
    99,
    100.0,
    101.0,
    101.000001,
    2**53,
    2**53 + 1,
    2**64,
    1e308,
    -1e-9,
    "",
    "a",
    "a" * 128,
    "a" * 129,
    "x\n",
    "x\x00",
    "é",
    "video 1",
    "6F1C2D3E-4B5A-4C6D-8E7F-001122334455",
    "{6f1c2d3e-4b5a-4c6d-8e7f-001122334455}",
    "6f1c2d3e4b5a4c6d8e7f001122334455",
    "not-a-uuid",
    [],
    [[0, 1]],
    [[1, 0]],
    [[0, 101]],
    [[0, 101.5]],
    [[0.0, 1.0, 2.0]],
    [[-0.0, 1]],
    [[0, "1"]],
    [(0, 1)],
    {"a": 1},
    NOW,
    NOW - MAX_PAST_MS - 1,
    NOW + 10**9,
    *EVENT_TYPES,
    "unknown",
]
KEYS = [*fastpath.FIELDS, "extra"]


def model_json(raw: Any) -> bytes | None:
    """The stream JSON the model makes of `raw`, or None when it refuses it."""
    try:
        return parse_event(raw, now_ms=NOW).stream_json()
    except InvalidEvent:
        return None


def test_fast_path_is_on_for_the_contract_it_mirrors() -> None:
    """The contract is the one the fast path was written for (else it turns itself off).

    When this fails, vidpulse/events.py changed: bring ingest/fastpath.py in line with
    it, then set CONTRACT_FINGERPRINT to fastpath.contract_fingerprint().
    """
    assert fastpath.contract_fingerprint() == fastpath.CONTRACT_FINGERPRINT
    assert fastpath.ENABLED


def test_fields_are_the_models_in_its_order() -> None:
    """The fast path knows every field of the model, in the model's (stream JSON) order."""
    from vidpulse.events import Event

    assert tuple(Event.model_fields) == fastpath.FIELDS


def test_tracker_like_events_take_the_fast_path_with_identical_stream_json() -> None:
    """Every event of a realistic audience is vouched for, byte for byte as the model writes it."""
    sessions = generate_sessions(random.Random(7), videos=20, viewers=50, sessions=120, now_ms=NOW)
    for event in flatten(sessions):
        vouched = fastpath.vouch(event, NOW)
        assert vouched is not None, event
        assert vouched[0] == model_json(event)


@pytest.mark.parametrize("type", EVENT_TYPES)
def test_every_event_type_takes_the_fast_path(type: str) -> None:
    """A plain valid event of each type is vouched for with the model's stream JSON."""
    event = make_event(type, ts=NOW)
    vouched = fastpath.vouch(event, NOW)
    assert vouched is not None
    assert vouched[0] == model_json(event)


def test_missing_event_id_is_generated_and_uppercase_ids_are_normalised() -> None:
    """Like the model: a missing event_id gets a fresh UUID; an uppercase one is lowercased."""
    event = make_event("play", ts=NOW, event_id=None)
    vouched = fastpath.vouch(event, NOW)
    assert vouched is not None
    assert len(orjson.loads(vouched[0])["event_id"]) == 36
    upper = make_event("play", ts=NOW, event_id="6F1C2D3E-4B5A-4C6D-8E7F-001122334455")
    vouched = fastpath.vouch(upper, NOW)
    assert vouched is not None
    assert vouched[0] == model_json(upper)


def check_agrees(raw: Any) -> None:
    vouched = fastpath.vouch(raw, NOW)
    if vouched is None:
        return  # no verdict: the model decides, whatever it says
    expected = model_json(raw)
    assert expected is not None, f"fast path accepted what the model refuses: {raw!r}"
    got, want = orjson.loads(vouched[0]), orjson.loads(expected)
    if "event_id" not in raw:
        got.pop("event_id"), want.pop("event_id")
    assert got == want
    assert [type(v) for v in got.values()] == [type(v) for v in want.values()]


@settings(max_examples=2000, deadline=None)
@given(
    base=st.sampled_from(EVENT_TYPES),
    edits=st.lists(
        st.tuples(st.sampled_from(KEYS), st.sampled_from([*TRICKY, "__delete__"])),
        max_size=4,
    ),
)
def test_fast_path_never_accepts_what_the_model_refuses(
    base: str, edits: list[tuple[str, Any]]
) -> None:
    """Whatever an event's edits, the fast path's yes is the model's yes, with the same JSON."""
    event = make_event(base, ts=NOW, duration_s=100.0)
    for key, value in edits:
        if value == "__delete__":
            event.pop(key, None)
        else:
            event[key] = value
    check_agrees(event)


def test_ts_window_is_the_models() -> None:
    """Timestamps just inside the window are vouched for; outside, the model decides."""
    now = now_ms()
    for ts, inside in ((now - MAX_PAST_MS, True), (now - MAX_PAST_MS - 1, False)):
        event = make_event("play", ts=ts)
        assert (fastpath.vouch(event, now) is not None) is inside
