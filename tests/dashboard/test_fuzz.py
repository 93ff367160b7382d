"""Fuzzing the dashboard's JSON API from its own OpenAPI description (schemathesis).

Every operation of GET /api/v1/openapi.json gets bounded, derandomized examples, valid by
the schema and invalid, sent with a valid token to a live server over real data: no
answer may be a 5xx, and every error is JSON with an `error` a person can read.
"""

from __future__ import annotations

import httpx2
import schemathesis

from tests.browser.servers import LiveDashboard
from tests.dashboard.conftest import AUTH, Feeder
from tests.ingest.test_fuzz import fuzz

EXAMPLES = 40


def test_fuzzed_api_requests_never_get_a_5xx(fed: Feeder) -> None:
    """Schema-driven valid and invalid requests to every API operation: no 5xx, JSON errors."""
    server = LiveDashboard(fed.settings)
    server.start()
    statuses: dict[str, set[int]] = {}
    try:
        document = httpx2.get(server.origin + "/api/v1/openapi.json", headers=AUTH).json()
        schema = schemathesis.openapi.from_dict(document)
        for result in schema.get_all_operations():
            operation = result.ok()
            seen = statuses.setdefault(f"{operation.method.upper()} {operation.path}", set())
            api = server.origin + document["servers"][0]["url"]
            for case, response in fuzz(operation, api, EXAMPLES, headers=AUTH):
                seen.add(response.status_code)
                where = (operation.path, case.path_parameters, case.query, case.body)
                assert response.status_code < 500, (where, response.text)
                if response.status_code >= 400:
                    assert response.headers["content-type"] == ["application/json"], where
                    assert response.json()["error"], (where, response.text)
    finally:
        server.stop()
    assert len(statuses) >= 8, statuses  # every endpoint of the API was fuzzed
    assert any(200 in seen for seen in statuses.values()), statuses
    assert any(400 in seen or 422 in seen for seen in statuses.values()), statuses
