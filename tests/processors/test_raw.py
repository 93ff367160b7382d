"""Processor `raw` facts the runtime tests do not cover: its monthly partitions."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import redis
from psycopg import sql

from processors.raw import ensure_partitions, partition_name
from tests.commands import run_vidpulse, settings_env
from tests.factories import make_event, run_burst
from vidpulse.settings import Settings

# A month no other test writes to, so dropping its partition disturbs nobody.
MARCH_2001 = int(datetime(2001, 3, 15, tzinfo=UTC).timestamp() * 1000)


def append(client: redis.Redis, settings: Settings, events: list[dict[str, Any]]) -> None:
    for event in events:
        client.xadd(settings.stream, {"event": orjson.dumps(event), "received_at": MARCH_2001})


def test_events_of_any_month_get_their_partition(
    settings: Settings, db: psycopg.Connection[Any], redis_client: redis.Redis
) -> None:
    """An accepted event of a month without a partition creates it and lands there."""
    db.execute("DROP TABLE IF EXISTS video_events_y2001m03")
    event = make_event("play", ts=MARCH_2001)
    append(redis_client, settings, [event])
    run_burst(settings, "raw")
    row = db.execute(
        "SELECT tableoid::regclass::text FROM video_events WHERE event_id = %s",
        (event["event_id"],),
    ).fetchone()
    assert row == ("video_events_y2001m03",)


def test_partition_dropped_while_the_processor_runs_is_recreated(
    settings: Settings, db: psycopg.Connection[Any], redis_client: redis.Redis
) -> None:
    """Dropping an old month's partition (retention) does not turn that month's events to poison."""
    first, late = make_event("play", ts=MARCH_2001), make_event("pause", ts=MARCH_2001 + 1)
    append(redis_client, settings, [first])
    run_burst(settings, "raw")  # the processor has now seen the partition
    db.execute("DROP TABLE video_events_y2001m03")

    append(redis_client, settings, [late])
    run_burst(settings, "raw")
    assert redis_client.xlen(f"{settings.stream}:dlq") == 0
    ids = [r[0] for r in db.execute("SELECT event_id::text FROM video_events")]
    assert ids == [late["event_id"]]


def _partitions(db: psycopg.Connection[Any]) -> dict[str, int]:
    """{partition: rows} of video_events."""
    names = db.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'video_events'::regclass"
    ).fetchall()
    out: dict[str, int] = {}
    for (name,) in names:
        row = db.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name))).fetchone()
        out[name] = row[0] if row else 0
    return out


def _month_with_a_row(db: psycopg.Connection[Any], year: int, month: int) -> str:
    """A partition of the month holding one event; returns its name."""
    start = datetime(year, month, 1, tzinfo=UTC)
    name = partition_name(start)
    db.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
    with db.transaction():
        ensure_partitions(db, {start})
    db.execute(
        "INSERT INTO video_events (event_id, type, video_id, session_id, viewer_id, ts, "
        "received_at, payload) VALUES (gen_random_uuid(), 'play', 'v', 's', 'u', %s, %s, '{}')",
        (start + timedelta(days=3), start + timedelta(days=3)),
    )
    return name


def test_retention_drops_only_partitions_wholly_older_dry_run_changes_nothing(
    make_settings: Callable[..., Settings], db: psycopg.Connection[Any], redis_client: redis.Redis
) -> None:
    """Retention (CLI and the raw processor's upkeep) drops months wholly past it, no other."""
    # The cutoff falls inside June 2005: May 2005 is wholly older, June 2005 is not.
    days = (datetime.now(UTC) - datetime(2005, 6, 15, tzinfo=UTC)).days
    settings = make_settings(raw_retention_days=days)
    old = [_month_with_a_row(db, 2001, 1), _month_with_a_row(db, 2005, 5)]
    kept = [_month_with_a_row(db, 2005, 6), _month_with_a_row(db, 2010, 3)]
    before = _partitions(db)

    dry = run_vidpulse("retention", "--dry-run", env=settings_env(settings))
    assert dry.returncode == 0, dry.stderr
    for name in old:
        assert f"would drop {name} (1 rows)" in dry.stdout
    assert not any(name in dry.stdout for name in kept)
    assert _partitions(db) == before

    event = make_event("play")
    append(redis_client, settings, [event])
    run_burst(settings, "raw")  # its upkeep applies the retention
    after = _partitions(db)
    assert not set(old) & set(after)
    assert {name: after[name] for name in kept} == dict.fromkeys(kept, 1)
    first_kept = partition_name(datetime(2005, 6, 1, tzinfo=UTC))
    assert {name for name in before if name >= first_kept} <= set(after)
    assert all(name >= first_kept for name in after)

    _month_with_a_row(db, 2001, 1)
    now = run_vidpulse("retention", env=settings_env(settings))
    assert now.returncode == 0, now.stderr
    assert now.stdout.strip() == f"dropped {old[0]} (1 rows)"
    assert set(_partitions(db)) == set(after)
    for name in kept:
        db.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))


def test_payload_is_the_validated_event_with_the_requests_headers(
    settings: Settings, db: psycopg.Connection[Any], redis_client: redis.Redis
) -> None:
    """The payload is the validated event (defaults included) plus user_agent and referer,
    escaped as JSON, and never the viewer's signature, even when an entry carries one."""
    plain = make_event("progress", played=[[0.0, 4.5]], course_id='c "1"')
    signed = make_event("play", viewer_id="v-2", viewer_sig="ab" * 32)
    for event, extra in ((plain, {"referer": 'https://x.example/?q="a"\\b'}), (signed, {})):
        fields: dict[str, Any] = {"event": orjson.dumps(event), "received_at": MARCH_2001}
        redis_client.xadd(settings.stream, {**fields, "user_agent": 'UA "quoted"\t', **extra})
    run_burst(settings, "raw")
    rows = dict(db.execute("SELECT event_id::text, payload FROM video_events").fetchall())
    assert rows[plain["event_id"]] == {
        **plain,
        "is_preview": False,
        "user_agent": 'UA "quoted"\t',
        "referer": 'https://x.example/?q="a"\\b',
    }
    expected = {k: v for k, v in signed.items() if k != "viewer_sig"}
    assert rows[signed["event_id"]] == {
        **expected,
        "is_preview": False,
        "user_agent": 'UA "quoted"\t',
    }
