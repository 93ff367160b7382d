"""The wire contract: one beacon event, validated the same way by ingest and processors."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from vidpulse import viewers

EventType = Literal[
    "session_start",
    "progress",
    "play",
    "pause",
    "seek",
    "rate_change",
    "quality_change",
    "milestone",
    "complete",
    "session_end",
]
EVENT_TYPES: tuple[str, ...] = EventType.__args__  # type: ignore[attr-defined]

Milestone = Literal[25, 50, 75, 90]
MILESTONES: tuple[int, ...] = Milestone.__args__  # type: ignore[attr-defined]

# The rules the model's fields are declared with, named for ingest/fastpath.py, which
# applies them to the events it vouches for.
IDENT_CHARS = "A-Za-z0-9._:-"  # a regex character class's contents
IDENT_MAX_LENGTH = 128
QUALITY_MAX_LENGTH = 32
TEXT_MAX_LENGTH = 128  # course_id, lesson_id
VIEWER_SIG_PATTERN = r"^[0-9A-Fa-f]{64}$"

Ident = Annotated[
    str,
    StringConstraints(min_length=1, max_length=IDENT_MAX_LENGTH, pattern=f"^[{IDENT_CHARS}]+$"),
]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]


def _no_nul(value: str) -> str:
    # PostgreSQL cannot store U+0000 in text or jsonb: accepting it would make a poison entry.
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (U+0000)")
    return value


NoNul = AfterValidator(_no_nul)
# hex HMAC-SHA256(signing key, viewer_id), see vidpulse/viewers.py; never stored.
ViewerSig = Annotated[str, StringConstraints(pattern=VIEWER_SIG_PATTERN)]
Range = Annotated[list[Seconds], Field(min_length=2, max_length=2)]

MAX_PAST_MS = 7 * 24 * 3600 * 1000
MAX_FUTURE_MS = 5 * 60 * 1000
MAX_RANGES = 100
MAX_RATE = 16
# Default of VIDPULSE_MAX_DURATION_SECONDS: 12 hours of media.
MAX_DURATION_S = 43200.0

TS_WINDOW_MESSAGE = "must be ms since the epoch, within the last 7 days and at most 5 minutes ahead"

DURATION_REQUIRED = frozenset({"session_start", "progress", "complete", "session_end"})
PLAYED_ALLOWED = frozenset({"progress", "pause", "seek", "complete", "session_end"})
# uuid5 namespace of the ids the ingest derives for events sent without one.
EVENT_ID_NAMESPACE = uuid.UUID("0b7a4c1e-9f3d-5e2a-8c6b-4d1f2e3a5b6c")
# Fields that are not the event's content: left out of a derived id (and viewer_sig,
# a credential, out of the stream too).
NOT_CONTENT = frozenset({"event_id", "viewer_sig"})


@dataclass(frozen=True)
class FieldError:
    """One reason an event was rejected, named by its field."""

    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class InvalidEvent(Exception):
    """An event broke the contract; `errors` says where and why."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors


class Event(BaseModel):
    """One beacon from a video player (the contract of docs/events.md)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4, strict=False)
    type: EventType
    ts: int = Field(description="client time, ms since the epoch")
    video_id: Ident
    session_id: Ident
    viewer_id: Ident
    viewer_sig: ViewerSig | None = None
    position_s: Seconds | None = None
    duration_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    played: Annotated[list[Range], Field(max_length=MAX_RANGES)] | None = None
    milestone: Milestone | None = None
    from_s: Seconds | None = None
    to_s: Seconds | None = None
    rate: Annotated[float, Field(gt=0, le=MAX_RATE, allow_inf_nan=False)] | None = None
    quality: Annotated[str, StringConstraints(max_length=QUALITY_MAX_LENGTH), NoNul] | None = None
    course_id: Annotated[str, StringConstraints(max_length=TEXT_MAX_LENGTH), NoNul] | None = None
    lesson_id: Annotated[str, StringConstraints(max_length=TEXT_MAX_LENGTH), NoNul] | None = None
    is_preview: bool = False

    @model_validator(mode="after")
    def _type_rules(self) -> Event:
        errors = list(self._rule_errors())
        if errors:
            raise InvalidEvent(errors)
        return self

    def _rule_errors(self) -> Any:
        t = self.type
        if t != "milestone" and self.position_s is None:
            yield FieldError("position_s", f"required for type {t}")
        needs_duration = t in DURATION_REQUIRED or self.played is not None
        if needs_duration and self.duration_s is None:
            why = f"type {t}" if t in DURATION_REQUIRED else "events that carry played"
            yield FieldError("duration_s", f"required for {why}")
        if t == "milestone" and self.milestone is None:
            yield FieldError("milestone", "required for type milestone (25, 50, 75 or 90)")
        if t != "milestone" and self.milestone is not None:
            yield FieldError("milestone", "only allowed on type milestone")
        if self.played is not None and t not in PLAYED_ALLOWED:
            yield FieldError("played", f"not allowed on type {t}")
        if t == "seek":
            for name in ("from_s", "to_s"):
                if getattr(self, name) is None:
                    yield FieldError(name, "required for type seek")
        else:
            for name in ("from_s", "to_s"):
                if getattr(self, name) is not None:
                    yield FieldError(name, "only allowed on type seek")
        if t == "rate_change" and self.rate is None:
            yield FieldError("rate", "required for type rate_change")
        if t == "quality_change" and self.quality is None:
            yield FieldError("quality", "required for type quality_change")
        d = self.duration_s
        if d is not None:
            if self.position_s is not None and self.position_s > d + 1:
                yield FieldError("position_s", f"must be at most duration_s + 1 ({d + 1:g})")
            for i, (start, end) in enumerate(self.played or ()):
                if not start < end:
                    yield FieldError(f"played.{i}", "start must be less than end")
                elif end > d + 1:
                    yield FieldError(
                        f"played.{i}", f"end must be at most duration_s + 1 ({d + 1:g})"
                    )

    def stream_json(self) -> bytes:
        """The compact JSON stored in the stream entry (without the viewer's signature)."""
        if self.viewer_sig is None:
            return self.model_dump_json(exclude_none=True).encode()
        return self.model_dump_json(exclude_none=True, exclude={"viewer_sig"}).encode()


@dataclass(frozen=True)
class EdgeRules:
    """The rules only the ingest applies: they depend on the deployment's settings.

    Processors re-reading accepted events do not apply them, so a changed setting never
    turns entries already in the stream into dead letters.
    """

    max_duration_s: float = MAX_DURATION_S
    viewer_key: bytes | None = None


def edge_errors(event: Event, rules: EdgeRules) -> list[FieldError]:
    """What `event` breaks of `rules`: number bounds, then the viewer's signature."""
    errors: list[FieldError] = []
    top = rules.max_duration_s
    if event.duration_s is not None and event.duration_s > top:
        errors.append(FieldError("duration_s", f"must be at most {top:g} (seconds of media)"))
    # Range ends are at most duration_s + 1, so bounded by the line above.
    for name in ("position_s", "from_s", "to_s"):
        value = getattr(event, name)
        if value is not None and value > top + 1:
            errors.append(FieldError(name, f"must be at most {top + 1:g}"))
    if rules.viewer_key and not viewers.is_anonymous(event.viewer_id):
        if event.viewer_sig is None:
            errors.append(
                FieldError("viewer_sig", "required: viewer_id is not anonymous (anon-...)")
            )
        elif not viewers.verify(rules.viewer_key, event.viewer_id, event.viewer_sig):
            errors.append(FieldError("viewer_sig", "does not sign this viewer_id"))
    return errors


def content_event_id(content: dict[str, Any]) -> uuid.UUID:
    """The id of an event sent without one: uuid5 of its canonical JSON.

    `content` is the validated event as JSON values, without NOT_CONTENT fields; keys
    are sorted, so a retry of the same event always gets the same id.
    """
    return uuid.uuid5(
        EVENT_ID_NAMESPACE, orjson.dumps(content, option=orjson.OPT_SORT_KEYS).decode()
    )


def parse_event(data: Any, *, now_ms: int | None = None, rules: EdgeRules | None = None) -> Event:
    """Validate one event as the ingest receives it.

    `now_ms` enables the timestamp window check, [now - 7 days, now + 5 minutes], and
    `rules` the deployment's bounds and signed viewers; processors re-reading accepted
    events leave both out. An event without `event_id` gets one derived from its
    content (`content_event_id`). Raises InvalidEvent listing every problem found.
    """
    if not isinstance(data, dict):
        raise InvalidEvent([FieldError("", "an event must be a JSON object")])
    try:
        event = Event.model_validate(data)
    except ValidationError as exc:
        raise InvalidEvent([_field_error(e) for e in exc.errors()]) from None
    if now_ms is not None and not now_ms - MAX_PAST_MS <= event.ts <= now_ms + MAX_FUTURE_MS:
        raise InvalidEvent([FieldError("ts", TS_WINDOW_MESSAGE)])
    if rules is not None and (errors := edge_errors(event, rules)):
        raise InvalidEvent(errors)
    if "event_id" not in data:
        content = event.model_dump(mode="json", exclude_none=True, exclude=set(NOT_CONTENT))
        event = event.model_copy(update={"event_id": content_event_id(content)})
    return event


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _field_error(err: Any) -> FieldError:
    loc = ".".join(
        str(p)
        for p in err["loc"]
        if not isinstance(p, str) or not p.startswith(("function-", "tuple[", "list["))
    )
    message = err["msg"]
    if err["type"] == "extra_forbidden":
        message = "unknown field"
    elif err["type"] == "missing":
        message = "required"
    return FieldError(loc, message)
