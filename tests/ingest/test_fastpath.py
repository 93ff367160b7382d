"""The ingest's fast path (ingest/fastpath.py) agrees with the wire contract's model."""

from __future__ import annotations

import ast
import inspect
import random
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest import fastpath
from tests.factories import make_event
from tools.audience import flatten, generate_sessions
from vidpulse import events, viewers
from vidpulse.events import (
    EVENT_TYPES,
    MAX_PAST_MS,
    EdgeRules,
    InvalidEvent,
    content_event_id,
    now_ms,
    parse_event,
)

NOW = 1_790_000_000_000
KEY = b"test-signing-key"
# A small maximum duration, so the tricky values below sit on its edges too.
RULES = EdgeRules(max_duration_s=150.0)
SIGNED = EdgeRules(max_duration_s=150.0, viewer_key=KEY)

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
    150.0,
    151,
    151.000001,
    172800,
    1e308,
    "anon-1",
    viewers.sign(KEY, "viewer-1"),
    viewers.sign(KEY, "viewer-1").upper(),
    viewers.sign(KEY, "viewer-2"),
    "0" * 64,
    NOW,
    NOW - MAX_PAST_MS - 1,
    NOW + 10**9,
    *EVENT_TYPES,
    "unknown",
]
KEYS = [*fastpath.FIELDS, "extra"]


def model_json(raw: Any, rules: EdgeRules = RULES) -> bytes | None:
    """The stream JSON the model makes of `raw`, or None when it refuses it."""
    try:
        return parse_event(raw, now_ms=NOW, rules=rules).stream_json()
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
        vouched = fastpath.vouch(event, NOW, EdgeRules())
        assert vouched is not None, event
        assert vouched[0] == model_json(event, EdgeRules())


@pytest.mark.parametrize("type", EVENT_TYPES)
def test_every_event_type_takes_the_fast_path(type: str) -> None:
    """A plain valid event of each type is vouched for with the model's stream JSON."""
    event = make_event(type, ts=NOW)
    vouched = fastpath.vouch(event, NOW, RULES)
    assert vouched is not None
    assert vouched[0] == model_json(event)


def test_missing_event_id_is_derived_like_the_models_and_uppercase_ids_are_normalised() -> None:
    """Like the model: a missing event_id is derived from the content; uppercase is lowercased."""
    event = make_event("progress", ts=NOW, event_id=None, played=[[0, 5]])
    vouched = fastpath.vouch(event, NOW, RULES)
    assert vouched is not None
    assert vouched[0] == model_json(event)
    assert fastpath.vouch(dict(event), NOW, RULES) == vouched  # a retry: the same id
    upper = make_event("play", ts=NOW, event_id="6F1C2D3E-4B5A-4C6D-8E7F-001122334455")
    vouched = fastpath.vouch(upper, NOW, RULES)
    assert vouched is not None
    assert vouched[0] == model_json(upper)


def test_signed_viewers_take_the_fast_path_and_the_signature_is_not_stored() -> None:
    """A correctly signed viewer is vouched for with the model's JSON, which drops viewer_sig."""
    event = make_event("play", ts=NOW, viewer_sig=viewers.sign(KEY, "viewer-1"))
    vouched = fastpath.vouch(event, NOW, SIGNED)
    assert vouched is not None
    assert vouched[0] == model_json(event, SIGNED)
    assert b"viewer_sig" not in vouched[0]
    assert fastpath.vouch(make_event("play", ts=NOW), NOW, SIGNED) is None
    assert model_json(make_event("play", ts=NOW), SIGNED) is None


def test_out_of_bound_numbers_are_left_to_the_model_which_refuses_them() -> None:
    """duration_s over the maximum, positions and seek ends over it + 1: no vouching, a 422."""
    for event in (
        make_event("progress", ts=NOW, duration_s=172800.0, played=[[0, 172801]]),
        make_event("progress", ts=NOW, duration_s=1e308),
        make_event("play", ts=NOW, position_s=43202.0),
        make_event("seek", ts=NOW, from_s=0.0, to_s=43202.0),
    ):
        assert fastpath.vouch(event, NOW, EdgeRules()) is None
        assert model_json(event, EdgeRules()) is None


def test_changing_any_copied_rule_changes_the_fingerprint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each rule the fast path copies is in its fingerprint: a change turns the fast path off."""
    original = fastpath.contract_fingerprint()
    for owner, name in fastpath.COVERED_CODE:
        with monkeypatch.context() as patch:
            patch.setattr(owner, name, content_event_id)
            assert fastpath.contract_fingerprint() != original, name


# Numbers the fast path may write itself: no bound, only list positions and pairs, the
# `+ 1` of the model's own rules, and 2**53 (where ints stop being exact as floats).
OWN_NUMBERS = {0, 1, 2, 53}


def test_the_fast_path_writes_no_bound_or_pattern_of_its_own() -> None:
    """Every limit and pattern it applies is a name of the model's module, not a copy.

    (The patterns of its own are the canonical UUID form, narrower than the model's, in
    any case and in lower case.)
    """
    tree = ast.parse(inspect.getsource(fastpath))
    # Not rules: the digest's length and the size of the known-strings sets.
    own = [
        node
        for node in tree.body
        if (isinstance(node, ast.FunctionDef) and node.name == "contract_fingerprint")
        or (isinstance(node, ast.AnnAssign | ast.Assign) and "_KNOWN_MAX" in ast.unparse(node))
    ]
    assert len(own) == 2
    skip = {id(node) for part in own for node in ast.walk(part)}
    numbers = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and type(node.value) in (int, float)
        and id(node) not in skip
    }
    assert numbers <= OWN_NUMBERS, numbers - OWN_NUMBERS
    patterns = [
        ast.unparse(node.args[0])
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and ast.unparse(node.func) == "re.compile"
        and isinstance(node.args[0], ast.Constant)
    ]
    assert len(patterns) == 2
    assert all("{12}" in pattern for pattern in patterns)  # the UUID's


def check_agrees(raw: Any, rules: EdgeRules = RULES) -> None:
    vouched = fastpath.vouch(raw, NOW, rules)
    if vouched is None:
        return  # no verdict: the model decides, whatever it says
    expected = model_json(raw, rules)
    assert expected is not None, f"fast path accepted what the model refuses: {raw!r}"
    got, want = orjson.loads(vouched[0]), orjson.loads(expected)
    assert got == want
    assert [type(v) for v in got.values()] == [type(v) for v in want.values()]


@settings(max_examples=2000, deadline=None)
@given(
    base=st.sampled_from(EVENT_TYPES),
    edits=st.lists(
        st.tuples(st.sampled_from(KEYS), st.sampled_from([*TRICKY, "__delete__"])),
        max_size=4,
    ),
    rules=st.sampled_from([RULES, SIGNED]),
)
def test_fast_path_never_accepts_what_the_model_refuses(
    base: str, edits: list[tuple[str, Any]], rules: EdgeRules
) -> None:
    """Whatever an event's edits, the fast path's yes is the model's yes, with the same JSON."""
    event = make_event(base, ts=NOW, duration_s=100.0)
    for key, value in edits:
        if value == "__delete__":
            event.pop(key, None)
        else:
            event[key] = value
    check_agrees(event, rules)


def test_ts_window_is_the_models() -> None:
    """Timestamps just inside the window are vouched for; outside, the model decides."""
    now = now_ms()
    for ts, inside in ((now - MAX_PAST_MS, True), (now - MAX_PAST_MS - 1, False)):
        event = make_event("play", ts=ts)
        assert (fastpath.vouch(event, now) is not None) is inside


# A rule of the model changed (as an edit of vidpulse/events.py would), and an event
# that was valid before and the changed rule refuses.
RULE_CHANGES: list[tuple[str, Any, dict[str, Any]]] = [
    ("DURATION_REQUIRED", events.DURATION_REQUIRED | {"pause"}, make_event("pause", ts=NOW)),
    (
        "PLAYED_ALLOWED",
        events.PLAYED_ALLOWED - {"progress"},
        make_event("progress", ts=NOW, played=[[0.0, 5.0]]),
    ),
    ("MAX_PAST_MS", 3600 * 1000, make_event("play", ts=NOW - 2 * 3600 * 1000)),
    ("MAX_FUTURE_MS", 1000, make_event("play", ts=NOW + 60 * 1000)),
]


@pytest.mark.parametrize(
    ("name", "changed", "event"), RULE_CHANGES, ids=[c[0] for c in RULE_CHANGES]
)
def test_the_fast_path_follows_a_changed_rule_of_the_model(
    monkeypatch: pytest.MonkeyPatch, name: str, changed: Any, event: dict[str, Any]
) -> None:
    """A rule set or limit the fast path relies on is the model's own: change it, both follow.

    The event is vouched for before; once the rule changes the model refuses it, and the
    fast path does not vouch for it (it leaves it to the model), nor for anything else
    the changed model refuses.
    """
    assert fastpath.vouch(event, NOW, RULES) is not None
    monkeypatch.setattr(events, name, changed)
    assert model_json(event) is None
    assert fastpath.vouch(event, NOW, RULES) is None
    for type_ in EVENT_TYPES:
        for key in [None, *fastpath.FIELDS]:
            variant = make_event(type_, ts=event["ts"], duration_s=100.0, played=[[0.0, 5.0]])
            variant.pop(key or "", None)
            check_agrees(variant)
