"""Fixtures of the ingest tests."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from ingest.app import create_app
from vidpulse.settings import Settings

ClientFactory = Callable[..., tuple[TestClient, Settings]]


@pytest.fixture
def make_client(make_settings: Callable[..., Settings]) -> Iterator[ClientFactory]:
    """Factory: an ingest TestClient (lifespan running) for settings with these overrides."""
    with contextlib.ExitStack() as stack:

        def factory(**overrides: Any) -> tuple[TestClient, Settings]:
            settings = make_settings(**overrides)
            return stack.enter_context(TestClient(create_app(settings))), settings

        yield factory
