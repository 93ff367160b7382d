"""A fast path through the wire contract for the events that obviously keep it.

`vidpulse.events.Event` (pydantic) is the contract; validating and serialising an
event with it costs about 15 µs, most of the ingest's time per event. `vouch()`
checks the common, plainly valid shape in a few µs and returns the same stream JSON
the model would; for anything else (a missing or unusual field, a number out of
range, any rule broken, any input of a type it does not expect) it returns None and
the caller asks the model, which accepts it or says precisely why not. So the fast
path can only ever say yes to what the model says yes to, never reject on its own.

The contract can change under it: `CONTRACT_FINGERPRINT` is a digest of the model's
JSON schema, of the rule code and of every limit this module copies or imports
(`COVERED_CODE`, `COVERED_VALUES`); when it no longer matches, the fast path turns
itself off (every event goes to the model) and the test suite fails, so whoever
changes the contract updates this module with it.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import re
from typing import Any

import orjson

from vidpulse import events, viewers
from vidpulse.events import (
    DURATION_REQUIRED,
    EVENT_TYPES,
    MAX_FUTURE_MS,
    MAX_PAST_MS,
    MAX_RANGES,
    MAX_RATE,
    PLAYED_ALLOWED,
    EdgeRules,
    Event,
    content_event_id,
)

# The model's fields, in its order (which is the order of the stream JSON).
FIELDS = (
    "event_id",
    "type",
    "ts",
    "video_id",
    "session_id",
    "viewer_id",
    "viewer_sig",
    "position_s",
    "duration_s",
    "played",
    "milestone",
    "from_s",
    "to_s",
    "rate",
    "quality",
    "course_id",
    "lesson_id",
    "is_preview",
)
_FIELD_SET = frozenset(FIELDS)
_TYPES = frozenset(EVENT_TYPES)
_MILESTONES = frozenset((25, 50, 75, 90))
# Python's fullmatch has no `$`-before-newline subtlety: the whole string must match.
_IDENT = re.compile(r"[A-Za-z0-9._:-]{1,128}").fullmatch
_SIG = re.compile(r"[0-9A-Fa-f]{64}").fullmatch
_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
).fullmatch
# Ints beyond this lose precision as floats; the model's handling of them is left to it.
_MAX_EXACT_INT = 2**53
_INF = math.inf

# sha256 of the model's JSON schema, the rule code and the limits, as of the contract
# this module mirrors. See `contract_fingerprint()`.
CONTRACT_FINGERPRINT = "32274a4938c04ea0"

# Every function of the contract whose rules this module copies (by source) ...
COVERED_CODE = (
    (events.Event, "_rule_errors"),
    (events, "parse_event"),
    (events, "_no_nul"),
    (events, "edge_errors"),
    (events, "content_event_id"),
    (viewers, "is_anonymous"),
    (viewers, "sign"),
    (viewers, "verify"),
)
# ... and every limit it imports or copies (by value).
COVERED_VALUES = (
    (events, "MAX_PAST_MS"),
    (events, "MAX_FUTURE_MS"),
    (events, "MAX_RANGES"),
    (events, "MAX_RATE"),
    (events, "EVENT_TYPES"),
    (events, "DURATION_REQUIRED"),
    (events, "PLAYED_ALLOWED"),
    (events, "NOT_CONTENT"),
    (events, "EVENT_ID_NAMESPACE"),
    (viewers, "ANONYMOUS_PREFIX"),
)


def contract_fingerprint() -> str:
    """A digest of everything that decides whether an event keeps the contract."""
    digest = hashlib.sha256()
    digest.update(orjson.dumps(Event.model_json_schema(), option=orjson.OPT_SORT_KEYS))
    for owner, name in COVERED_CODE:
        digest.update(inspect.getsource(getattr(owner, name)).encode())
    for owner, name in COVERED_VALUES:
        value = getattr(owner, name)
        value = sorted(value) if isinstance(value, frozenset) else value
        digest.update(orjson.dumps([name, value], default=str))
    return digest.hexdigest()[:16]


def _enabled() -> bool:
    try:
        return contract_fingerprint() == CONTRACT_FINGERPRINT
    except (OSError, TypeError):  # no source to inspect (e.g. a frozen build): play safe
        return False


ENABLED = _enabled()


def _number(value: Any) -> float | None:
    """A finite number as the model's strict float takes it (ints become floats), or None."""
    kind = type(value)
    if kind is float:
        return value if -_INF < value < _INF else None
    if kind is int and -_MAX_EXACT_INT <= value <= _MAX_EXACT_INT:
        return float(value)
    return None


def _text(value: Any, limit: int) -> bool:
    return type(value) is str and len(value) <= limit and "\x00" not in value


_DEFAULT_RULES = EdgeRules()


def vouch(
    raw: Any, now_ms: int, rules: EdgeRules = _DEFAULT_RULES
) -> tuple[bytes, dict[str, Any]] | None:
    """(stream JSON, normalised fields) of a plainly valid event, or None to ask the model.

    A None is no verdict: the event may still be valid (the model decides).
    """
    if not ENABLED or type(raw) is not dict or not _FIELD_SET.issuperset(raw):
        return None
    get = raw.get
    top = rules.max_duration_s + 1

    event_id = get("event_id", _ABSENT)
    if event_id is _ABSENT:
        pass  # derived from the content below, once it is known to be valid
    elif type(event_id) is not str or not _UUID(event_id):
        return None
    elif not event_id.islower() and not event_id.isdigit():
        event_id = event_id.lower()

    t = get("type")
    if type(t) is not str or t not in _TYPES:
        return None
    ts = get("ts")
    if type(ts) is not int or not now_ms - MAX_PAST_MS <= ts <= now_ms + MAX_FUTURE_MS:
        return None
    video_id, session_id, viewer_id = get("video_id"), get("session_id"), get("viewer_id")
    if (
        type(video_id) is not str
        or type(session_id) is not str
        or type(viewer_id) is not str
        or not _IDENT(video_id)
        or not _IDENT(session_id)
        or not _IDENT(viewer_id)
    ):
        return None
    signature = get("viewer_sig")
    if signature is not None and (type(signature) is not str or not _SIG(signature)):
        return None
    key = rules.viewer_key
    if (
        key
        and not viewer_id.startswith(viewers.ANONYMOUS_PREFIX)
        and (signature is None or not viewers.verify(key, viewer_id, signature))
    ):
        return None
    out: dict[str, Any] = {
        "event_id": event_id,
        "type": t,
        "ts": ts,
        "video_id": video_id,
        "session_id": session_id,
        "viewer_id": viewer_id,
    }

    position = get("position_s")
    if position is not None:
        if type(position) is not float and (position := _number(position)) is None:
            return None
        if not 0 <= position <= top:
            return None
        out["position_s"] = position
    elif t != "milestone":
        return None

    duration = get("duration_s")
    if duration is not None:
        if type(duration) is not float and (duration := _number(duration)) is None:
            return None
        if not 0 < duration <= rules.max_duration_s:
            return None
        out["duration_s"] = duration
        if position is not None and position > duration + 1:
            return None
    elif t in DURATION_REQUIRED:
        return None

    played = get("played")
    if played is not None:
        if (
            duration is None
            or type(played) is not list
            or len(played) > MAX_RANGES
            or t not in PLAYED_ALLOWED
        ):
            return None
        end_top = duration + 1
        for pair in played:
            if type(pair) is not list or len(pair) != 2:
                return None
            start, end = pair
            if type(start) is not float and (start := _number(start)) is None:
                return None
            if type(end) is not float and (end := _number(end)) is None:
                return None
            if not 0 <= start < end <= end_top:
                return None
        out["played"] = [
            p if type(p[0]) is float and type(p[1]) is float else [float(p[0]), float(p[1])]
            for p in played
        ]

    milestone = get("milestone")
    if t == "milestone":
        if type(milestone) is not int or milestone not in _MILESTONES:
            return None
        out["milestone"] = milestone
    elif milestone is not None:
        return None

    from_s, to_s = get("from_s"), get("to_s")
    if t == "seek":
        from_s, to_s = _number(from_s), _number(to_s)
        if from_s is None or to_s is None or not 0 <= from_s <= top or not 0 <= to_s <= top:
            return None
        out["from_s"] = from_s
        out["to_s"] = to_s
    elif from_s is not None or to_s is not None:
        return None

    rate = get("rate")
    if rate is not None:
        rate = _number(rate)
        if rate is None or not 0 < rate <= MAX_RATE:
            return None
        out["rate"] = rate
    elif t == "rate_change":
        return None

    quality = get("quality")
    if quality is not None:
        if not _text(quality, 32):
            return None
        out["quality"] = quality
    elif t == "quality_change":
        return None

    course_id, lesson_id = get("course_id"), get("lesson_id")
    if course_id is not None:
        if not _text(course_id, 128):
            return None
        out["course_id"] = course_id
    if lesson_id is not None:
        if not _text(lesson_id, 128):
            return None
        out["lesson_id"] = lesson_id

    preview = get("is_preview", False)
    if type(preview) is not bool:
        return None
    out["is_preview"] = preview

    try:
        if event_id is _ABSENT:
            out["event_id"] = str(
                content_event_id({k: v for k, v in out.items() if k != "event_id"})
            )
        return orjson.dumps(out), out
    except orjson.JSONEncodeError:  # e.g. a lone surrogate in a string: the model decides
        return None


_ABSENT = object()
