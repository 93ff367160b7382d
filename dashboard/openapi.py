"""The OpenAPI 3.1 document of /api/v1, its schemas generated from dashboard.models."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from dashboard import models
from dashboard.catalogue import CatalogueEntry
from dashboard.data.videos import SORTS
from dashboard.params import MAX_LIMIT

_REF = "#/components/schemas/{model}"
_MODELS: list[type[BaseModel]] = [
    models.Error,
    models.Overview,
    models.VideoList,
    models.PopularList,
    models.VideoDetail,
    models.CatalogueRow,
    models.ViewerProgress,
    models.Pipeline,
]


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _param(name: str, where: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "description": description,
        "schema": schema,
    }


_ID = {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"}
_DAY = {"type": "string", "format": "date"}
_FROM = _param("from", "query", "First UTC day (inclusive); default 29 days before `to`.", _DAY)
_TO = _param("to", "query", "Last UTC day (inclusive); default today.", _DAY)
_FORMAT = _param(
    "format", "query", "csv for CSV (or send Accept: text/csv).", {"enum": ["json", "csv"]}
)
_LIMIT = _param(
    "limit", "query", "Rows to answer.", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}
)


def _get(
    summary: str,
    model: type[BaseModel],
    parameters: list[dict[str, Any]],
    *,
    csv: bool = False,
    not_found: bool = False,
) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": _ref(model)}}
    if csv:
        content["text/csv"] = {"schema": {"type": "string"}}
    responses: dict[str, Any] = {
        "200": {"description": "OK", "content": content},
        "400": _error("A bad parameter, named in the error."),
        "401": _error("No or a wrong bearer token."),
        "503": _error("The database is unavailable."),
    }
    if not_found:
        responses["404"] = _error("Unknown id.")
    return {"summary": summary, "parameters": parameters, "responses": responses}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": _ref(models.Error)}},
    }


@functools.cache
def document() -> dict[str, Any]:
    """The whole document (built once)."""
    _, defs = models_json_schema([(m, "serialization") for m in _MODELS], ref_template=_REF)
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    schemas["CatalogueEntry"] = CatalogueEntry.model_json_schema(ref_template=_REF)
    video_id = _param("video_id", "path", "The video.", _ID)
    put = {
        "summary": "Create or replace a video's catalogue entry",
        "parameters": [video_id],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref(CatalogueEntry)}},
        },
        "responses": {
            "200": {
                "description": "Replaced",
                "content": {"application/json": {"schema": _ref(models.CatalogueRow)}},
            },
            "201": {
                "description": "Created",
                "content": {"application/json": {"schema": _ref(models.CatalogueRow)}},
            },
            "400": _error("A bad video id."),
            "401": _error("No or a wrong bearer token."),
            "422": _error("The body is not a valid catalogue entry; the fields at fault named."),
        },
    }
    paths = {
        "/overview": {
            "get": _get(
                "All-time headline numbers and a daily series",
                models.Overview,
                [_FROM, _TO, _FORMAT],
                csv=True,
            )
        },
        "/videos": {
            "get": _get(
                "Videos with their numbers and titles, keyset-paginated",
                models.VideoList,
                [
                    _param("sort", "query", "Sort key (default views).", {"enum": list(SORTS)}),
                    _param("order", "query", "Default desc.", {"enum": ["desc", "asc"]}),
                    _param("course_id", "query", "Only this course's videos.", _ID),
                    _param("include_preview", "query", "Default false.", {"type": "boolean"}),
                    _param(
                        "q",
                        "query",
                        "Video id or title prefix.",
                        {"type": "string", "maxLength": 128},
                    ),
                    _LIMIT,
                    _param(
                        "cursor", "query", "next_cursor of the previous page.", {"type": "string"}
                    ),
                    _FORMAT,
                ],
                csv=True,
            )
        },
        "/videos/popular": {
            "get": _get(
                "Most viewers past the half first, then most views; previews excluded",
                models.PopularList,
                [_LIMIT, _FORMAT],
                csv=True,
            )
        },
        "/videos/{video_id}": {
            "get": _get(
                "One video: summary, funnel, segments, key moments, daily, devices",
                models.VideoDetail,
                [video_id, _FROM, _TO, _FORMAT],
                csv=True,
                not_found=True,
            ),
            "put": put,
        },
        "/viewers/{viewer_id}/progress": {
            "get": _get(
                "A viewer's resume positions",
                models.ViewerProgress,
                [
                    _param("viewer_id", "path", "The viewer.", _ID),
                    _param("video_id", "query", "Only this video.", _ID),
                    _LIMIT,
                    _FORMAT,
                ],
                csv=True,
            )
        },
        "/pipeline": {
            "get": _get(
                "Stream, consumer groups, lag, pending, dead letters",
                models.Pipeline,
                [_FORMAT],
                csv=True,
            )
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "vidpulse dashboard API", "version": "1"},
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
