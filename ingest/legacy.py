"""Compatibility routes: the bodies of two simpler client protocols, as canonical events.

- `POST /analytics`, the watched-50% call, takes `{"videoId", "event", "ts", "userId"}`
  and appends one `milestone` 50 event, deduplicated per video and user with the
  key `{stream}:dedupe:video:{videoId}:user:{userId}:watched50` (ids encoded).
- The view/progress/complete routes, `POST /api/analytics/video-view`, `video-progress`
  and `video-complete`, take a client's bodies with cumulative counters and append
  `session_start`, `progress` (plus `play`, `pause`, `seek` for the rise of the
  client's cumulative counts) and `complete`. Only video-view names the video and
  viewer; what it said is kept in the hash `Keys.legacy_session`.

Every event is built as the wire contract's `Event` and validated by `parse_event`,
then appended through the app's `Appender`, like `POST /v1/events`: a 202 means it is
in the stream. Event ids are uuid5 of what the event stands for, so a client's retry,
or a report repeating an earlier one, re-sends the same ids and counts once.
docs/tracker.md ("Compatibility routes") describes the mapping for integrators.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import orjson
import structlog
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from redis.exceptions import RedisError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from ingest.appender import Item
from ingest.http import (
    CLOSE,
    JSONResponse,
    RequestError,
    append_and_answer,
    check_content_type,
    edge_rules,
    error_response,
    read_body,
    request_context,
)
from vidpulse.events import (
    TS_WINDOW_MESSAGE,
    EdgeRules,
    Event,
    FieldError,
    InvalidEvent,
    ViewerSig,
    now_ms,
    parse_event,
)
from vidpulse.keys import Keys
from vidpulse.settings import Settings

log = structlog.get_logger("vidpulse.ingest")

WATCHED50_EVENT = "watched_50_percent"
# Below this a watched-50% `ts` is seconds since the epoch (as such clients send it), at
# or above it milliseconds: 1e11 s is the year 5138, 1e11 ms is March 1973.
SECONDS_BELOW = 100_000_000_000
# A report may raise play_count, pause_count or seek_count by at most this much; a
# bigger jump is capped (a real player cannot pause 100 times between two reports).
MAX_COUNT_STEP = 100
WATCHED50_TS_MESSAGE = (
    "must be seconds or ms since the epoch, within the last 7 days and at most 5 minutes ahead"
)
# Fields a client of the view/progress/complete routes may send that the contract has no
# place for. They are ignored: request context comes from the request's own headers (the
# client IP is never kept), and the derived figures are recomputed by the processors
# from the events.
IGNORED_REPORT_FIELDS = frozenset(
    {
        "user_agent", "referrer", "ip_address", "device_type", "browser", "os",
        "completion_percentage", "max_position_seconds", "average_playback_speed",
        "quality_changes", "completed",
    }
)  # fmt: skip
COUNTS = {"play_count": "play", "pause_count": "pause", "seek_count": "seek"}
# uuid5 namespace of every event id these routes make.
NAMESPACE = uuid.UUID("5d0c9d55-3c52-5b8e-9a55-7a6f3e1c2b90")
# First part of the ids of the view/progress/complete routes' events; this literal is
# kept unchanged so that the ids, and so their deduplication, stay stable across versions.
REPORT_ID_PREFIX = "t190"

Ident = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")
]
Text = Annotated[str, StringConstraints(max_length=128)]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Duration = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0)]


class Watched50(BaseModel):
    """The body of the watched-50% call."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    videoId: Ident
    userId: Ident
    event: str
    ts: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    # hex HMAC-SHA256(key, userId) when the ingest has a viewer signing key
    userSig: ViewerSig | None = None


class VideoView(BaseModel):
    """`video-view`: a session starts; names its video, viewer and context."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    session_id: Ident
    video_id: Ident
    video_duration_seconds: Duration
    user_id: Ident | None = None
    # hex HMAC-SHA256(key, user_id) when the ingest has a viewer signing key
    user_sig: ViewerSig | None = None
    course_id: Text | None = None
    lesson_id: Text | None = None
    is_preview: bool = False
    current_position_seconds: Seconds | None = None


class VideoProgress(BaseModel):
    """`video-progress`: the client's cumulative figures for its session."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    session_id: Ident
    current_position_seconds: Seconds
    watch_time_seconds: Seconds | None = None
    play_count: Count | None = None
    pause_count: Count | None = None
    seek_count: Count | None = None
    video_duration_seconds: Duration | None = None
    # Named by video-view; when sent again they must agree with it.
    video_id: Ident | None = None
    user_id: Ident | None = None
    course_id: Text | None = None
    lesson_id: Text | None = None
    is_preview: bool | None = None


class VideoComplete(VideoProgress):
    """`video-complete`: like a progress report, and the session is completed."""

    current_position_seconds: Seconds | None = None  # type: ignore[assignment]


Model = TypeVar("Model", bound=BaseModel)


def event_id(*parts: str) -> str:
    """The deterministic id of the event that `parts` stand for."""
    return str(uuid.uuid5(NAMESPACE, "\x1f".join(parts)))


def invalid(errors: list[FieldError], what: str) -> RequestError:
    """A 422 naming every field error, in the canonical `rejected` shape too."""
    summary = "; ".join(f"{e.field}: {e.message}" if e.field else e.message for e in errors)
    return RequestError(
        422,
        f"invalid {what}: {summary}",
        rejected=[{"index": 0, "errors": [e.as_dict() for e in errors]}],
    )


async def read_object(
    request: Request, settings: Settings, ignored: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The request's body: one JSON object, as application/json or text/plain.

    Its `ignored` fields are dropped unseen.
    """
    check_content_type(request)
    body = await read_body(request, settings)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RequestError(422, "the body must be one JSON object")
    return {k: v for k, v in data.items() if k not in ignored}


def validate(model: type[Model], data: dict[str, Any], what: str) -> Model:
    """`data` as `model`, or a 422 naming each field that is missing, unknown or mistyped."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            message = {"extra_forbidden": "unknown field", "missing": "required"}.get(
                err["type"], err["msg"]
            )
            if err["type"] == "extra_forbidden":
                accepted = ", ".join(f for f in model.model_fields if f not in data)
                message += f" (this route also accepts: {accepted})" if accepted else ""
            errors.append(FieldError(field, message))
        raise invalid(errors, what) from None


def canonical(
    fields: dict[str, Any], now: int, rules: EdgeRules, names: dict[str, str], what: str
) -> Event:
    """`fields` as a contract event; contract errors are reported under the legacy names."""
    try:
        return parse_event(fields, now_ms=now, rules=rules)
    except InvalidEvent as exc:
        errors = [
            FieldError(names.get(e.field, e.field), _rename(e.message, names)) for e in exc.errors
        ]
        raise invalid(errors, what) from None


def _rename(message: str, names: dict[str, str]) -> str:
    """A contract message in the words of the legacy body ("duration_s" -> its name there)."""
    return re.sub(r"\b[a-z_]+_s\b", lambda m: names.get(m[0], m[0]), message)


def unavailable(exc: Exception, settings: Settings) -> Response:
    log.warning("redis_unavailable", error=str(exc))
    return JSONResponse(
        {"error": "the event store is unavailable; keep the request and retry later"},
        status_code=503,
        headers={"Retry-After": str(settings.retry_after_seconds)},
    )


def handler(
    settings: Settings, fn: Callable[[Request], Awaitable[Response]]
) -> Callable[[Request], Awaitable[Response]]:
    """Turns the named failures of a legacy route into JSON error responses."""

    async def endpoint(request: Request) -> Response:
        try:
            return await fn(request)
        except RequestError as exc:
            return error_response(exc, CLOSE if exc.status in (408, 413) else None)
        except ClientDisconnect:
            return Response(status_code=400)
        except (RedisError, OSError) as exc:
            return unavailable(exc, settings)

    return endpoint


# -- the watched-50% call ---------------------------------------------------------------

_WATCHED50_NAMES = {"video_id": "videoId", "viewer_id": "userId", "viewer_sig": "userSig"}
_WATCHED50_WHAT = f"{WATCHED50_EVENT} event"


class Watched50Endpoint:
    """POST /analytics, the watched-50% call: watched_50_percent as a deduplicated milestone 50."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = Keys.of(settings)
        self.rules = edge_rules(settings)

    async def post(self, request: Request) -> Response:
        data = await read_object(request, self.settings)
        if "event" in data and data["event"] != WATCHED50_EVENT:
            given = orjson.dumps(data["event"]).decode()[:80]
            error = FieldError(
                "event", f"{given} is not supported; the only event is {WATCHED50_EVENT}"
            )
            raise RequestError(
                422,
                f"event {given} is not supported: POST /analytics accepts only {WATCHED50_EVENT}",
                rejected=[{"index": 0, "errors": [error.as_dict()]}],
            )
        body = validate(Watched50, data, _WATCHED50_WHAT)
        received_at = now_ms()
        ts = body.ts * 1000 if body.ts < SECONDS_BELOW else body.ts
        milestone_id = event_id("watched50", body.videoId, body.userId)
        fields = {
            "event_id": milestone_id,
            "type": "milestone",
            "milestone": 50,
            "ts": round(ts),
            "video_id": body.videoId,
            "viewer_id": body.userId,
            # The call names no session; one per video and user, like its dedupe.
            "session_id": f"watched50-{milestone_id}",
        }
        if body.userSig is not None:
            fields["viewer_sig"] = body.userSig
        try:
            event = parse_event(fields, now_ms=received_at, rules=self.rules)
        except InvalidEvent as exc:
            errors = [
                FieldError("ts", WATCHED50_TS_MESSAGE)
                if e.message == TS_WINDOW_MESSAGE
                else FieldError(_WATCHED50_NAMES.get(e.field, e.field), e.message)
                for e in exc.errors
            ]
            raise invalid(errors, _WATCHED50_WHAT) from None
        dedupe = self.keys.watched50_dedupe(body.videoId, body.userId)
        user_agent, referer = request_context(request.scope["headers"])
        item = Item(event.stream_json(), received_at, user_agent, referer, dedupe)
        return await append_and_answer(request, [item], [])


# -- the view/progress/complete routes --------------------------------------------------

REPORT_NAMES = {
    "position_s": "current_position_seconds",
    "duration_s": "video_duration_seconds",
    "viewer_id": "user_id",
    "viewer_sig": "user_sig",
}


class Session:
    """What the ingest remembers of a video-view session, in its Redis hash (all strings)."""

    def __init__(self, fields: dict[bytes, bytes]) -> None:
        self.fields = {k.decode(): v.decode() for k, v in fields.items()}

    def __getitem__(self, name: str) -> str:
        return self.fields[name]

    def get(self, name: str) -> str | None:
        return self.fields.get(name)

    def number(self, name: str) -> float:
        return float(self.fields.get(name) or 0)

    def count(self, name: str) -> int:
        return int(self.fields.get(name) or 0)

    def context(self) -> dict[str, Any]:
        """The optional context fields every event of the session carries."""
        out: dict[str, Any] = {"is_preview": self.fields.get("is_preview") == "1"}
        for name in ("course_id", "lesson_id"):
            if name in self.fields:
                out[name] = self.fields[name]
        return out


def anonymous_viewer(session_id: str) -> str:
    """The viewer id of a session whose client sent no user_id: one per session."""
    return "anon-" + event_id("viewer", session_id)


class ReportEndpoints:
    """POST /api/analytics/video-view, video-progress and video-complete."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = Keys.of(settings)
        self.rules = edge_rules(settings)
        # A report's viewer is the one its video-view named, whose signature was checked.
        self.report_rules = dataclasses.replace(self.rules, viewer_key=None)

    async def view(self, request: Request) -> Response:
        body = await self.body(request, VideoView, "video-view body")
        viewer = body.user_id or anonymous_viewer(body.session_id)
        key = self.keys.legacy_session(body.session_id)
        redis = request.state.redis
        known = Session(await redis.hgetall(key))
        if known.fields and (known["video_id"], known["viewer_id"]) != (body.video_id, viewer):
            raise RequestError(
                409,
                f"session_id {body.session_id!r} is already a session of video "
                f"{known['video_id']!r} and viewer {known['viewer_id']!r}; "
                "a new view needs a new session_id",
            )
        received_at = now_ms()
        position = body.current_position_seconds or 0.0
        context: dict[str, Any] = {"is_preview": body.is_preview}
        if body.course_id is not None:
            context["course_id"] = body.course_id
        if body.lesson_id is not None:
            context["lesson_id"] = body.lesson_id
        signature = {} if body.user_sig is None else {"viewer_sig": body.user_sig}
        start = canonical(
            {
                "event_id": event_id(REPORT_ID_PREFIX, body.session_id, "session_start"),
                "type": "session_start",
                "ts": received_at,
                "video_id": body.video_id,
                "session_id": body.session_id,
                "viewer_id": viewer,
                "position_s": position,
                "duration_s": body.video_duration_seconds,
                **context,
                **signature,
            },
            received_at,
            self.rules,
            REPORT_NAMES,
            "video-view body",
        )
        remember: dict[str, str] = {
            "video_id": body.video_id,
            "viewer_id": viewer,
            "duration_s": repr(body.video_duration_seconds),
            "is_preview": "1" if body.is_preview else "0",
        }
        remember.update({k: context[k] for k in ("course_id", "lesson_id") if k in context})
        if not known.fields:
            remember["position_s"] = repr(position)
        # Remembered before the append: once the view is answered 202, progress finds it.
        async with redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=remember)
            pipe.expire(key, self.settings.legacy_session_ttl_seconds)
            await pipe.execute()
        return await append_and_answer(request, [self.item(request, start, received_at)], [])

    async def progress(self, request: Request) -> Response:
        body = await self.body(request, VideoProgress, "video-progress body")
        return await self.report(request, body, "video-progress body", complete=False)

    async def complete(self, request: Request) -> Response:
        body = await self.body(request, VideoComplete, "video-complete body")
        return await self.report(request, body, "video-complete body", complete=True)

    async def body(self, request: Request, model: type[Model], what: str) -> Model:
        data = await read_object(request, self.settings, IGNORED_REPORT_FIELDS)
        return validate(model, data, what)

    async def report(
        self, request: Request, body: VideoProgress, what: str, *, complete: bool
    ) -> Response:
        """Progress or completion of a known session, with the rise of its counts."""
        key = self.keys.legacy_session(body.session_id)
        redis = request.state.redis
        session = Session(await redis.hgetall(key))
        if not session.fields:
            raise RequestError(
                404,
                f"unknown session_id {body.session_id!r}: POST /api/analytics/video-view "
                f"first (a session is remembered for {self.settings.legacy_session_ttl_seconds} s "
                "after its last request)",
            )
        self.check_agrees(body, session)
        received_at = now_ms()
        duration = body.video_duration_seconds or session.number("duration_s")
        position = body.current_position_seconds
        if position is None:
            position = session.number("position_s")
        base = {
            "ts": received_at,
            "video_id": session["video_id"],
            "session_id": body.session_id,
            "viewer_id": session["viewer_id"],
            **session.context(),
        }
        raw: list[dict[str, Any]] = []
        counts: dict[str, str] = {}
        for field, type_ in COUNTS.items():
            reported: int | None = getattr(body, field)
            if reported is None:
                continue
            before = session.count(field)
            counts[field] = str(max(before, reported))
            for n in range(before + 1, min(reported, before + MAX_COUNT_STEP) + 1):
                event = {
                    **base,
                    "event_id": event_id(REPORT_ID_PREFIX, body.session_id, type_, str(n)),
                    "type": type_,
                    "position_s": position,
                }
                if type_ == "seek":
                    # The client reports no seek positions: from the last report's position.
                    event.update(from_s=session.number("position_s"), to_s=position)
                raw.append(event)
        if complete:
            raw.append(
                {
                    **base,
                    "event_id": event_id(REPORT_ID_PREFIX, body.session_id, "complete"),
                    "type": "complete",
                    "position_s": position,
                    "duration_s": duration,
                }
            )
        else:
            figures = (position, duration, body.watch_time_seconds, *counts.values())
            raw.append(
                {
                    **base,
                    "event_id": event_id(
                        REPORT_ID_PREFIX, body.session_id, "progress", repr(figures)
                    ),
                    "type": "progress",
                    "position_s": position,
                    "duration_s": duration,
                }
            )
        events = [canonical(e, received_at, self.report_rules, REPORT_NAMES, what) for e in raw]
        response = await append_and_answer(
            request, [self.item(request, e, received_at) for e in events], []
        )
        if response.status_code == 202:
            async with redis.pipeline(transaction=True) as pipe:
                pipe.hset(
                    key,
                    mapping={"position_s": repr(position), "duration_s": repr(duration), **counts},
                )
                pipe.expire(key, self.settings.legacy_session_ttl_seconds)
                await pipe.execute()
        return response

    @staticmethod
    def check_agrees(body: VideoProgress, session: Session) -> None:
        """A report naming another video or viewer than its session's video-view is refused."""
        for field, remembered in (("video_id", "video_id"), ("user_id", "viewer_id")):
            given = getattr(body, field)
            if given is not None and given != session[remembered]:
                raise RequestError(
                    409,
                    f"{field} {given!r} does not match session {body.session_id!r}, "
                    f"which video-view started with {session[remembered]!r}",
                )

    @staticmethod
    def item(request: Request, event: Event, received_at: int) -> Item:
        user_agent, referer = request_context(request.scope["headers"])
        return Item(event.stream_json(), received_at, user_agent, referer)


def legacy_routes(settings: Settings) -> list[Route]:
    """The compatibility routes, for `create_app`'s route list."""
    reports = ReportEndpoints(settings)
    return [
        Route("/analytics", handler(settings, Watched50Endpoint(settings).post), methods=["POST"]),
        Route("/api/analytics/video-view", handler(settings, reports.view), methods=["POST"]),
        Route(
            "/api/analytics/video-progress", handler(settings, reports.progress), methods=["POST"]
        ),
        Route(
            "/api/analytics/video-complete", handler(settings, reports.complete), methods=["POST"]
        ),
    ]
