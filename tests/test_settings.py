"""Settings.from_env: the environment variables of docs/configuration.md, read into one object."""

from __future__ import annotations

import pydantic
import pytest

from vidpulse.settings import ConfigError, Settings


def test_empty_environment_gives_the_documented_defaults() -> None:
    """With nothing set, every documented environment variable has its documented default."""
    settings = Settings.from_env({})
    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.database_url == "postgresql://postgres@localhost:5432/vidpulse"
    assert settings.stream == "vidpulse:events"
    assert settings.segment_seconds == 10
    assert settings.completion_threshold == 0.9
    assert settings.dedupe_ttl_seconds == 86400
    assert settings.max_deliveries == 5
    assert settings.claim_idle_ms == 30000
    assert settings.max_body_bytes == 256 * 1024
    assert settings.max_events_per_request == 500


def test_every_documented_variable_is_read() -> None:
    """Each documented variable, and the processor knobs the tests use, reach their field."""
    settings = Settings.from_env(
        {
            "REDIS_URL": "redis://cache:6380/2",
            "DATABASE_URL": "postgresql://u@db:5433/x",
            "VIDPULSE_STREAM": "acme:events",
            "VIDPULSE_SEGMENT_SECONDS": "5",
            "VIDPULSE_COMPLETION_THRESHOLD": "0.75",
            "VIDPULSE_DEDUPE_TTL_SECONDS": "60",
            "VIDPULSE_MAX_DELIVERIES": "3",
            "VIDPULSE_CLAIM_IDLE_MS": "250",
            "VIDPULSE_BATCH_SIZE": "10",
            "VIDPULSE_BLOCK_MS": "20",
            "VIDPULSE_MAX_STREAM_LENGTH": "7",
        }
    )
    assert settings.redis_url == "redis://cache:6380/2"
    assert settings.database_url == "postgresql://u@db:5433/x"
    assert settings.stream == "acme:events"
    assert settings.segment_seconds == 5
    assert settings.completion_threshold == 0.75
    assert settings.dedupe_ttl_seconds == 60
    assert settings.max_deliveries == 3
    assert settings.claim_idle_ms == 250
    assert settings.batch_size == 10
    assert settings.block_ms == 20
    assert settings.max_stream_length == 7


def test_unrelated_variables_are_ignored() -> None:
    """Variables outside vidpulse's names (or misspelt ones) do not break parsing."""
    settings = Settings.from_env({"PATH": "/bin", "VIDPULSE_NOPE": "1", "stream": "x"})
    assert settings.stream == "vidpulse:events"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VIDPULSE_SEGMENT_SECONDS", "abc"),
        ("VIDPULSE_SEGMENT_SECONDS", "0"),
        ("VIDPULSE_COMPLETION_THRESHOLD", "1.5"),
        ("VIDPULSE_COMPLETION_THRESHOLD", "0"),
        ("VIDPULSE_DEDUPE_TTL_SECONDS", "-1"),
        ("VIDPULSE_MAX_DELIVERIES", "0"),
        ("VIDPULSE_CLAIM_IDLE_MS", "soon"),
        ("VIDPULSE_STREAM", ""),
        ("VIDPULSE_LOG_FORMAT", "xml"),
        ("VIDPULSE_RATE_LIMIT", "lots"),
        ("VIDPULSE_MAX_DURATION_SECONDS", "inf"),
        ("VIDPULSE_BODY_TIMEOUT_SECONDS", "0"),
        ("VIDPULSE_TRUSTED_PROXY_HOPS", "-1"),
    ],
)
def test_bad_value_is_a_one_line_config_error_naming_the_variable(name: str, value: str) -> None:
    """A value that cannot be used raises ConfigError, one line, starting with the variable."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: value})
    message = str(caught.value)
    assert message.startswith(f"{name}: ")
    assert "\n" not in message


def test_explicit_mapping_does_not_read_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """from_env(mapping) uses the mapping only, whatever the process environment holds."""
    monkeypatch.setenv("VIDPULSE_BATCH_SIZE", "7")
    monkeypatch.setenv("REDIS_URL", "redis://elsewhere:1/0")
    settings = Settings.from_env({})
    assert settings.batch_size == 1000
    assert settings.redis_url == "redis://localhost:6379/0"


def test_process_environment_is_read_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """from_env() with no mapping reads the process environment."""
    monkeypatch.setenv("VIDPULSE_BATCH_SIZE", "7")
    monkeypatch.setenv("REDIS_URL", "redis://elsewhere:1/0")
    settings = Settings.from_env()
    assert settings.batch_size == 7
    assert settings.redis_url == "redis://elsewhere:1/0"


def test_bad_process_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad value in the process environment is reported by its variable name."""
    monkeypatch.setenv("VIDPULSE_SEGMENT_SECONDS", "abc")
    with pytest.raises(ConfigError, match=r"^VIDPULSE_SEGMENT_SECONDS: "):
        Settings.from_env()


def test_settings_are_frozen() -> None:
    """The one settings object cannot be changed after it is built."""
    settings = Settings.from_env({})
    with pytest.raises(pydantic.ValidationError):
        settings.stream = "other"  # type: ignore[misc]


def test_cors_origins_split_on_commas() -> None:
    """VIDPULSE_CORS_ORIGINS is a comma-separated list; blanks are dropped."""
    settings = Settings.from_env({"VIDPULSE_CORS_ORIGINS": "https://a.example, https://b.example,"})
    assert settings.cors_origin_list == ["https://a.example", "https://b.example"]
