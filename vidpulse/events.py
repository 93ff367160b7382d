"""The wire contract: one beacon event, validated the same way by ingest and processors."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

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

Ident = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")
]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]


def _no_nul(value: str) -> str:
    # PostgreSQL cannot store U+0000 in text or jsonb: accepting it would make a poison entry.
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (U+0000)")
    return value


NoNul = AfterValidator(_no_nul)
Range = Annotated[list[Seconds], Field(min_length=2, max_length=2)]

MAX_PAST_MS = 7 * 24 * 3600 * 1000
MAX_FUTURE_MS = 5 * 60 * 1000
MAX_RANGES = 100

TS_WINDOW_MESSAGE = "must be ms since the epoch, within the last 7 days and at most 5 minutes ahead"

_DURATION_REQUIRED = frozenset({"session_start", "progress", "complete", "session_end"})
_PLAYED_ALLOWED = frozenset({"progress", "pause", "seek", "complete", "session_end"})


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
    """One beacon from a video player (SPEC section 4)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4, strict=False)
    type: EventType
    ts: int = Field(description="client time, ms since the epoch")
    video_id: Ident
    session_id: Ident
    viewer_id: Ident
    position_s: Seconds | None = None
    duration_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    played: Annotated[list[Range], Field(max_length=MAX_RANGES)] | None = None
    milestone: Literal[25, 50, 75, 90] | None = None
    from_s: Seconds | None = None
    to_s: Seconds | None = None
    rate: Annotated[float, Field(gt=0, le=16, allow_inf_nan=False)] | None = None
    quality: Annotated[str, StringConstraints(max_length=32), NoNul] | None = None
    course_id: Annotated[str, StringConstraints(max_length=128), NoNul] | None = None
    lesson_id: Annotated[str, StringConstraints(max_length=128), NoNul] | None = None
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
        needs_duration = t in _DURATION_REQUIRED or self.played is not None
        if needs_duration and self.duration_s is None:
            why = f"type {t}" if t in _DURATION_REQUIRED else "events that carry played"
            yield FieldError("duration_s", f"required for {why}")
        if t == "milestone" and self.milestone is None:
            yield FieldError("milestone", "required for type milestone (25, 50, 75 or 90)")
        if t != "milestone" and self.milestone is not None:
            yield FieldError("milestone", "only allowed on type milestone")
        if self.played is not None and t not in _PLAYED_ALLOWED:
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
        """The compact JSON stored in the stream entry."""
        return self.model_dump_json(exclude_none=True).encode()


def parse_event(data: Any, *, now_ms: int | None = None) -> Event:
    """Validate one event as the ingest receives it.

    `now_ms` enables the timestamp window check, [now - 7 days, now + 5 minutes];
    processors re-reading accepted events leave it out.
    Raises InvalidEvent listing every problem found.
    """
    if not isinstance(data, dict):
        raise InvalidEvent([FieldError("", "an event must be a JSON object")])
    try:
        event = Event.model_validate(data)
    except ValidationError as exc:
        raise InvalidEvent([_field_error(e) for e in exc.errors()]) from None
    if now_ms is not None and not now_ms - MAX_PAST_MS <= event.ts <= now_ms + MAX_FUTURE_MS:
        raise InvalidEvent([FieldError("ts", TS_WINDOW_MESSAGE)])
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
