"""The OpenAPI document describes what the endpoints really answer."""

from __future__ import annotations

from typing import Any

import jsonschema
from starlette.testclient import TestClient

from tests.dashboard.conftest import Feeder


def _validator(document: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Validator:
    """A validator of `schema` whose $refs resolve inside the whole document."""
    root = {**schema, "components": document["components"]}
    return jsonschema.Draft202012Validator(root)


def test_every_answer_matches_its_documented_schema(fed: Feeder, api: TestClient) -> None:
    """Real answers (200s, errors) validate against the document's response schemas."""
    document = api.get("/api/v1/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    jsonschema.Draft202012Validator.check_schema(document["components"]["schemas"]["VideoDetail"])
    api.put("/api/v1/videos/video-00000", json={"title": "Welcome", "course_id": "c-1"})
    videos = api.get("/api/v1/videos?limit=3").json()
    calls = [
        ("get", "/overview", "/api/v1/overview", None),
        ("get", "/videos", "/api/v1/videos?limit=3", None),
        ("get", "/videos", f"/api/v1/videos?limit=3&cursor={videos['next_cursor']}", None),
        ("get", "/videos/popular", "/api/v1/videos/popular", None),
        ("get", "/videos/{video_id}", "/api/v1/videos/video-00000", None),
        ("get", "/videos/{video_id}", "/api/v1/videos/video-00003", None),
        ("get", "/videos/{video_id}", "/api/v1/videos/unknown-video", None),
        ("get", "/videos", "/api/v1/videos?sort=nope", None),
        ("get", "/viewers/{viewer_id}/progress", "/api/v1/viewers/viewer-00001/progress", None),
        ("get", "/pipeline", "/api/v1/pipeline", None),
        ("put", "/videos/{video_id}", "/api/v1/videos/new-one", {"title": "New"}),
        ("put", "/videos/{video_id}", "/api/v1/videos/new-one", {"title": "Newer"}),
        ("put", "/videos/{video_id}", "/api/v1/videos/new-one", {"title": 5}),
    ]
    statuses = set()
    for method, template, url, body in calls:
        response = api.request(method, url, json=body)
        operation = document["paths"][template][method]
        documented = operation["responses"].get(str(response.status_code))
        assert documented is not None, (url, response.status_code)
        schema = documented["content"]["application/json"]["schema"]
        _validator(document, schema).validate(response.json())
        statuses.add(response.status_code)
    assert statuses == {200, 201, 400, 404, 422}
    assert not api.get("/api/v1/openapi.json", headers={"Authorization": ""}).is_success


def test_the_document_lists_every_route(api: TestClient) -> None:
    """Each API route of the app is in the document, with its methods."""
    from dashboard.api import routes

    document = api.get("/api/v1/openapi.json").json()
    for route in routes:
        path = route.path  # type: ignore[attr-defined]
        methods = {m.lower() for m in route.methods or ()} - {"head"}  # type: ignore[attr-defined]
        assert methods <= set(document["paths"][path]), path
