"""`GET /v1/openapi.json`: the ingest's OpenAPI 3.1 description, made from its models.

Schemas come from the pydantic models the routes validate with (the wire contract's
`Event` and the compatibility routes' bodies); the deployment's bounds (maximum media
duration) and the timestamp window, computed at each request, are written into them.
Rules across fields (which fields each event type needs, positions within the
duration) are the contract's and are answered by 422 with the field named.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ingest.http import JSONResponse
from ingest.legacy import WATCHED50_EVENT, VideoComplete, VideoProgress, VideoView, Watched50
from vidpulse import __version__
from vidpulse.events import (
    DURATION_REQUIRED,
    EVENT_TYPES,
    MAX_FUTURE_MS,
    MAX_PAST_MS,
    PLAYED_ALLOWED,
    Event,
    now_ms,
)
from vidpulse.settings import Settings

_REF = "#/components/schemas/{model}"
_CONTENT_TYPES = ("application/json", "text/plain")
_MODELS: list[type[BaseModel]] = [Event, Watched50, VideoView, VideoProgress, VideoComplete]
_BASE_SCHEMAS: dict[str, Any] = models_json_schema(
    [(m, "validation") for m in _MODELS], ref_template=_REF
)[1]["$defs"]

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "what went wrong, for a person to act on"},
        "rejected": {"type": "array", "items": {"$ref": _REF.format(model="Rejected")}},
    },
}
_REJECTED = {
    "type": "object",
    "required": ["index", "errors"],
    "properties": {
        "index": {"type": "integer", "minimum": 0, "description": "the event's place in the body"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}
_ACCEPTED = {
    "type": "object",
    "required": ["accepted", "duplicates", "rejected"],
    "properties": {
        "accepted": {"type": "integer", "minimum": 0, "description": "events now in the stream"},
        "duplicates": {"type": "integer", "minimum": 0, "description": "repeated milestones"},
        "rejected": {"type": "array", "items": {"$ref": _REF.format(model="Rejected")}},
    },
}
_ERRORS = {
    "400": "the body is not JSON",
    "403": "the request's Origin is not one of VIDPULSE_CORS_ORIGINS",
    "408": "the body did not arrive within VIDPULSE_BODY_TIMEOUT_SECONDS",
    "413": "the body or its number of events is over the limit",
    "415": "a content type other than application/json or text/plain",
    "422": "no valid event: each rejected one is listed with its field errors",
    "429": "over VIDPULSE_RATE_LIMIT for this client; see Retry-After",
    "503": "the event store is unavailable or behind; keep the events, retry after Retry-After",
}
_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}


def openapi_document(settings: Settings, now: int) -> dict[str, Any]:
    """The ingest's OpenAPI document, with the bounds of `settings` and the window at `now`."""
    schemas = copy.deepcopy(_BASE_SCHEMAS)
    _bound_event(schemas["Event"], settings, now)
    _bound_watched50(schemas["Watched50"], now)
    schemas.update(Rejected=_REJECTED, Accepted=_ACCEPTED, Error=_ERROR)
    schemas.update({f"Event_{t}": _event_of_type(t) for t in EVENT_TYPES})
    event = {"oneOf": [{"$ref": _REF.format(model=f"Event_{t}")} for t in EVENT_TYPES]}
    events = {"type": "array", "items": event, "minItems": 1}
    events["maxItems"] = settings.max_events_per_request
    body = {
        "oneOf": [
            event,
            events,
            {
                "type": "object",
                "required": ["events"],
                "properties": {"events": events},
                "additionalProperties": False,
            },
        ]
    }
    paths = {
        "/v1/events": _post(
            'Append beacon events: one event, an array, or {"events": [...]}',
            body,
            [],
        ),
        "/analytics": _post(
            "Compatibility: the watched_50_percent body, as a milestone 50 event",
            {"$ref": _REF.format(model="Watched50")},
            [],
        ),
        "/api/analytics/video-view": _post(
            "Compatibility: a session starts (session_start)",
            {"$ref": _REF.format(model="VideoView")},
            ["409"],
        ),
        "/api/analytics/video-progress": _post(
            "Compatibility: cumulative progress of a session (progress, play, pause, seek)",
            {"$ref": _REF.format(model="VideoProgress")},
            ["404", "409"],
        ),
        "/api/analytics/video-complete": _post(
            "Compatibility: a session completed (complete)",
            {"$ref": _REF.format(model="VideoComplete")},
            ["404", "409"],
        ),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "vidpulse ingest",
            "version": __version__,
            "description": "Beacons from video players, appended to a Redis Stream.",
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }


def _bound_event(schema: dict[str, Any], settings: Settings, now: int) -> None:
    """Write the deployment's bounds and the timestamp window into the Event schema."""
    props = schema["properties"]
    top = settings.max_duration_seconds + 1
    props["ts"].update(minimum=now - MAX_PAST_MS, maximum=now + MAX_FUTURE_MS)
    for name, bound in (
        ("duration_s", settings.max_duration_seconds),
        ("position_s", top),
        ("from_s", top),
        ("to_s", top),
    ):
        props[name]["anyOf"][0]["maximum"] = bound
    props["played"]["anyOf"][0]["items"]["items"]["maximum"] = top
    props["event_id"]["description"] = (
        "idempotency key; without it the ingest derives one from the event's content"
    )


def _bound_watched50(schema: dict[str, Any], now: int) -> None:
    """The /analytics body's one event name, and its ts window in seconds or milliseconds."""
    props = schema["properties"]
    props["event"] = {"const": WATCHED50_EVENT, "type": "string"}
    window = (now - MAX_PAST_MS, now + MAX_FUTURE_MS)
    props["ts"] = {
        "anyOf": [
            {"type": "number", "minimum": window[0] / 1000, "maximum": window[1] / 1000},
            {"type": "number", "minimum": window[0], "maximum": window[1]},
        ],
        "description": "seconds or milliseconds since the epoch",
    }


def _event_of_type(t: str) -> dict[str, Any]:
    """The Event schema under the rules of type `t`: the fields it needs and must not have."""
    need = {"milestone"} if t == "milestone" else {"position_s"}
    need |= {"duration_s"} if t in DURATION_REQUIRED else set()
    need |= {"seek": {"from_s", "to_s"}, "rate_change": {"rate"}}.get(t, set())
    need |= {"quality"} if t == "quality_change" else set()
    forbid = set() if t == "milestone" else {"milestone"}
    forbid |= set() if t == "seek" else {"from_s", "to_s"}
    forbid |= set() if t in PLAYED_ALLOWED else {"played"}
    properties: dict[str, Any] = {"type": {"const": t}}
    properties.update({name: {"not": {"type": "null"}} for name in sorted(need)})
    properties.update(dict.fromkeys(sorted(forbid), False))
    return {
        "description": f"An event of type {t} (positions at most duration_s + 1)",
        "allOf": [{"$ref": _REF.format(model="Event")}],
        "properties": properties,
        "required": ["type", *sorted(need)],
    }


def _post(summary: str, body: dict[str, Any], extra: list[str]) -> dict[str, Any]:
    content = {ct: {"schema": body} for ct in _CONTENT_TYPES}
    responses: dict[str, Any] = {
        "202": {
            "description": "every valid event is in the stream",
            "content": {"application/json": {"schema": {"$ref": _REF.format(model="Accepted")}}},
        }
    }
    descriptions = {
        **_ERRORS,
        "404": "unknown session_id: send video-view first",
        "409": "the session belongs to another video or viewer",
    }
    for status in sorted({*_ERRORS, *extra}):
        response: dict[str, Any] = {
            "description": descriptions[status],
            "content": {"application/json": {"schema": {"$ref": _REF.format(model="Error")}}},
        }
        if status in ("429", "503"):
            response["headers"] = _RETRY_AFTER
        responses[status] = response
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": content},
            "responses": responses,
        }
    }


def openapi_route(settings: Settings) -> Route:
    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document(settings, now_ms()))

    return Route("/v1/openapi.json", openapi, methods=["GET"])
