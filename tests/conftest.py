"""Real Redis and PostgreSQL for the suite, and factories for settings, clients and events.

Services: REDIS_URL / DATABASE_URL when set; else containers (testcontainers) when a
Docker engine answers; else throwaway local `redis-server` / `postgres` servers.
Every run gets its own database (dropped at the end); every test its own stream keys.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from psycopg import sql
from psycopg.conninfo import make_conninfo
from starlette.testclient import TestClient

from ingest.app import create_app
from tests.browser.servers import LiveIngest
from vidpulse import devservices
from vidpulse.database import migrate
from vidpulse.settings import Settings

# Tables are created by schema.sql; this empties them (not the schema's version) for a test.
_TRUNCATE = """
DO $$ DECLARE t text; BEGIN
  FOR t IN SELECT tablename FROM pg_tables
           WHERE schemaname = 'public' AND tablename NOT LIKE 'video_events_y%'
             AND tablename <> 'schema_migrations'
  LOOP EXECUTE format('TRUNCATE %I CASCADE', t); END LOOP;
END $$;
"""


@pytest.fixture(scope="session")
def service_urls() -> Iterator[tuple[str, str]]:
    """(redis url, postgres server url) of real servers for this run."""
    redis_url = os.environ.get("REDIS_URL")
    database_url = os.environ.get("DATABASE_URL")
    stack: list[Callable[[], None]] = []
    try:
        if not redis_url or not database_url:
            use_docker = devservices.docker_answers()
            # World-traversable: a root test run starts PostgreSQL as the postgres user.
            tmp = Path(tempfile.mkdtemp(prefix="vidpulse-test-"))
            tmp.chmod(0o755)
            stack.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
            if not redis_url:
                redis_url = _redis(use_docker, tmp, stack)
            if not database_url:
                database_url = _postgres(use_docker, tmp, stack)
        yield redis_url, database_url
    finally:
        for stop in reversed(stack):
            stop()


def _redis(use_docker: bool, tmp: Path, stack: list[Callable[[], None]]) -> str:
    if use_docker:
        from testcontainers.redis import RedisContainer

        container = RedisContainer("redis:7-alpine").start()
        stack.append(container.stop)
        return f"redis://{container.get_container_host_ip()}:{container.get_exposed_port(6379)}/0"
    server = devservices.start_redis(tmp / "redis")
    stack.append(server.stop)
    return server.url


def _postgres(use_docker: bool, tmp: Path, stack: list[Callable[[], None]]) -> str:
    if use_docker:
        from testcontainers.postgres import PostgresContainer

        container = PostgresContainer("postgres:16-alpine", driver=None).start()
        stack.append(container.stop)
        return str(container.get_connection_url())
    server = devservices.start_postgres(tmp / "postgres")
    stack.append(server.stop)
    return server.url


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[devservices.LocalCluster]:
    """A real Redis Cluster for this run: three masters, a replica each, on free ports.

    Needs the `redis-server` and `redis-cli` binaries (Redis 7: apt-get install
    redis-server); quick failover (cluster-node-timeout 1 s) for the failover tests.
    """
    tmp = Path(tempfile.mkdtemp(prefix="vidpulse-cluster-"))
    cluster = devservices.start_redis_cluster(tmp)
    yield cluster
    cluster.stop()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(service_urls: tuple[str, str]) -> Iterator[str]:
    """A fresh, migrated database for this test run, dropped at the end."""
    name = f"vidpulse_test_{uuid.uuid4().hex[:12]}"
    url = make_conninfo(service_urls[1], dbname=name)
    migrate(url)
    yield url
    with psycopg.connect(
        make_conninfo(service_urls[1], dbname="postgres"), autocommit=True
    ) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def make_settings(
    service_urls: tuple[str, str], database_url: str
) -> Iterator[Callable[..., Settings]]:
    """Factory: Settings for this test's own stream keys, with fast claim/block times.

    Tables are emptied before the test; the stream keys are deleted after it.
    """
    prefix = f"vptest:{uuid.uuid4().hex[:12]}"
    base: dict[str, Any] = {
        "redis_url": service_urls[0],
        "database_url": database_url,
        "stream": f"{prefix}:events",
        "claim_idle_ms": 300,
        "block_ms": 100,
        "batch_size": 100,
        "log_format": "console",
        # Tests write events of long-gone months; only retention tests ask for a retention.
        "raw_retention_days": 100 * 366,
    }
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(_TRUNCATE)

    # Every field given explicitly, so no VIDPULSE_* variable of the shell leaks in.
    defaults = {name: field.default for name, field in Settings.model_fields.items()}

    def factory(**overrides: Any) -> Settings:
        return Settings(**{**defaults, **base, **overrides})

    yield factory
    client = redis.Redis.from_url(service_urls[0])
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.redis_url)
    yield client
    client.close()


@pytest.fixture
def db(settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the run's database, for assertions."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def ingest(settings: Settings) -> Iterator[TestClient]:
    """The ingest app, running its lifespan, against the real Redis."""
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def live_ingest(settings: Settings) -> Iterator[LiveIngest]:
    """The real ingest app on its own port on a port of its own, served by uvicorn."""
    server = LiveIngest(settings)
    server.start()
    yield server
    server.stop()
