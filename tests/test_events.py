"""The wire contract (vidpulse/events.py) as a unit: what parse_event accepts and refuses."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from tests.factories import make_event
from vidpulse import viewers
from vidpulse.events import (
    EVENT_TYPES,
    MAX_FUTURE_MS,
    MAX_PAST_MS,
    EdgeRules,
    Event,
    FieldError,
    InvalidEvent,
    now_ms,
    parse_event,
)

NOW = 1_790_000_000_000


def errors_of(data: Any, *, now: int | None = NOW) -> list[FieldError]:
    """The field errors parse_event raises for `data` (fails the test when it accepts)."""
    with pytest.raises(InvalidEvent) as caught:
        parse_event(data, now_ms=now)
    assert caught.value.errors, "InvalidEvent without errors"
    for error in caught.value.errors:
        assert error.message, f"empty message for field {error.field!r}"
    return caught.value.errors


def fields_of(data: Any, *, now: int | None = NOW) -> set[str]:
    return {e.field for e in errors_of(data, now=now)}


def event(type: str = "play", **fields: Any) -> dict[str, Any]:
    return make_event(type, **{"ts": NOW, **fields})


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_each_event_type_with_its_required_fields_is_accepted(event_type: str) -> None:
    """Every event type of the contract is accepted when it carries its required fields."""
    data = event(event_type)
    parsed = parse_event(data, now_ms=NOW)
    assert parsed.type == event_type
    assert str(parsed.event_id) == data["event_id"]


def test_missing_event_id_is_derived_from_the_content() -> None:
    """Without event_id: the same content (a retry) gets the same id, other content another."""
    first = parse_event(event(event_id=None), now_ms=NOW)
    retry = parse_event(event(event_id=None), now_ms=NOW)
    other = parse_event(event(event_id=None, position_s=1.0), now_ms=NOW)
    assert isinstance(first.event_id, uuid.UUID)
    assert first.event_id.version == 5
    assert first.event_id == retry.event_id
    assert first.event_id != other.event_id
    # An integer and its float are the same content once validated; the signature is not.
    assert parse_event(event(event_id=None, position_s=0), now_ms=NOW).event_id == first.event_id


def test_numbers_over_the_deployments_maximum_are_refused_not_capped() -> None:
    """duration_s over the maximum, positions and seek ends over it + 1: each named, refused."""
    rules = EdgeRules()
    cases = {
        "duration_s": event("progress", duration_s=172800.0, played=[[0, 172801]]),
        "position_s": event("play", position_s=43201.5),
        "to_s": event("seek", from_s=0.0, to_s=43201.5),
    }
    for field, data in cases.items():
        with pytest.raises(InvalidEvent) as caught:
            parse_event(data, now_ms=NOW, rules=rules)
        assert field in {e.field for e in caught.value.errors}
    with pytest.raises(InvalidEvent):
        parse_event(event("progress", duration_s=1e308), now_ms=NOW, rules=rules)
    at_edge = event("progress", duration_s=43200.0, position_s=43201.0, played=[[0, 43201]])
    assert parse_event(at_edge, now_ms=NOW, rules=rules).duration_s == 43200.0
    # Processors re-reading the stream apply no deployment bounds.
    assert parse_event(cases["duration_s"]).duration_s == 172800.0


def test_signed_viewers_need_a_matching_signature_and_anonymous_ones_none() -> None:
    """With a key: a named viewer without or with a wrong viewer_sig is refused; anon- is not."""
    rules = EdgeRules(viewer_key=b"k")
    good = viewers.sign(b"k", "viewer-1")
    assert parse_event(event(viewer_sig=good), now_ms=NOW, rules=rules).viewer_id == "viewer-1"
    assert parse_event(event(viewer_sig=good.upper()), now_ms=NOW, rules=rules)
    assert parse_event(event(viewer_id="anon-7"), now_ms=NOW, rules=rules)
    for data in (event(), event(viewer_sig=viewers.sign(b"k", "viewer-2")), event(viewer_sig="x")):
        with pytest.raises(InvalidEvent) as caught:
            parse_event(data, now_ms=NOW, rules=rules)
        assert [e.field for e in caught.value.errors] == ["viewer_sig"]
    stored = parse_event(event(viewer_sig=good), now_ms=NOW, rules=rules).stream_json()
    assert b"viewer_sig" not in stored


def test_event_id_spellings_of_one_uuid_are_one_id() -> None:
    """Upper-case and dash-less spellings of a UUID parse to the same event_id."""
    the_id = uuid.uuid4()
    upper = parse_event(event(event_id=str(the_id).upper()), now_ms=NOW)
    bare = parse_event(event(event_id=the_id.hex), now_ms=NOW)
    assert upper.event_id == bare.event_id == the_id


def test_stream_json_is_compact_without_absent_fields_and_round_trips() -> None:
    """stream_json is compact JSON without null fields that re-validates to the same event."""
    parsed = parse_event(event("progress", played=[[0, 5]]), now_ms=NOW)
    body = parsed.stream_json()
    assert b": " not in body
    assert b", " not in body
    decoded = orjson.loads(body)
    assert "milestone" not in decoded
    assert "rate" not in decoded
    assert decoded["played"] == [[0.0, 5.0]]
    assert Event.model_validate_json(body) == parsed


def test_non_object_event_is_rejected() -> None:
    """An array element that is not a JSON object is rejected with a message."""
    assert errors_of(["play"]) == [FieldError("", "an event must be a JSON object")]


def test_unknown_field_is_rejected_by_name() -> None:
    """A field outside the contract is rejected, named, as 'unknown field'."""
    assert errors_of(event(user="x")) == [FieldError("user", "unknown field")]


@pytest.mark.parametrize("field", ["video_id", "session_id", "viewer_id"])
@pytest.mark.parametrize(
    "value", ["", "a" * 129, "has space", "slash/", "accént", "semi;colon", 42]
)
def test_bad_identifier_is_rejected(field: str, value: Any) -> None:
    """Ids outside 1-128 chars of [A-Za-z0-9._:-] (or not strings) are rejected, named."""
    assert fields_of(event(**{field: value})) == {field}


@pytest.mark.parametrize("field", ["video_id", "session_id", "viewer_id"])
def test_identifier_of_128_chars_of_the_whole_alphabet_is_accepted(field: str) -> None:
    """An id of exactly 128 chars drawn from the whole alphabet is accepted."""
    value = ("Az09._:-" * 16)[:128]
    assert getattr(parse_event(event(**{field: value}), now_ms=NOW), field) == value


@pytest.mark.parametrize("value", ["not-a-uuid", "", 12, "1234"])
def test_bad_event_id_is_rejected(value: Any) -> None:
    """An event_id that is not a UUID string is rejected, named."""
    assert fields_of(event(event_id=value)) == {"event_id"}


@pytest.mark.parametrize(
    ("type_", "fields", "field"),
    [
        ("play", {"position_s": float("inf")}, "position_s"),
        ("play", {"position_s": float("nan")}, "position_s"),
        ("progress", {"duration_s": float("inf")}, "duration_s"),
        ("rate_change", {"rate": float("nan")}, "rate"),
        ("seek", {"to_s": float("-inf")}, "to_s"),
        ("progress", {"played": [[0, float("inf")]]}, "played.0.1"),
    ],
)
def test_non_finite_number_is_rejected(type_: str, fields: dict[str, Any], field: str) -> None:
    """NaN and infinities are refused wherever a number is expected."""
    assert field in fields_of(event(type_, **fields))


def test_ts_window_bounds_are_inclusive() -> None:
    """ts exactly 7 days old or exactly 5 minutes ahead is accepted."""
    assert parse_event(event(ts=NOW - MAX_PAST_MS), now_ms=NOW).ts == NOW - MAX_PAST_MS
    assert parse_event(event(ts=NOW + MAX_FUTURE_MS), now_ms=NOW).ts == NOW + MAX_FUTURE_MS


@pytest.mark.parametrize("ts", [NOW - MAX_PAST_MS - 1, NOW + MAX_FUTURE_MS + 1, 0, NOW // 1000])
def test_ts_outside_the_window_is_rejected(ts: int) -> None:
    """ts older than 7 days, over 5 minutes ahead, or in seconds is rejected, named."""
    errors = errors_of(event(ts=ts))
    assert [e.field for e in errors] == ["ts"]
    assert "7 days" in errors[0].message


def test_ts_window_is_not_checked_without_a_clock() -> None:
    """Processors re-reading an old accepted event (no now_ms) do not apply the window."""
    assert parse_event(event(ts=NOW - 30 * MAX_PAST_MS), now_ms=None).ts == NOW - 30 * MAX_PAST_MS


def test_ts_window_uses_the_real_clock_by_default_helper() -> None:
    """now_ms() is the current time in ms, so a fresh event passes the ingest's window."""
    assert parse_event(make_event("play"), now_ms=now_ms()).type == "play"


@pytest.mark.parametrize("ts", [1.79e12, "1790000000000", True, None])
def test_ts_must_be_an_integer(ts: Any) -> None:
    """ts as a float, a string, a bool or missing is rejected, named."""
    assert fields_of(event(ts=ts)) == {"ts"}


@pytest.mark.parametrize(
    ("type_", "missing", "field"),
    [
        ("play", "position_s", "position_s"),
        ("pause", "position_s", "position_s"),
        ("session_start", "duration_s", "duration_s"),
        ("progress", "duration_s", "duration_s"),
        ("complete", "duration_s", "duration_s"),
        ("session_end", "duration_s", "duration_s"),
        ("milestone", "milestone", "milestone"),
        ("seek", "from_s", "from_s"),
        ("seek", "to_s", "to_s"),
        ("rate_change", "rate", "rate"),
        ("quality_change", "quality", "quality"),
        ("play", "video_id", "video_id"),
        ("play", "session_id", "session_id"),
        ("play", "viewer_id", "viewer_id"),
    ],
)
def test_missing_type_specific_field_is_rejected(type_: str, missing: str, field: str) -> None:
    """Each field a type requires is reported, by name, when absent."""
    errors = errors_of(event(type_, **{missing: None}))
    assert [e.field for e in errors] == [field]
    assert "required" in errors[0].message


def test_played_requires_duration() -> None:
    """An event carrying played without duration_s is rejected on duration_s."""
    errors = errors_of(event("pause", played=[[0, 1]]))
    assert [e.field for e in errors] == ["duration_s"]
    assert "played" in errors[0].message


@pytest.mark.parametrize(
    ("type_", "fields", "field"),
    [
        ("play", {"milestone": 50}, "milestone"),
        ("progress", {"milestone": 25}, "milestone"),
        ("play", {"from_s": 1.0}, "from_s"),
        ("pause", {"to_s": 1.0}, "to_s"),
        ("play", {"duration_s": 100.0, "played": [[0, 1]]}, "played"),
        ("milestone", {"duration_s": 100.0, "played": [[0, 1]]}, "played"),
    ],
)
def test_field_forbidden_on_a_type_is_rejected(
    type_: str, fields: dict[str, Any], field: str
) -> None:
    """milestone off milestone events, from_s/to_s off seek, played off play are rejected."""
    errors = errors_of(event(type_, **fields))
    assert [e.field for e in errors] == [field]
    assert "allowed" in errors[0].message


@pytest.mark.parametrize("value", [0, 30, 100, "50", 50.5])
def test_milestone_value_outside_the_four_is_rejected(value: Any) -> None:
    """milestone must be the integer 25, 50, 75 or 90."""
    assert fields_of(event("milestone", milestone=value)) == {"milestone"}


@pytest.mark.parametrize("value", [25, 50, 75, 90])
def test_each_milestone_value_is_accepted(value: int) -> None:
    """25, 50, 75 and 90 are the accepted milestones."""
    assert parse_event(event("milestone", milestone=value), now_ms=NOW).milestone == value


@pytest.mark.parametrize("rate", [0, -1, 16.01, 100])
def test_rate_outside_zero_to_sixteen_is_rejected(rate: float) -> None:
    """rate must lie in (0, 16]."""
    assert fields_of(event("rate_change", rate=rate)) == {"rate"}


def test_rate_of_sixteen_is_accepted() -> None:
    """The upper rate bound, 16, is inclusive."""
    assert parse_event(event("rate_change", rate=16), now_ms=NOW).rate == 16


@pytest.mark.parametrize(
    ("field", "value"),
    [("quality", "q" * 33), ("course_id", "c" * 129), ("lesson_id", "l" * 129)],
)
def test_overlong_free_text_is_rejected(field: str, value: str) -> None:
    """quality over 32 chars and course/lesson ids over 128 are rejected, named."""
    type_ = "quality_change" if field == "quality" else "play"
    assert fields_of(event(type_, **{field: value})) == {field}


@pytest.mark.parametrize("field", ["quality", "course_id", "lesson_id"])
def test_nul_character_in_free_text_is_rejected(field: str) -> None:
    """A NUL character, which PostgreSQL cannot store, is refused at the edge."""
    type_ = "quality_change" if field == "quality" else "play"
    errors = errors_of(event(type_, **{field: "a\x00b"}))
    assert [e.field for e in errors] == [field]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"position_s": -0.5}, "position_s"),
        ({"duration_s": 0}, "duration_s"),
        ({"duration_s": -3}, "duration_s"),
        ({"position_s": "5"}, "position_s"),
        ({"is_preview": "yes"}, "is_preview"),
        ({"is_preview": 1}, "is_preview"),
    ],
)
def test_out_of_range_or_mistyped_value_is_rejected(fields: dict[str, Any], field: str) -> None:
    """Negative positions, non-positive durations and mistyped values are rejected, named."""
    assert fields_of(event("progress", **fields)) == {field}


def test_position_over_duration_plus_one_is_rejected() -> None:
    """position_s may exceed duration_s by at most one second."""
    assert parse_event(event("progress", position_s=101.0), now_ms=NOW).position_s == 101.0
    errors = errors_of(event("progress", position_s=101.5))
    assert [e.field for e in errors] == ["position_s"]
    assert "duration_s + 1" in errors[0].message


@pytest.mark.parametrize(
    ("played", "field", "needle"),
    [
        ([[5, 5]], "played.0", "less than end"),
        ([[0, 1], [7, 3]], "played.1", "less than end"),
        ([[0, 101.5]], "played.0", "duration_s + 1"),
        ([[-1, 1]], "played.0.0", "greater than or equal to 0"),
        ([[0, 1, 2]], "played.0", "at most 2"),
        ([[0]], "played.0", "at least 2"),
        ([[0, 1]] * 101, "played", "at most 100"),
    ],
)
def test_bad_played_range_is_rejected(played: list[Any], field: str, needle: str) -> None:
    """Ranges need 0 <= start < end <= duration + 1, two numbers each, at most 100 of them."""
    errors = errors_of(event("progress", played=played))
    assert [e.field for e in errors] == [field]
    assert needle in errors[0].message


@pytest.mark.parametrize("played", [[], [[0, 101.0]], [[0, 1]] * 100])
def test_played_at_its_limits_is_accepted(played: list[Any]) -> None:
    """Empty played, an end of exactly duration + 1 and 100 ranges are accepted."""
    assert parse_event(event("progress", played=played), now_ms=NOW).played is not None


def test_every_field_problem_of_an_event_is_reported() -> None:
    """One rejected event lists all its field problems, not just the first."""
    assert fields_of(event(video_id="bad id", extra=1, position_s="x")) == {
        "video_id",
        "extra",
        "position_s",
    }


def test_every_type_rule_problem_of_an_event_is_reported() -> None:
    """All the type rules an event breaks are listed together."""
    assert fields_of(event("seek", from_s=None, to_s=None, milestone=50)) == {
        "from_s",
        "to_s",
        "milestone",
    }


def test_invalid_event_message_names_fields() -> None:
    """The InvalidEvent exception text names each field with its reason."""
    with pytest.raises(InvalidEvent, match=r"position_s: required for type play"):
        parse_event(event(position_s=None), now_ms=NOW)
