"""The one settings object, read from the environment once at start."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_TOKEN_LENGTH = 24


class ConfigError(Exception):
    """The environment holds a setting that cannot be used; the message is one line."""


class Settings(BaseSettings):
    """Every knob of a deployment. Built at the entry point and passed down."""

    model_config = SettingsConfigDict(env_prefix="VIDPULSE_", frozen=True, extra="ignore")

    redis_url: str = Field(
        "redis://localhost:6379/0", validation_alias=AliasChoices("REDIS_URL", "redis_url")
    )
    database_url: str = Field(
        "postgresql://postgres@localhost:5432/vidpulse",
        validation_alias=AliasChoices("DATABASE_URL", "database_url"),
    )
    stream: str = Field("vidpulse:events", min_length=1)
    segment_seconds: int = Field(10, gt=0)
    completion_threshold: float = Field(0.9, gt=0, le=1)
    dedupe_ttl_seconds: int = Field(86400, gt=0)
    max_deliveries: int = Field(5, ge=1)
    claim_idle_ms: int = Field(30000, ge=1)

    # ingest
    max_body_bytes: int = Field(256 * 1024, gt=0)
    max_events_per_request: int = Field(500, gt=0)
    max_stream_length: int = Field(
        1_000_000, gt=0, description="backlog (entries) above which the ingest answers 503"
    )
    cors_origins: str = Field("*", description="comma-separated origins, or *")
    legacy_session_ttl_seconds: int = Field(86400, gt=0)
    retry_after_seconds: int = Field(5, gt=0)

    # ingest edge: bounds, origins, signed viewers, rate limit, connection limits
    # (docs/security.md)
    max_duration_seconds: float = Field(43200, gt=0, allow_inf_nan=False)
    viewer_signing_key: SecretStr = Field(
        SecretStr(""), description="HMAC key of signed viewer ids; empty: off"
    )
    rate_limit: str = Field("", description="per client address, e.g. 600/minute; empty: off")
    trusted_proxy_hops: int = Field(0, ge=0, le=16)
    body_timeout_seconds: float = Field(10.0, gt=0, allow_inf_nan=False)
    ingest_limit_concurrency: int = Field(1000, gt=0)
    ingest_keep_alive_seconds: int = Field(5, gt=0)
    ingest_max_header_bytes: int = Field(16 * 1024, ge=1024)
    ingest_backlog: int = Field(2048, gt=0)

    # processors
    batch_size: int = Field(1000, gt=0)
    block_ms: int = Field(1000, ge=1)
    batch_linger_ms: int = Field(
        50,
        ge=0,
        le=5000,
        description="after a partial batch, how long a processor waits before reading again",
    )
    batches_in_flight: int = Field(
        2,
        ge=1,
        le=8,
        description="batches a processor applies at once, each on a connection of its own",
    )
    state_cache_sessions: int = Field(
        100_000,
        ge=0,
        description="sessions whose state a processor keeps in memory between batches",
    )
    applied_retention_days: int = Field(8, ge=7)
    shutdown_grace_seconds: float = Field(5.0, gt=0)

    # operations: consumers, dead letters, raw retention
    consumer_idle_ms: int = Field(
        3_600_000,
        ge=1,
        description="idle time after which a consumer with nothing pending is removed",
    )
    dlq_max_length: int = Field(100_000, gt=0, description="dead letters kept (oldest dropped)")
    raw_retention_days: int = Field(
        730, ge=1, description="video_events partitions wholly older than this are dropped"
    )

    # metrics: a processor's Prometheus port (0 = off) and the address it listens on
    metrics_port: int = Field(0, ge=0, le=65535)
    metrics_host: str = Field("127.0.0.1", min_length=1)

    # scale past one machine (docs/operations.md, "Redis Cluster")
    partitions: int = Field(
        1, ge=1, le=1024, description="streams the events are split over (hash-tagged)"
    )
    replica_acks: int = Field(
        0, ge=0, le=16, description="replicas that must hold events before a 202 (WAIT)"
    )
    replica_ack_timeout_ms: int = Field(1000, ge=1, le=60_000)
    consumer_heartbeat_ms: int = Field(
        2000, ge=50, description="how often a consumer says it is alive (partitions > 1)"
    )
    read_database_url: str = Field(
        "", description="replica the dashboard and analysts read; empty: DATABASE_URL"
    )

    # logging: "auto" is JSON unless stderr is a terminal
    log_format: str = Field("auto", pattern="^(auto|json|console)$")
    log_level: str = Field("info", pattern="^(?i)(debug|info|warning|error)$")

    # dashboard
    admin_tokens: str = Field("", description="comma-separated API/login tokens, >= 24 chars each")
    secret_key: str = Field("", description="session-cookie key; empty: derived from the tokens")
    cache_ttl_seconds: int = Field(300, gt=0)
    cache_local_ms: int = Field(250, ge=0, le=500, description="per-process memo of answers")
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = Field(8001, gt=0, lt=65536)

    @field_validator("admin_tokens")
    @classmethod
    def _tokens_long_enough(cls, value: str) -> str:
        short = [t for t in value.split(",") if t.strip() and len(t.strip()) < MIN_TOKEN_LENGTH]
        if short:
            raise ValueError(f"each token needs at least {MIN_TOKEN_LENGTH} characters")
        return value

    @field_validator("partitions")
    @classmethod
    def _partitioned_stream_has_no_braces(cls, value: int, info: ValidationInfo) -> int:
        stream = str(info.data.get("stream", ""))
        if value > 1 and ("{" in stream or "}" in stream):
            raise ValueError(
                "more than one needs a VIDPULSE_STREAM without { or } (the partitions' hash tags)"
            )
        return value

    @property
    def read_url(self) -> str:
        """The PostgreSQL the read side queries: the read replica when one is set."""
        return self.read_database_url or self.database_url

    @property
    def admin_token_list(self) -> list[str]:
        return [t.strip() for t in self.admin_tokens.split(",") if t.strip()]

    @property
    def session_secret(self) -> str:
        """VIDPULSE_SECRET_KEY, else a key derived from the tokens.

        Derived, not random: a restart keeps the sessions valid, and changing the
        tokens (revoking one) signs everybody out.
        """
        if self.secret_key:
            return self.secret_key
        material = "\n".join(sorted(self.admin_token_list)).encode()
        return hmac.new(b"vidpulse-dashboard-session", material, hashlib.sha256).hexdigest()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `environ` (default: the process environment).

        Raises ConfigError with a one-line reason naming the variable.
        """
        try:
            if environ is None:
                return cls()
            # Every field given explicitly: init values outrank the process environment,
            # which pydantic-settings would otherwise still read for the missing ones.
            values: dict[str, Any] = {n: f.default for n, f in cls.model_fields.items()}
            values.update({_ENV_NAMES[k]: v for k, v in environ.items() if k in _ENV_NAMES})
            return cls.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = str(first["loc"][0]) if first["loc"] else "?"
            raise ConfigError(f"{_env_name(field)}: {first['msg']}") from None

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit_parses(cls, value: str) -> str:
        if value.strip():
            from limits import parse_many

            try:
                parse_many(value)
            except ValueError:
                raise ValueError(
                    f"{value!r} is not a rate limit; write e.g. 600/minute or 10/second"
                ) from None
        return value.strip()


def _env_name(field: str) -> str:
    if field in ("redis_url", "REDIS_URL"):
        return "REDIS_URL"
    if field in ("database_url", "DATABASE_URL"):
        return "DATABASE_URL"
    return f"VIDPULSE_{field.upper()}"


_ENV_NAMES: dict[str, str] = {_env_name(name): name for name in Settings.model_fields}
