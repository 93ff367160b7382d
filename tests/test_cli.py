"""The `vidpulse` command line as operators run it: real subprocesses, real services."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import psycopg
import pytest
import redis
from psycopg import sql
from psycopg.conninfo import make_conninfo

from processors.streams import GroupStream, ensure_groups
from tests.commands import run_vidpulse, settings_env
from tests.factories import make_event
from vidpulse.keys import PROCESSOR_NAMES, Keys
from vidpulse.settings import Settings


def closed_port() -> int:
    """A local TCP port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def one_line(text: str) -> str:
    """Assert `text` is one non-empty line without a traceback; return it."""
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


# -- migrate ---------------------------------------------------------------------------


def test_migrate_creates_a_missing_database_and_is_idempotent(
    service_urls: tuple[str, str],
    make_settings: Callable[..., Settings],
    redis_client: redis.Redis,
) -> None:
    """`vidpulse migrate` creates the database, the schema and the groups; a rerun is a no-op."""
    name = f"vidpulse_clitest_{uuid.uuid4().hex[:10]}"
    url = make_conninfo(service_urls[1], dbname=name)
    settings = make_settings(database_url=url)
    try:
        first = run_vidpulse("migrate", env=settings_env(settings))
        assert first.returncode == 0, first.stderr
        assert "created and migrated" in first.stdout
        second = run_vidpulse("migrate", env=settings_env(settings))
        assert second.returncode == 0, second.stderr
        assert "created" not in second.stdout
        assert "migrated" in second.stdout
        with psycopg.connect(url) as conn:
            tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables")}
        assert {"video_events", "raw_applied"} <= tables
        groups = {g["name"].decode() for g in redis_client.xinfo_groups(settings.stream)}
        assert groups == set(PROCESSOR_NAMES)
    finally:
        admin = make_conninfo(service_urls[1], dbname="postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


# -- exit codes ------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["process", "raw"], ["migrate"]])
def test_bad_configuration_exits_2_with_a_one_line_reason(
    settings: Settings, command: list[str]
) -> None:
    """A setting that cannot be used exits 2 naming the variable, one line, no traceback."""
    result = run_vidpulse(*command, env=settings_env(settings, VIDPULSE_SEGMENT_SECONDS="abc"))
    assert result.returncode == 2
    assert "VIDPULSE_SEGMENT_SECONDS" in one_line(result.stderr)


@pytest.mark.parametrize(
    ("variable", "value", "command"),
    [
        ("REDIS_URL", "localhost:6379", "status"),
        ("REDIS_URL", "", "status"),
        ("DATABASE_URL", "nonsense", "migrate"),
    ],
)
def test_malformed_service_url_exits_2_naming_the_variable(
    settings: Settings, variable: str, value: str, command: str
) -> None:
    """A URL that cannot be parsed is a configuration error (2), not a traceback."""
    result = run_vidpulse(command, env=settings_env(settings, **{variable: value}))
    assert result.returncode == 2
    assert variable in one_line(result.stderr)


def test_unknown_processor_exits_2_listing_the_known_ones(settings: Settings) -> None:
    """`vidpulse process nope` exits 2 with one line naming the processors there are."""
    result = run_vidpulse("process", "nope", env=settings_env(settings))
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert "nope" in line
    assert "raw" in line


def test_unknown_command_exits_2(settings: Settings) -> None:
    """An unknown subcommand is bad usage: exit 2, no traceback."""
    result = run_vidpulse("frobnicate", env=settings_env(settings))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "frobnicate" in result.stderr


@pytest.mark.parametrize(
    "command", [["status", "--json"], ["dlq", "replay"], ["forget", "viewer-1"]]
)
def test_unreachable_redis_exits_1_with_one_line(settings: Settings, command: list[str]) -> None:
    """Commands that need Redis exit 1 with one line when it does not answer."""
    env = settings_env(settings, REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0")
    result = run_vidpulse(*command, env=env)
    assert result.returncode == 1
    assert "cannot reach Redis" in one_line(result.stderr)


def test_migrate_with_unreachable_postgresql_exits_1_with_one_line(settings: Settings) -> None:
    """`vidpulse migrate` exits 1 with one line when PostgreSQL does not answer."""
    env = settings_env(
        settings, DATABASE_URL=f"postgresql://postgres@127.0.0.1:{closed_port()}/vidpulse"
    )
    result = run_vidpulse("migrate", env=env)
    assert result.returncode == 1
    assert "cannot reach PostgreSQL" in one_line(result.stderr)


def test_migrate_with_unreachable_redis_exits_1_with_one_line(settings: Settings) -> None:
    """`vidpulse migrate` needs Redis for the groups: exit 1, one line, when it is away."""
    env = settings_env(settings, REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0")
    result = run_vidpulse("migrate", env=env)
    assert result.returncode == 1
    assert "cannot reach Redis" in one_line(result.stderr)


# -- status and dead letters -----------------------------------------------------------


def _busy_stream(client: redis.Redis, settings: Settings) -> None:
    """10 entries; raw: a consumer holding 3 pending (4 read, 1 acked), 6 unread; 1 dead letter."""
    ensure_groups(client, settings.stream)
    for _ in range(10):
        client.xadd(settings.stream, {"event": orjson.dumps(make_event()), "received_at": 1})
    read = client.xreadgroup("raw", "worker-a", {settings.stream: ">"}, count=4)
    client.xack(settings.stream, "raw", read[0][1][0][0])
    client.xadd(
        f"{settings.stream}:dlq",
        {"event": b"{}", "error": "boom", "group": "raw", "original_id": "1-0"},
    )


def test_status_json_reports_each_group(settings: Settings, redis_client: redis.Redis) -> None:
    """`status --json`: per group consumers, pending, lag, oldest pending age, dead letters."""
    _busy_stream(redis_client, settings)
    result = run_vidpulse("status", "--json", env=settings_env(settings))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["stream"] == settings.stream
    assert report["length"] == 10
    assert report["dead_letters"] == 1
    groups: dict[str, Any] = {g["group"]: g for g in report["groups"]}
    assert set(groups) == set(PROCESSOR_NAMES)
    raw = groups["raw"]
    assert (raw["consumers"], raw["pending"], raw["lag"], raw["dead_letters"]) == (1, 3, 6, 1)
    assert isinstance(raw["oldest_pending_age_s"], int | float)
    assert raw["oldest_pending_age_s"] >= 0
    heatmap = groups["heatmap"]
    assert (heatmap["consumers"], heatmap["pending"], heatmap["lag"]) == (0, 0, 10)
    assert heatmap["oldest_pending_age_s"] is None
    assert heatmap["dead_letters"] == 0


def test_status_table_shows_each_group_on_one_row(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """Plain `status` prints a header and one row per group with the same figures."""
    _busy_stream(redis_client, settings)
    result = run_vidpulse("status", env=settings_env(settings))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert "10 entries" in lines[0]
    assert "1 dead letters" in lines[0]
    header = lines[1]
    for column in ("group", "consumers", "pending", "lag", "oldest pending", "dead letters"):
        assert column in header
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert set(rows) == set(PROCESSOR_NAMES)
    consumers, pending, lag, oldest, dead = rows["raw"]
    assert (consumers, pending, lag, dead) == ("1", "3", "6", "1")
    assert oldest.endswith("s")
    assert rows["metrics"] == ["0", "0", "10", "-", "0"]


def test_status_of_a_new_deployment_says_there_are_no_groups(settings: Settings) -> None:
    """Before anything ran, status says there are no groups yet and how to get them."""
    result = run_vidpulse("status", env=settings_env(settings))
    assert result.returncode == 0, result.stderr
    assert "no consumer groups yet" in result.stdout
    as_json = run_vidpulse("status", "--json", env=settings_env(settings))
    assert json.loads(as_json.stdout)["groups"] == []


def test_dlq_list_prints_one_json_object_per_dead_letter(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """`dlq list` prints each dead letter as a JSON line with its id, group and error."""
    _busy_stream(redis_client, settings)
    result = run_vidpulse("dlq", "list", env=settings_env(settings))
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.strip().splitlines()
    letter = json.loads(line)
    assert letter["group"] == "raw"
    assert letter["error"] == "boom"
    assert letter["original_id"] == "1-0"
    assert "id" in letter


def test_dlq_replay_reappends_an_entry_dead_lettered_by_several_groups_once(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """An entry every group dead-lettered goes back on the stream once, not once per group."""
    ensure_groups(redis_client, settings.stream)
    poison = {b"event": b"{broken", b"received_at": b"1"}
    redis_client.xadd(settings.stream, poison)  # type: ignore[arg-type]
    for group in ("raw", "metrics"):
        [[_, [entry]]] = redis_client.xreadgroup(group, "c", {settings.stream: ">"})
        GroupStream(redis_client, Keys(settings.stream), group, "c").dead_letter(
            entry, "does not decode", 5
        )
    assert redis_client.xlen(f"{settings.stream}:dlq") == 2

    result = run_vidpulse("dlq", "replay", env=settings_env(settings))
    assert result.returncode == 0, result.stderr
    assert "replayed 2 dead letters" in result.stdout
    assert redis_client.xlen(f"{settings.stream}:dlq") == 0
    assert [fields for _, fields in redis_client.xrange(settings.stream)] == [poison, poison]


def _dead_letters(client: redis.Redis, settings: Settings) -> list[tuple[str, dict[bytes, bytes]]]:
    return [(i.decode(), f) for i, f in client.xrange(f"{settings.stream}:dlq")]


def _mixed_dead_letters(client: redis.Redis, settings: Settings) -> dict[str, str]:
    """Dead letters good, broken (no original fields), good, broken; {id: kind}."""
    dlq = f"{settings.stream}:dlq"
    made: dict[str, str] = {}
    for n, kind in enumerate(("good", "broken", "good", "broken")):
        fields: dict[str, Any] = {"error": "boom", "group": "raw", "original_id": f"{n + 1}-0"}
        if kind == "good":
            fields.update(event=orjson.dumps(make_event()), received_at=1)
        made[client.xadd(dlq, fields).decode()] = kind
    return made


def test_dlq_replay_replays_the_good_and_reports_each_broken_dead_letter(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """Replay goes past broken dead letters: good ones back, broken named, kept, exit 1."""
    made = _mixed_dead_letters(redis_client, settings)
    result = run_vidpulse("dlq", "replay", env=settings_env(settings))
    assert result.returncode == 1
    assert "replayed 2 dead letters" in result.stdout
    broken = sorted(i for i, kind in made.items() if kind == "broken")
    for entry_id in broken:
        assert f"not replayed {entry_id}: none of the original entry's fields" in result.stdout
    assert "could not be replayed" in one_line(result.stderr)
    assert "cannot reach" not in result.stderr
    assert sorted(i for i, _ in _dead_letters(redis_client, settings)) == broken
    assert redis_client.xlen(settings.stream) == 2


def test_dlq_drop_by_id_by_group_and_all(settings: Settings, redis_client: redis.Redis) -> None:
    """`dlq drop ID`, `--group G` and `--all` remove exactly those dead letters."""
    env = settings_env(settings)
    made = list(_mixed_dead_letters(redis_client, settings))
    redis_client.xadd(f"{settings.stream}:dlq", {"error": "x", "group": "metrics"})

    result = run_vidpulse("dlq", "drop", made[1], made[3], env=env)
    assert result.returncode == 0, result.stderr
    assert "dropped 2 dead letters" in result.stdout
    remaining = [i for i, _ in _dead_letters(redis_client, settings)]
    assert remaining[:2] == [made[0], made[2]]
    assert len(remaining) == 3

    result = run_vidpulse("dlq", "drop", "--group", "metrics", env=env)
    assert "dropped 1 dead letters" in result.stdout
    assert [i for i, _ in _dead_letters(redis_client, settings)] == [made[0], made[2]]

    result = run_vidpulse("dlq", "drop", "--all", env=env)
    assert "dropped 2 dead letters" in result.stdout
    assert _dead_letters(redis_client, settings) == []


@pytest.mark.parametrize(
    "args",
    [["drop"], ["drop", "--all", "--group", "raw"], ["drop", "not-an-id"], ["list", "--all"]],
)
def test_dlq_bad_usage_exits_2_with_one_line(settings: Settings, args: list[str]) -> None:
    """`dlq drop` needs exactly one of ids, --group, --all, and ids that are stream ids."""
    result = run_vidpulse("dlq", *args, env=settings_env(settings))
    assert result.returncode == 2
    one_line(result.stderr)
