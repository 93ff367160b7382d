"""A fast path through the wire contract for the events that obviously keep it.

`vidpulse.events.Event` (pydantic) is the contract; validating and serialising an
event with it costs about 15 µs, most of the ingest's time per event. `vouch()`
checks the common, plainly valid shape in a few µs and returns the same stream JSON
the model would; for anything else (a missing or unusual field, a number out of
range, any rule broken, any input of a type it does not expect) it returns None and
the caller asks the model, which accepts it or says precisely why not. So the fast
path can only ever say yes to what the model says yes to, never reject on its own.

Every rule it applies comes from the model's module, read when the model reads it:
the bounds, patterns and lengths the model's fields are declared with
(`IDENT_CHARS`, `MAX_RATE`, ...) once, at import, like the model's class; the rules
the model applies per event (`DURATION_REQUIRED`, `PLAYED_ALLOWED`, the `ts`
window, the derived `event_id`, the viewer's signature) per event, from
`vidpulse.events` and `vidpulse.viewers` themselves. A changed rule is so the fast
path's too.

What it must still copy is how the rules combine (which type needs which field,
pydantic's strict types) and the model's field list. `CONTRACT_FINGERPRINT` is a
digest of the model's JSON schema and of the source of the functions that say it
(`COVERED_CODE`); when it no longer matches, the fast path turns itself off (every
event goes to the model) and the test suite fails, so whoever changes the contract
updates this module with it.
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
    EVENT_TYPES,
    IDENT_CHARS,
    IDENT_MAX_LENGTH,
    MAX_RANGES,
    MAX_RATE,
    MILESTONES,
    QUALITY_MAX_LENGTH,
    TEXT_MAX_LENGTH,
    VIEWER_SIG_PATTERN,
    EdgeRules,
    Event,
)

# The model's fields, in its order (which is the order of the stream JSON): the fields
# this module knows how to check (a new one changes the schema, so the fingerprint).
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
_MILESTONES = frozenset(MILESTONES)
# fullmatch: the whole string must match, even where `$` would allow a final newline.
_IDENT = re.compile(f"[{IDENT_CHARS}]{{1,{IDENT_MAX_LENGTH}}}").fullmatch
_SIG = re.compile(VIEWER_SIG_PATTERN).fullmatch
_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
).fullmatch
_LOWER_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").fullmatch
# Ints beyond this lose precision as floats; the model's handling of them is left to it.
_MAX_EXACT_INT = 2**53
_INF = math.inf

# sha256 of the model's JSON schema and the rule code, as of the contract this module
# mirrors. See `contract_fingerprint()`.
CONTRACT_FINGERPRINT = "599174320f161fb0"

# Every function of the contract whose rules this module copies (by source).
COVERED_CODE = (
    (events.Event, "_rule_errors"),
    (events, "parse_event"),
    (events, "_no_nul"),
    (events, "edge_errors"),
)


def contract_fingerprint() -> str:
    """A digest of everything that decides whether an event keeps the contract."""
    digest = hashlib.sha256()
    digest.update(orjson.dumps(Event.model_json_schema(), option=orjson.OPT_SORT_KEYS))
    for owner, name in COVERED_CODE:
        digest.update(inspect.getsource(getattr(owner, name)).encode())
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


# Strings already found to be valid ids (`_IDENT`) and course or lesson ids (`_text`):
# the same few recur in event after event, and a set lookup costs a tenth of the check.
# Each is a function of the string alone; the sets are emptied when they grow large.
_KNOWN_IDENTS: set[str] = set()
_KNOWN_TEXTS: set[str] = set()
_KNOWN_MAX = 1 << 16


def _new_ident(value: str) -> bool:
    """Whether `value` (a str not yet known) is a valid id; remembered when it is."""
    if not _IDENT(value):
        return False
    if len(_KNOWN_IDENTS) >= _KNOWN_MAX:
        _KNOWN_IDENTS.clear()
    _KNOWN_IDENTS.add(value)
    return True


def _new_text(value: str) -> bool:
    """Whether `value` (a str not yet known) is a valid course or lesson id; remembered."""
    if len(value) > TEXT_MAX_LENGTH or "\x00" in value:
        return False
    if len(_KNOWN_TEXTS) >= _KNOWN_MAX:
        _KNOWN_TEXTS.clear()
    _KNOWN_TEXTS.add(value)
    return True


_DEFAULT_RULES = EdgeRules()
# The fields every event has (else refused): type, ts and the three ids.
_ALWAYS = len(("type", "ts", "video_id", "session_id", "viewer_id"))


def vouch(
    raw: Any, now_ms: int, rules: EdgeRules = _DEFAULT_RULES
) -> tuple[bytes, dict[str, Any]] | None:
    """(stream JSON, normalised fields) of a plainly valid event, or None to ask the model.

    A None is no verdict: the event may still be valid (the model decides).
    """
    if not ENABLED or type(raw) is not dict:
        return None
    get = raw.get
    top = rules.max_duration_s + 1

    seen = _ALWAYS  # how many of the event's keys are known present (with a value)
    event_id = get("event_id", _ABSENT)
    if event_id is _ABSENT:
        pass  # derived from the content below, once it is known to be valid
    elif type(event_id) is not str:
        return None
    else:
        seen += 1
        if not _LOWER_UUID(event_id):  # the model writes it in lower case
            if not _UUID(event_id):
                return None
            event_id = event_id.lower()

    t = get("type")
    if type(t) is not str or t not in _TYPES:
        return None
    ts = get("ts")
    if (
        type(ts) is not int
        or not now_ms - events.MAX_PAST_MS <= ts <= now_ms + events.MAX_FUTURE_MS
    ):
        return None
    video_id, session_id, viewer_id = get("video_id"), get("session_id"), get("viewer_id")
    known = _KNOWN_IDENTS
    if (
        type(video_id) is not str
        or type(session_id) is not str
        or type(viewer_id) is not str
        or (video_id not in known and not _new_ident(video_id))
        or (session_id not in known and not _new_ident(session_id))
        or (viewer_id not in known and not _new_ident(viewer_id))
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
        seen += 1
        if type(position) is not float and (position := _number(position)) is None:
            return None
        if not 0 <= position <= top:
            return None
        out["position_s"] = position
    elif t != "milestone":
        return None

    duration = get("duration_s")
    if duration is not None:
        seen += 1
        if type(duration) is not float and (duration := _number(duration)) is None:
            return None
        if not 0 < duration <= rules.max_duration_s:
            return None
        out["duration_s"] = duration
        if position is not None and position > duration + 1:
            return None
    elif t in events.DURATION_REQUIRED:
        return None

    played = get("played")
    if played is not None:
        seen += 1
        if (
            duration is None
            or type(played) is not list
            or len(played) > MAX_RANGES
            or t not in events.PLAYED_ALLOWED
        ):
            return None
        end_top = duration + 1
        floats = True  # every bound a float already: the list goes out as it came
        for pair in played:
            if type(pair) is not list or len(pair) != 2:
                return None
            start, end = pair
            if type(start) is not float:
                floats = False
                if (start := _number(start)) is None:
                    return None
            if type(end) is not float:
                floats = False
                if (end := _number(end)) is None:
                    return None
            if not 0 <= start < end <= end_top:
                return None
        out["played"] = played if floats else [[float(start), float(end)] for start, end in played]

    course_id, lesson_id = get("course_id"), get("lesson_id")
    preview = get("is_preview", _ABSENT)
    seen += (course_id is not None) + (lesson_id is not None) + (preview is not _ABSENT)
    # When every key of the event is one of those seen so far (none of them null) and
    # the type needs none of the others, the event has no unknown field and no
    # viewer_sig, milestone, from_s, to_s, rate or quality: none to check.
    if (seen != len(raw) or t in _TYPES_WITH_OWN_FIELDS or rules.viewer_key) and (
        not _FIELD_SET.issuperset(raw) or not _own_fields(get, t, viewer_id, top, rules, out)
    ):
        return None

    texts = _KNOWN_TEXTS
    if course_id is not None:
        if type(course_id) is not str or (course_id not in texts and not _new_text(course_id)):
            return None
        out["course_id"] = course_id
    if lesson_id is not None:
        if type(lesson_id) is not str or (lesson_id not in texts and not _new_text(lesson_id)):
            return None
        out["lesson_id"] = lesson_id
    if preview is _ABSENT:
        out["is_preview"] = False
    elif type(preview) is bool:
        out["is_preview"] = preview
    else:
        return None

    try:
        if event_id is _ABSENT:
            not_content = events.NOT_CONTENT
            content = {k: v for k, v in out.items() if k not in not_content}
            out["event_id"] = str(events.content_event_id(content))
        return orjson.dumps(out), out
    except orjson.JSONEncodeError:  # e.g. a lone surrogate in a string: the model decides
        return None


# The types that require a field of their own (milestone, from_s and to_s, rate, quality).
_TYPES_WITH_OWN_FIELDS = frozenset(("milestone", "seek", "rate_change", "quality_change"))


def _own_fields(
    get: Any, t: str, viewer_id: str, top: float, rules: EdgeRules, out: dict[str, Any]
) -> bool:
    """Check viewer_sig, milestone, from_s, to_s, rate and quality, adding them to `out`."""
    signature = get("viewer_sig")
    if signature is not None and (type(signature) is not str or not _SIG(signature)):
        return False
    key = rules.viewer_key
    if (
        key
        and not viewers.is_anonymous(viewer_id)
        and (signature is None or not viewers.verify(key, viewer_id, signature))
    ):
        return False

    milestone = get("milestone")
    if t == "milestone":
        if type(milestone) is not int or milestone not in _MILESTONES:
            return False
        out["milestone"] = milestone
    elif milestone is not None:
        return False

    from_s, to_s = get("from_s"), get("to_s")
    if t == "seek":
        from_s, to_s = _number(from_s), _number(to_s)
        if from_s is None or to_s is None or not 0 <= from_s <= top or not 0 <= to_s <= top:
            return False
        out["from_s"] = from_s
        out["to_s"] = to_s
    elif from_s is not None or to_s is not None:
        return False

    rate = get("rate")
    if rate is not None:
        rate = _number(rate)
        if rate is None or not 0 < rate <= MAX_RATE:
            return False
        out["rate"] = rate
    elif t == "rate_change":
        return False

    quality = get("quality")
    if quality is not None:
        if not _text(quality, QUALITY_MAX_LENGTH):
            return False
        out["quality"] = quality
    elif t == "quality_change":
        return False
    return True


_ABSENT = object()
