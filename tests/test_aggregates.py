"""The aggregate tables against the reference model, under retries, reordering, crashes
and concurrent replicas.

Traffic comes from the audience generator; what the processors must reproduce is
computed by tests/reference.py from the distinct events that reached the stream.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import hypothesis
import orjson
import psycopg
import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row
from starlette.testclient import TestClient
from structlog.testing import capture_logs

from processors import ledger
from processors.base import Entry
from processors.registry import PROCESSORS
from tests import reference
from tests.factories import run_burst
from tests.reference import Arrival
from tools.audience import USER_AGENTS, Session, flatten, generate_audience
from vidpulse.events import EVENT_TYPES, now_ms, parse_event
from vidpulse.keys import Keys
from vidpulse.settings import Settings

AGGREGATORS = ("heatmap", "progress", "metrics")
Send = tuple[dict[str, Any], str, str | None]  # event, User-Agent, Referer


# -- traffic ---------------------------------------------------------------------


def audience(seed: int, *, videos: int, viewers: int, sessions: int) -> list[Session]:
    return generate_audience(
        random.Random(seed), videos=videos, viewers=viewers, sessions=sessions, now_ms=now_ms()
    )


def sends(
    sessions: list[Session], rng: random.Random, *, retries: float, shuffle: bool
) -> list[Send]:
    """What clients send: every event, a share of them again (same event_id), in an order.

    `shuffle` mixes everything (a session's events arrive in any order); otherwise
    events come in ts order, a retry right after a later event.
    """
    by_id = {e["event_id"]: s for s in sessions for e in s.events}
    events = (
        flatten([s.events for s in sessions])
        if not shuffle
        else [e for s in sessions for e in s.events]
    )
    out: list[Send] = [
        (e, by_id[e["event_id"]].user_agent, by_id[e["event_id"]].referer) for e in events
    ]
    for i in sorted(rng.sample(range(len(out)), int(len(out) * retries)), reverse=True):
        out.insert(min(len(out), i + rng.randint(1, 30)), out[i])
    if shuffle:
        rng.shuffle(out)
    return out


def post(ingest: TestClient, items: list[Send], rng: random.Random) -> int:
    """POST the events through the ingest, in requests of 1-40 events with the right headers.

    Returns how many requests were made.
    """
    queues: defaultdict[tuple[str, str | None], list[dict[str, Any]]] = defaultdict(list)
    for event, ua, referer in items:
        queues[(ua, referer)].append(event)
    keys = list(queues)
    requests = 0
    while keys:
        key = rng.choice(keys)
        queue = queues[key]
        n = rng.randint(1, 40)
        chunk, queues[key] = queue[:n], queue[n:]
        if not queues[key]:
            keys.remove(key)
        headers = {"User-Agent": key[0]}
        if key[1]:
            headers["Referer"] = key[1]
        response = ingest.post("/v1/events", json=chunk, headers=headers)
        assert response.status_code == 202, response.text
        assert not response.json()["rejected"]
        requests += 1
    return requests


def xadd(client: redis.Redis, settings: Settings, items: list[Send]) -> None:
    """Append the events straight to the stream, in the ingest's entry format."""
    pipe = client.pipeline(transaction=False)
    for event, ua, referer in items:
        fields = {"event": orjson.dumps(event), "received_at": now_ms(), "user_agent": ua}
        if referer:
            fields["referer"] = referer
        pipe.xadd(settings.stream, fields)  # type: ignore[arg-type]
    pipe.execute()


def duplicate_entries(client: redis.Redis, settings: Settings, rng: random.Random, n: int) -> None:
    """Append byte-identical copies of `n` random stream entries (an ingest re-append)."""
    entries: Any = client.xrange(settings.stream)
    pipe = client.pipeline(transaction=False)
    for _, fields in rng.sample(entries, min(n, len(entries))):
        pipe.xadd(settings.stream, fields)
    pipe.execute()


def stream_arrivals(client: redis.Redis, settings: Settings) -> tuple[list[Arrival], int]:
    """The distinct events in the stream (first copy of each event_id), and the entry count.

    With partitions, partition by partition: that keeps each session's order (a session's
    events are all in one partition), the only order the model's results depend on.
    """
    seen: dict[str, Arrival] = {}
    order = 0
    for stream in Keys.of(settings).partition_streams:
        entries: Any = client.xrange(stream)
        for _, fields in entries:
            event = orjson.loads(fields[b"event"])
            ua, ref = fields.get(b"user_agent"), fields.get(b"referer")
            seen.setdefault(
                event["event_id"],
                Arrival(
                    event,
                    ua.decode() if ua else None,
                    ref.decode() if ref else None,
                    order=order,
                    received_ms=int(fields[b"received_at"]),
                ),
            )
            order += 1
    return list(seen.values()), order


# -- comparison -------------------------------------------------------------------


@dataclass
class Comparison:
    """Values compared between the database and the model, and the mismatches."""

    compared: int = 0
    mismatches: list[str] | None = None

    def __post_init__(self) -> None:
        self.mismatches = []

    def check(self, table: str, key: Any, column: str, got: Any, want: Any) -> None:
        self.compared += 1
        if not same(got, want):
            assert self.mismatches is not None
            self.mismatches.append(f"{table}[{key}].{column}: database {got!r}, model {want!r}")

    def report(self, label: str) -> None:
        assert self.mismatches is not None
        print(f"\n{label}: compared {self.compared} values, {len(self.mismatches)} mismatched")
        for line in self.mismatches[:20]:
            print("  " + line)
        assert not self.mismatches, f"{len(self.mismatches)} of {self.compared} values differ"


def same(got: Any, want: Any) -> bool:
    if isinstance(got, float) or isinstance(want, float):
        return (
            got is not None
            and want is not None
            and math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-6)
        )
    return bool(got == want)


def compare_rows(
    cmp: Comparison,
    table: str,
    got: dict[Any, dict[str, Any]],
    want: dict[Any, dict[str, Any]],
    zero: Callable[[Any], dict[str, Any]] | None = None,
) -> None:
    """Every column of every row of `want` against `got`, and no extra rows in `got`.

    With `zero`, a missing row on either side means that row of zeros.
    """
    for key in sorted(set(got) | set(want), key=repr):
        g, w = got.get(key), want.get(key)
        if zero is not None:
            g, w = g or zero(key), w or zero(key)
        if g is None or w is None:
            cmp.check(table, key, "<row>", g is not None, w is not None)
            continue
        for column, value in w.items():
            cmp.check(table, key, column, g[column], value)


def fetch(
    db: psycopg.Connection[Any], query: str, key: tuple[str, ...]
) -> dict[Any, dict[str, Any]]:
    with db.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query).fetchall()
    out: dict[Any, dict[str, Any]] = {}
    for row in rows:
        k = tuple(row.pop(c) for c in key)
        out[k[0] if len(k) == 1 else k] = row
    return out


def compare_processor(
    cmp: Comparison,
    name: str,
    db: psycopg.Connection[Any],
    arrivals: list[Arrival],
    settings: Settings,
) -> None:
    """Compare the tables processor `name` owns with the model."""
    if name == "heatmap":
        size = settings.segment_seconds
        compare_rows(
            cmp,
            "video_heatmap",
            fetch(db, "SELECT * FROM video_heatmap", ("video_id", "segment_start")),
            reference.heatmap(arrivals, size),
            zero=lambda key: {
                "segment_end": key[1] + size,
                "views": 0,
                "watch_seconds": 0.0,
                "drop_offs": 0,
            },
        )
    elif name == "progress":
        sessions = reference.sessions(arrivals, settings.completion_threshold)
        compare_rows(
            cmp,
            "video_sessions",
            fetch(db, "SELECT * FROM video_sessions", ("session_id",)),
            sessions,
        )
        compare_rows(
            cmp,
            "video_watch_progress",
            fetch(db, "SELECT * FROM video_watch_progress", ("viewer_id", "video_id")),
            reference.watch_progress(arrivals, sessions),
        )
    else:
        compare_rows(
            cmp,
            "video_metrics",
            fetch(db, "SELECT * FROM video_metrics", ("video_id",)),
            reference.metrics(arrivals),
        )
        daily: dict[Any, dict[str, Any]] = fetch(
            db, "SELECT * FROM video_metrics_daily", ("video_id", "day")
        )
        want: dict[tuple[str, date], Any] = reference.metrics_daily(arrivals)
        compare_rows(cmp, "video_metrics_daily", daily, dict(want))


# -- tests ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shuffle", "segment_seconds", "threshold", "batch_size"),
    [(True, 10, 0.9, 37), (False, 10, 0.9, 50), (True, 7, 0.75, 200)],
    ids=["shuffled", "in-order", "shuffled-S7-t75"],
)
def test_tables_match_the_reference_model(
    make_settings: Callable[..., Settings],
    ingest: TestClient,
    redis_client: redis.Redis,
    db: psycopg.Connection[Any],
    shuffle: bool,
    segment_seconds: int,
    threshold: float,
    batch_size: int,
) -> None:
    """Every value of every aggregate table equals the model, whatever the retries and order;
    none of this real playback is refused or cut by the credit rule."""
    settings = make_settings(
        segment_seconds=segment_seconds, completion_threshold=threshold, batch_size=batch_size
    )
    rng = random.Random(1000 + segment_seconds)
    crowd = audience(rng.randint(0, 1 << 30), videos=12, viewers=60, sessions=220)
    items = sends(crowd, rng, retries=0.1, shuffle=shuffle)
    requests = post(ingest, items, rng)
    duplicate_entries(redis_client, settings, rng, 200)
    arrivals, entries = stream_arrivals(redis_client, settings)
    print(
        f"\n{len(items)} events sent in {requests} requests; {entries} stream entries, "
        f"{len(arrivals)} distinct events"
    )
    # Real playback is never refused nor cut by the credit rule, in any arrival order
    # (bots' events, about 1% of the audience, count in no session).
    credited = reference.credited(arrivals)
    humans = [a for a in arrivals if not a.is_bot]
    assert humans
    assert len(credited) == len(humans)
    for a, ranges in credited:
        full = reference.length(reference.played(a.event))
        assert math.isclose(reference.length(ranges), full, abs_tol=1e-9), a.event
    with capture_logs() as logs:
        for name in AGGREGATORS:
            run_burst(settings, name)
    trouble = [e for e in logs if e["log_level"] in ("warning", "error", "critical")]
    assert not trouble, trouble[:5]
    cmp = Comparison()
    for name in AGGREGATORS:
        compare_processor(cmp, name, db, arrivals, settings)
    cmp.report(f"{'shuffled' if shuffle else 'in order'}, S={segment_seconds}, t={threshold}")


def _subprocess_env(
    settings: Settings, application_name: str, log_level: str = "warning"
) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": settings.redis_url,
        "DATABASE_URL": make_conninfo(settings.database_url, application_name=application_name),
        "VIDPULSE_STREAM": settings.stream,
        "VIDPULSE_CLAIM_IDLE_MS": str(settings.claim_idle_ms),
        "VIDPULSE_BATCH_SIZE": str(settings.batch_size),
        "VIDPULSE_BLOCK_MS": str(settings.block_ms),
        "VIDPULSE_SEGMENT_SECONDS": str(settings.segment_seconds),
        "VIDPULSE_COMPLETION_THRESHOLD": str(settings.completion_threshold),
        "VIDPULSE_LOG_FORMAT": "json",
        "VIDPULSE_LOG_LEVEL": log_level,
    }


def _applied(db: psycopg.Connection[Any], name: str) -> int:
    row = db.execute(f"SELECT count(*) FROM {name}_applied").fetchone()
    assert row is not None
    return int(row[0])


def _writing_transaction_open(db: psycopg.Connection[Any], application_name: str) -> bool:
    row = db.execute(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE application_name = %s AND backend_xid IS NOT NULL",
        (application_name,),
    ).fetchone()
    return bool(row and row[0])


def _pending(client: redis.Redis, settings: Settings, group: str, consumer: str) -> int:
    for info in client.xinfo_consumers(settings.stream, group):
        name = info["name"].decode() if isinstance(info["name"], bytes) else info["name"]
        if name == consumer:
            return int(info["pending"])
    return 0


@pytest.mark.parametrize("name", AGGREGATORS)
def test_processor_killed_mid_batch_stays_exact(
    make_settings: Callable[..., Settings],
    redis_client: redis.Redis,
    db: psycopg.Connection[Any],
    name: str,
) -> None:
    """SIGKILL while a batch's transaction is open, three times, loses and doubles nothing."""
    settings = make_settings(batch_size=150)
    rng = random.Random(7)
    crowd = audience(11, videos=15, viewers=300, sessions=700)
    items = sends(crowd, rng, retries=0.05, shuffle=True)
    xadd(redis_client, settings, items)
    arrivals, entries = stream_arrivals(redis_client, settings)
    app = f"victim-{name}-{os.getpid()}"
    env = _subprocess_env(settings, app)
    kills: list[tuple[int, bool, int]] = []  # (applied at kill, txn open, pending after)
    for share in (0.1, 0.4, 0.7):
        floor = int(len(arrivals) * share) + rng.randint(0, 100)
        proc = subprocess.Popen(
            [sys.executable, "-m", "vidpulse", "process", name, "--consumer", "victim"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None:
                if _applied(db, name) >= floor and _writing_transaction_open(db, app):
                    break
            open_txn = _writing_transaction_open(db, app)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
        kills.append(
            (_applied(db, name), open_txn, _pending(redis_client, settings, name, "victim"))
        )
    run_burst(settings, name, consumer="victim")
    print(
        f"\n{name}: {entries} entries, {len(arrivals)} distinct events; kills at "
        + ", ".join(f"{a} applied (txn open: {o}, pending after: {p})" for a, o, p in kills)
    )
    assert any(open_txn and pending for _, open_txn, pending in kills)
    assert all(applied < len(arrivals) for applied, _, _ in kills)
    cmp = Comparison()
    compare_processor(cmp, name, db, arrivals, settings)
    cmp.report(f"{name} after {len(kills)} kills")


def test_concurrent_replicas_stay_exact(
    make_settings: Callable[..., Settings],
    redis_client: redis.Redis,
    db: psycopg.Connection[Any],
) -> None:
    """Two replicas of each processor sharing one group, on hot rows, give exact tables."""
    settings = make_settings(batch_size=40)
    rng = random.Random(21)
    crowd = audience(23, videos=4, viewers=40, sessions=400)
    items = sends(crowd, rng, retries=0.1, shuffle=True)
    xadd(redis_client, settings, items)
    arrivals, entries = stream_arrivals(redis_client, settings)
    procs = []
    for name in AGGREGATORS:
        for replica in (1, 2):
            env = _subprocess_env(settings, f"replica-{name}-{replica}", "debug")
            procs.append(
                (
                    name,
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "vidpulse",
                            "process",
                            name,
                            "--consumer",
                            f"r{replica}",
                            "--burst",
                        ],
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                    ),
                )
            )
    retried: defaultdict[str, int] = defaultdict(int)
    batches: defaultdict[str, list[int]] = defaultdict(list)
    for name, proc in procs:
        _, err = proc.communicate(timeout=280)
        assert proc.returncode == 0, err.decode()[-2000:]
        retried[name] += err.count(b"database_error")
        batches[name].append(err.count(b"batch_committed"))
    print(
        f"\n{entries} entries, {len(arrivals)} distinct events; "
        f"batches committed per replica: {dict(batches)}; "
        f"batches retried after a database error: {dict(retried)}"
    )
    cmp = Comparison()
    for name in AGGREGATORS:
        compare_processor(cmp, name, db, arrivals, settings)
    assert all(n > 0 for counts in batches.values() for n in counts)
    cmp.report("two replicas per processor")


# -- adversarial sessions, applied directly in random batches -----------------------

# Each session belongs to one (video, viewer) (s1 and s2 are two sessions of one pair); one
# event in ten names it with another, which the first one applied decides between.
SESSIONS = {"s1": ("v1", "u1"), "s2": ("v1", "u1"), "s3": ("v1", "u2"), "s4": ("v2", "u1")}
UAS = [None, USER_AGENTS[0], USER_AGENTS[3], USER_AGENTS[7]]
REFERERS = [None, "https://a.example/", "https://b.example/"]
_ME_TABLES = (
    "heatmap_applied, heatmap_sessions, video_heatmap, progress_applied, progress_sessions,"
    " progress_played, video_watch_progress, metrics_applied, metrics_members,"
    " metrics_daily_members, metrics_sessions, video_metrics, video_metrics_daily,"
    " processor_refusals"
)


@st.composite
def adversarial_event(draw: st.DrawFn, base_ms: int) -> Arrival:
    """A valid event with colliding ts, changing durations, positions past the end, etc."""
    kind = draw(st.sampled_from(EVENT_TYPES))
    session = draw(st.sampled_from(sorted(SESSIONS)))
    video, viewer = SESSIONS[session]
    if draw(st.integers(0, 9)) == 0:  # someone else's event naming the session
        video, viewer = draw(st.sampled_from([("v2", "u2"), ("v1", "u3"), ("v3", viewer)]))
    event: dict[str, Any] = {
        "event_id": str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1)), version=4)),
        "type": kind,
        "ts": base_ms + draw(st.integers(0, 12)) * 1000 + draw(st.sampled_from([0, 0, 0, 999])),
        "video_id": video,
        "session_id": session,
        "viewer_id": viewer,
    }
    duration = draw(st.sampled_from([20.0, 33.5, 40.0]))
    grid = st.integers(0, int(duration + 1) * 2).map(lambda n: n / 2)
    carries_played = kind in ("progress", "pause", "seek", "complete", "session_end")
    wants_duration = kind in ("session_start", "progress", "complete", "session_end")
    if carries_played and draw(st.booleans()):
        ranges = []
        for a, b in draw(st.lists(st.tuples(grid, grid), max_size=3)):
            if a != b:
                ranges.append([min(a, b), min(max(a, b), duration + 1)])
        event["played"] = [r for r in ranges if r[0] < r[1]]
        wants_duration = True
    if wants_duration or draw(st.booleans()):
        event["duration_s"] = duration
    if kind != "milestone" or draw(st.booleans()):
        event["position_s"] = min(draw(grid), duration + 1)
    if kind == "milestone":
        event["milestone"] = draw(st.sampled_from([25, 50, 75, 90]))
    elif kind == "seek":
        event["from_s"], event["to_s"] = draw(grid), draw(grid)
    elif kind == "rate_change":
        event["rate"] = 1.5
    elif kind == "quality_change":
        event["quality"] = "720p"
    if draw(st.booleans()):
        event["course_id"] = draw(st.sampled_from(["c1", "c2"]))
    if draw(st.booleans()):
        event["lesson_id"] = draw(st.sampled_from(["l1", "l2"]))
    if draw(st.integers(0, 9)) == 0:
        event["is_preview"] = True
    parse_event(event)  # the strategy only makes valid events
    return Arrival(event, draw(st.sampled_from(UAS)), draw(st.sampled_from(REFERERS)))


@hypothesis.settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_adversarial_sessions_in_random_batches_match_the_model(
    make_settings: Callable[..., Settings], db: psycopg.Connection[Any], data: st.DataObject
) -> None:
    """Ties in ts, ts past the receive time, changing durations, overshooting positions,
    sessions claimed by another video or viewer, credit running out and retries split over
    random batches in random order: every table still equals the model."""
    settings = make_settings(
        segment_seconds=data.draw(st.sampled_from([5, 10])),
        completion_threshold=data.draw(st.sampled_from([0.5, 0.9])),
    )
    db.execute(f"TRUNCATE {_ME_TABLES}")
    base_ms = now_ms() - 86_400_000
    arrivals = data.draw(
        st.lists(
            adversarial_event(base_ms),
            min_size=1,
            max_size=40,
            unique_by=lambda a: str(a.event["event_id"]),
        )
    )
    sent = arrivals + data.draw(st.lists(st.sampled_from(arrivals), max_size=10))
    sent = data.draw(st.permutations(sent))
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(sent) - 1)), max_size=8)))
    batches = [sent[a:b] for a, b in itertools.pairwise([0, *cuts, len(sent)]) if sent[a:b]]
    # Received 6 s into the events' 13 s: later ts count as that moment, and tie.
    received_ms = base_ms + 6000
    received = datetime.fromtimestamp(received_ms / 1000, UTC)
    for name in AGGREGATORS:
        processor = PROCESSORS[name]
        for n, batch in enumerate(batches):
            entries = [
                Entry(
                    stream_id=f"{n}-{i}",
                    event=parse_event(a.event),
                    received_at=received,
                    user_agent=a.user_agent,
                    referer=a.referer,
                )
                for i, a in enumerate(batch)
            ]
            with db.transaction():
                fresh = ledger.claim_fresh(db, processor.ledger_table, entries)
                if fresh:
                    processor.apply(db, fresh, settings)
    # Each event as first applied: its place in the stream, in the order sent.
    firsts: dict[str, Arrival] = {}
    for order, a in enumerate(sent):
        firsts.setdefault(
            str(a.event["event_id"]),
            dataclasses.replace(a, order=order, received_ms=received_ms),
        )
    distinct = list(firsts.values())
    cmp = Comparison()
    for name in AGGREGATORS:
        compare_processor(cmp, name, db, distinct, settings)
    assert not cmp.mismatches, cmp.mismatches[:10]
