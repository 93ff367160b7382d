"""The bench's own corner of Redis and PostgreSQL: a dedicated database and key prefix.

Everything a bench run creates lives in the database `vidpulse_bench_<run id>` and under
the Redis key prefix `vpbench:<run id>:`; `BenchEnv.cleanup()` removes both. Two runs
on one machine (and one PostgreSQL) never touch each other's data.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import redis
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from vidpulse.database import migrate
from vidpulse.settings import Settings

BENCH_DATABASE = "vidpulse_bench"  # the prefix of each run's own database

# Every table the schema creates except partitions and the record of applied migrations
# (without it, processors wait for `vidpulse migrate`); emptied between measurements.
_TRUNCATE_ALL = """
DO $$ DECLARE t text; BEGIN
  FOR t IN SELECT tablename FROM pg_tables
           WHERE schemaname = 'public' AND tablename NOT LIKE 'video_events_y%'
             AND tablename <> 'schema_migrations'
  LOOP EXECUTE format('TRUNCATE %I CASCADE', t); END LOOP;
END $$;
"""


@dataclass
class BenchEnv:
    """URLs and key names of one bench run."""

    redis_url: str
    server_url: str
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @classmethod
    def from_environ(cls) -> BenchEnv:
        redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
        server_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
        return cls(redis_url=redis_url, server_url=server_url)

    @property
    def prefix(self) -> str:
        return f"vpbench:{self.run_id}"

    @property
    def database_url(self) -> str:
        return make_conninfo(self.server_url, dbname=self.database)

    @property
    def database(self) -> str:
        return f"{BENCH_DATABASE}_{self.run_id}"

    def stream(self, name: str) -> str:
        """A stream key of this run (every other key of it shares the prefix)."""
        return f"{self.prefix}:{name}"

    def settings(self, stream: str, **overrides: Any) -> Settings:
        """Settings for a component under test, on this run's database and `stream`."""
        base: dict[str, Any] = {
            "redis_url": self.redis_url,
            "database_url": self.database_url,
            "stream": stream,
            "log_format": "json",
            "log_level": "warning",
        }
        return Settings(**{**base, **overrides})

    def environ(self, settings: Settings) -> dict[str, str]:
        """Process environment that makes a child process build `settings`."""
        env = dict(os.environ)
        env["REDIS_URL"] = settings.redis_url
        env["DATABASE_URL"] = settings.database_url
        for name, value in settings.model_dump().items():
            if name in ("redis_url", "database_url"):
                continue
            env[f"VIDPULSE_{name.upper()}"] = str(value)
        return env

    # -- lifecycle ----------------------------------------------------------------

    def prepare(self) -> None:
        """(Re)create the bench database from schema.sql."""
        self.drop_database()
        migrate(self.database_url)

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(self.database_url, **kwargs)

    def truncate_all(self) -> None:
        with self.connect(autocommit=True) as conn:
            conn.execute(_TRUNCATE_ALL)

    def delete_keys(self, keys: Iterable[str] | None = None) -> None:
        """Delete this run's Redis keys (all of them by default)."""
        client = self.redis()
        try:
            found = (
                list(keys)
                if keys is not None
                else [k.decode() for k in client.scan_iter(match=f"{self.prefix}:*", count=1000)]
            )
            for i in range(0, len(found), 500):
                client.delete(*found[i : i + 500])
        finally:
            client.close()

    def drop_database(self) -> None:
        admin = make_conninfo(self.server_url, dbname="postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(self.database)
                )
            )

    def cleanup(self) -> None:
        self.delete_keys()
        self.drop_database()

    def describe(self) -> dict[str, str]:
        params = conninfo_to_dict(self.database_url)
        return {
            "redis": self.redis_url,
            "postgres": f"{params.get('host', '')}:{params.get('port', 5432)}/{self.database}",
            "key_prefix": self.prefix,
        }
