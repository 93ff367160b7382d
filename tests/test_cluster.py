"""vidpulse on a real local Redis Cluster (three masters, a replica each) with partitions.

The cluster is started from the `redis-server` binaries by the `redis_cluster` fixture
(tests/conftest.py); the failover test starts one of its own, since it kills a master.
"""

from __future__ import annotations

import http.client
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import redis
from prometheus_client import generate_latest
from starlette.testclient import TestClient

from dashboard.app import create_app as create_dashboard
from ingest.app import create_app
from processors.partitions import assignment
from processors.registry import PROCESSORS
from processors.runtime import Consumer
from processors.streams import GroupStream, ensure_groups
from tests.browser.servers import LiveIngest
from tests.commands import run_vidpulse, settings_env
from tests.dashboard.conftest import AUTH, TOKEN
from tests.factories import make_event, run_burst
from tests.test_aggregates import (
    AGGREGATORS,
    Comparison,
    _subprocess_env,
    audience,
    compare_processor,
    post,
    sends,
    stream_arrivals,
)
from tests.test_telemetry import parse, value
from vidpulse import devservices
from vidpulse.keys import Keys, text
from vidpulse.redisclient import sync_client
from vidpulse.settings import Settings
from vidpulse.telemetry import metrics_registry

PARTITIONS = 6


@pytest.fixture
def cluster_settings(
    make_settings: Callable[..., Settings], redis_cluster: devservices.LocalCluster
) -> Settings:
    return make_settings(
        redis_url=redis_cluster.url,
        partitions=PARTITIONS,
        consumer_heartbeat_ms=200,
        batch_size=40,
    )


@pytest.fixture
def cluster_client(cluster_settings: Settings) -> Iterator[redis.Redis]:
    client = sync_client(cluster_settings.redis_url)
    yield client
    client.close()


def wait_until(check: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_partition_keys_spread_over_the_masters_and_share_slots(
    cluster_settings: Settings, cluster_client: redis.Redis
) -> None:
    """Six partitions land two on each master; a milestone's dedupe key and a partition's
    dead letters sit in the slot of the partition they belong to."""
    keys = Keys.of(cluster_settings)
    cluster: Any = cluster_client
    masters = Counter(cluster.get_node_from_key(s).name for s in keys.partition_streams)
    assert sorted(masters.values()) == [2, 2, 2]
    slot = cluster.keyslot
    for video, viewer in [("v1", "u1"), ("v:2", "u%3"), ("v1", "u2")]:
        p = keys.partition_of(video, viewer)
        stream_slot = slot(keys.partition_stream(p))
        assert slot(keys.milestone_dedupe(video, viewer, 50)) == stream_slot
        assert slot(keys.watched50_dedupe(video, viewer)) == stream_slot
        assert slot(keys.partition(p).dlq) == stream_slot


def test_one_partition_keeps_the_single_stream_layout() -> None:
    keys = Keys("vp:events")
    assert keys.partition_streams == ["vp:events"]
    assert keys.partition(0) == keys
    assert keys.milestone_dedupe("v", "u", 25) == "vp:events:dedupe:v:u:m25"


def test_a_session_lands_in_one_partition(
    cluster_settings: Settings, cluster_client: redis.Redis
) -> None:
    """Through the ingest on the cluster: each (video, viewer)'s events are in one
    partition, every partition gets some, and a repeated milestone is a duplicate."""
    events = [
        make_event(t, video_id=f"v{i % 5}", viewer_id=f"u{i}", session_id=f"s{i}")
        for i in range(60)
        for t in ("play", "pause")
    ]
    with TestClient(create_app(cluster_settings)) as ingest:
        response = ingest.post("/v1/events", json=events)
        assert response.status_code == 202, response.text
        assert response.json()["accepted"] == 120
        milestone = make_event("milestone", video_id="v1", viewer_id="u1", session_id="s1")
        first = ingest.post("/v1/events", json=[milestone])
        again = ingest.post("/v1/events", json=[{**milestone, "event_id": str(uuid.uuid4())}])
    assert first.json()["accepted"] == 1
    assert again.json()["duplicates"] == 1
    keys = Keys.of(cluster_settings)
    where: dict[str, set[int]] = {}
    for p, stream in enumerate(keys.partition_streams):
        entries: Any = cluster_client.xrange(stream)
        for _, fields in entries:
            event = orjson.loads(fields[b"event"])
            where.setdefault(event["session_id"], set()).add(p)
            assert p == keys.partition_of(event["video_id"], event["viewer_id"])
    assert all(len(ps) == 1 for ps in where.values())
    assert {p for ps in where.values() for p in ps} == set(range(PARTITIONS))


def _consumers(client: redis.Redis, settings: Settings, group: str) -> dict[int, dict[str, int]]:
    """Per partition: {consumer: pending} of the group."""
    out: dict[int, dict[str, int]] = {}
    for p, stream in enumerate(Keys.of(settings).partition_streams):
        rows: Any = client.xinfo_consumers(stream, group)
        out[p] = {text(r["name"]): int(r["pending"]) for r in rows}
    return out


def _members(client: redis.Redis, settings: Settings, group: str) -> list[str]:
    raw: Any = client.zrange(Keys.of(settings).members(group), 0, -1)
    return sorted(text(m) for m in raw)


def _applied(db: psycopg.Connection[Any], name: str) -> int:
    row = db.execute(f"SELECT count(*) FROM {name}_applied").fetchone()
    return int(row[0]) if row else 0


def _start(settings: Settings, name: str, consumer: str) -> subprocess.Popen[bytes]:
    env = _subprocess_env(settings, f"cluster-{name}-{consumer}")
    env["VIDPULSE_PARTITIONS"] = str(settings.partitions)
    env["VIDPULSE_CONSUMER_HEARTBEAT_MS"] = str(settings.consumer_heartbeat_ms)
    return subprocess.Popen(
        [sys.executable, "-m", "vidpulse", "process", name, "--consumer", consumer],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_consumers_share_partitions_and_stay_exact_when_one_dies_and_one_joins(
    cluster_settings: Settings,
    cluster_client: redis.Redis,
    db: psycopg.Connection[Any],
) -> None:
    """Six partitions, two consumers per processor: the tables equal the reference model,
    with a consumer killed (SIGKILL) mid-stream and one added later."""
    settings = cluster_settings
    rng = random.Random(61)
    crowd = audience(62, videos=8, viewers=50, sessions=240)
    items = sends(crowd, rng, retries=0.1, shuffle=True)
    thirds = [items[: len(items) // 3], items[len(items) // 3 : 2 * len(items) // 3]]
    thirds.append(items[2 * len(items) // 3 :])
    procs: dict[tuple[str, str], subprocess.Popen[bytes]] = {}
    try:
        with TestClient(create_app(settings)) as ingest:
            post(ingest, thirds[0], rng)
            for name in AGGREGATORS:
                for consumer in ("c1", "c2"):
                    procs[(name, consumer)] = _start(settings, name, consumer)
            for name in AGGREGATORS:
                wait_until(
                    lambda name=name: _members(cluster_client, settings, name) == ["c1", "c2"],
                    f"{name}: two consumers",
                )
                # Each reads its share: c1 the even partitions, c2 the odd ones.
                wait_until(
                    lambda name=name: (
                        _applied(db, name) > 0
                        and all(
                            set(c) >= {"c1" if p % 2 == 0 else "c2"}
                            for p, c in _consumers(cluster_client, settings, name).items()
                        )
                    ),
                    f"{name}: both consumers reading their partitions",
                )
            post(ingest, thirds[1], rng)
            for name in AGGREGATORS:  # killed mid-stream, maybe mid-batch
                killed = procs.pop((name, "c1"))
                killed.kill()
                killed.communicate(timeout=10)
            for name in AGGREGATORS:
                wait_until(
                    lambda name=name: _members(cluster_client, settings, name) == ["c2"],
                    f"{name}: c1's membership expiring",
                )
                # c2 takes every partition over, c1's unacknowledged entries included.
                wait_until(
                    lambda name=name: all(
                        "c2" in c and not c.get("c1")
                        for c in _consumers(cluster_client, settings, name).values()
                    ),
                    f"{name}: c2 reading all partitions, c1's pending claimed",
                )
            for name in AGGREGATORS:
                procs[(name, "c3")] = _start(settings, name, "c3")
            for name in AGGREGATORS:
                wait_until(
                    lambda name=name: _members(cluster_client, settings, name) == ["c2", "c3"],
                    f"{name}: c3 joining",
                )
            post(ingest, thirds[2], rng)
        arrivals, entries = stream_arrivals(cluster_client, settings)
        for name in AGGREGATORS:
            wait_until(
                lambda name=name: (
                    _applied(db, name) == len(arrivals)
                    and all(
                        sum(c.values()) == 0
                        for c in _consumers(cluster_client, settings, name).values()
                    )
                ),
                f"{name}: every event applied and acknowledged",
            )
            shares = _consumers(cluster_client, settings, name)
            # c3 got c2's old share of partitions: p -> sorted(["c2", "c3"])[p % 2].
            assert assignment(["c2", "c3"], "c3", PARTITIONS) == [1, 3, 5]
            assert all("c3" in shares[p] for p in (1, 3, 5)), shares
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        errors = {}
        for key, proc in procs.items():
            _, err = proc.communicate(timeout=60)
            if proc.returncode != 0:
                errors[key] = err.decode()[-2000:]
    assert not errors, errors
    print(f"\n{entries} entries over {PARTITIONS} partitions, {len(arrivals)} distinct events")
    cmp = Comparison()
    for name in AGGREGATORS:
        compare_processor(cmp, name, db, arrivals, settings)
    cmp.report("6 partitions, consumers killed and added")


class Load:
    """Clients posting unique events to the ingest from threads, keeping every answer."""

    def __init__(self, port: int, keys: Keys, clients: int = 4) -> None:
        self.port, self.keys = port, keys
        self.stop = threading.Event()
        self.lock = threading.Lock()
        # (monotonic time, status, event ids, partitions) per request
        self.answers: list[tuple[float, int, list[str], set[int]]] = []
        self.threads = [threading.Thread(target=self._post, args=(i,)) for i in range(clients)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def _post(self, client: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            self._post_until_stopped(conn, client)
        finally:
            conn.close()

    def _post_until_stopped(self, conn: http.client.HTTPConnection, client: int) -> None:
        n = 0
        while not self.stop.is_set():
            events = []
            for _ in range(5):
                n += 1
                video, viewer = f"v{n % 7}", f"c{client}-u{n}"
                events.append(make_event("play", video_id=video, viewer_id=viewer))
            body = orjson.dumps(events)
            try:
                conn.request("POST", "/v1/events", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                conn.close()
                status = 0  # the connection broke: no answer
            parts = {self.keys.partition_of(e["video_id"], e["viewer_id"]) for e in events}
            with self.lock:
                self.answers.append(
                    (time.monotonic(), status, [e["event_id"] for e in events], parts)
                )
            if status != 202:
                self.stop.wait(0.05)  # a client's pause before retrying

    def seen(self, check: Callable[[float, int, set[int]], bool]) -> bool:
        with self.lock:
            return any(check(t, status, parts) for t, status, _, parts in self.answers)


def test_a_master_killed_under_load_loses_no_acknowledged_event(
    make_settings: Callable[..., Settings], db: psycopg.Connection[Any]
) -> None:
    """VIDPULSE_REPLICA_ACKS=1: a master killed mid-load; the ingest answers 503 (never
    another error) until its replica has taken over and has a replica again, then 202 by
    itself; every event that got a 202 is in video_events afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="vidpulse-failover-"))
    cluster = devservices.start_redis_cluster(tmp)
    server: LiveIngest | None = None
    raw: Consumer | None = None
    try:
        settings = make_settings(
            redis_url=cluster.url, partitions=PARTITIONS, replica_acks=1, batch_size=500
        )
        keys = Keys.of(settings)
        client: Any = sync_client(settings.redis_url)
        victim = client.get_node_from_key(keys.partition_stream(0))
        victim_partitions = {
            p
            for p, s in enumerate(keys.partition_streams)
            if client.get_node_from_key(s).port == victim.port
        }
        client.close()
        server = LiveIngest(settings)
        server.start()
        # The raw processor runs through it all, and must come through the failover too.
        raw = Consumer(PROCESSORS["raw"], settings, consumer="raw1", stop=threading.Event())
        failures: list[BaseException] = []

        def consume() -> None:
            try:
                raw.run()
            except BaseException as exc:
                failures.append(exc)

        consumer = threading.Thread(target=consume)
        consumer.start()
        with Load(server.port, keys) as load:
            wait_until(
                lambda: (
                    load.seen(lambda t, s, parts: s == 202 and parts & victim_partitions)
                    and len(load.answers) > 50
                ),
                "events accepted before the kill",
            )
            (heir,) = cluster.replicas_of(victim.port)
            cluster.kill(victim.port)
            killed_at = time.monotonic()
            wait_until(
                lambda: load.seen(lambda t, s, parts: t > killed_at and s == 503),
                "a 503 while the master is down",
            )
            wait_until(
                lambda: (
                    cluster.info(heir)["role"] == "master" and devservices.cluster_ready(cluster)
                ),
                "the failover",
            )
            cluster.restart(victim.port)  # as a supervisor would: it comes back a replica
            wait_until(lambda: devservices.cluster_ready(cluster, 1), "the node back, in sync")
            back_at = time.monotonic()
            wait_until(
                lambda: load.seen(
                    lambda t, s, parts: t > back_at and s == 202 and bool(parts & victim_partitions)
                ),
                "202 again for the failed-over partitions",
            )
        statuses = Counter(status for _, status, _, _ in load.answers)
        accepted = [i for _, status, ids, _ in load.answers if status == 202 for i in ids]
        print(f"\nanswers: {dict(statuses)}; {len(accepted)} events acknowledged")
        assert set(statuses) == {202, 503}, statuses

        def stored() -> int:
            row = db.execute(
                "SELECT count(DISTINCT event_id) FROM video_events"
                " WHERE event_id = ANY(%s::uuid[])",
                (accepted,),
            ).fetchone()
            return int(row[0]) if row else 0

        wait_until(lambda: stored() == len(set(accepted)) or not consumer.is_alive(), "raw")
        raw.stop.set()
        consumer.join(30)
        assert not failures, failures
        assert stored() == len(set(accepted))
    finally:
        if server is not None:
            server.stop()
        if raw is not None:
            raw.stop.set()
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_status_dead_letters_and_forget_work_per_partition(
    cluster_settings: Settings, cluster_client: redis.Redis
) -> None:
    """`vidpulse status` shows each partition; `dlq list/replay` and `forget` reach every
    partition's dead letters and entries."""
    settings = cluster_settings
    keys = Keys.of(settings)
    env = settings_env(settings)
    events = [make_event("play", video_id="v1", viewer_id=f"u{i}") for i in range(30)]
    with TestClient(create_app(settings)) as ingest:
        assert ingest.post("/v1/events", json=events).status_code == 202
    migrated = run_vidpulse("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    p = keys.partition_of("v1", "u3")
    part = keys.partition(p)
    [[_, [entry, *_]]] = cluster_client.xreadgroup("raw", "c", {part.stream: ">"}, count=1)
    GroupStream(cluster_client, part, "raw", "c").dead_letter(entry, "boom", 5)

    status = run_vidpulse("status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    report = orjson.loads(status.stdout)
    assert report["length"] == 30
    assert [x["length"] for x in report["partitions"]] == [
        cluster_client.xlen(s) for s in keys.partition_streams
    ]
    assert report["dead_letters"] == 1
    assert report["partitions"][p]["dead_letters"] == 1
    raw = next(g for g in report["groups"] if g["group"] == "raw")
    assert raw["lag"] == 29
    text_status = run_vidpulse("status", env=env).stdout
    assert all(f"partition {i} {s}" in text_status for i, s in enumerate(keys.partition_streams))

    listed = run_vidpulse("dlq", "list", env=env)
    [letter] = [orjson.loads(line) for line in listed.stdout.splitlines()]
    assert letter["partition"] == str(p)
    assert letter["error"] == "boom"
    replayed = run_vidpulse("dlq", "replay", env=env)
    assert "replayed 1 dead letters" in replayed.stdout, replayed.stderr
    assert cluster_client.xlen(part.dlq) == 0
    assert (
        cluster_client.xlen(part.stream)
        == sum(keys.partition_of("v1", f"u{i}") == p for i in range(30)) + 1
    )

    forgot = run_vidpulse("forget", "u3", env=env)
    assert forgot.returncode == 0, forgot.stderr
    left = [
        orjson.loads(fields[b"event"])["viewer_id"]
        for s in keys.partition_streams
        for _, fields in cluster_client.xrange(s)
    ]
    assert "u3" not in left
    assert len(left) == 29


def test_the_dashboard_cache_and_the_rate_limit_run_on_the_cluster(
    cluster_settings: Settings, make_settings: Callable[..., Settings]
) -> None:
    """The cache looks up without undeclared keys (cached reads skip PostgreSQL); the rate
    limit counts in the cluster."""
    settings = make_settings(
        **{**cluster_settings.model_dump(), "admin_tokens": TOKEN, "cache_local_ms": 0}
    )
    with TestClient(create_dashboard(settings), headers=AUTH) as api:
        first = api.get("/api/v1/overview")
        assert first.status_code == 200, first.text
        stats: dict[str, int] = api.app.state.pool.get_stats()  # type: ignore[attr-defined]
        before = stats.get("requests_num", 0)
        assert api.get("/api/v1/overview").content == first.content
        stats = api.app.state.pool.get_stats()  # type: ignore[attr-defined]
        assert stats.get("requests_num", 0) == before
    limited = make_settings(**{**cluster_settings.model_dump(), "rate_limit": "2/minute"})
    with TestClient(create_app(limited)) as ingest:
        codes = [ingest.post("/v1/events", json=[make_event()]).status_code for _ in range(3)]
    assert codes == [202, 202, 429]


def test_partitions_on_one_redis_match_the_reference_model(
    make_settings: Callable[..., Settings], redis_client: redis.Redis, db: psycopg.Connection[Any]
) -> None:
    """VIDPULSE_PARTITIONS=3 on one Redis (no cluster): the ingest splits the events over
    three streams and the processors' tables still equal the reference model."""
    settings = make_settings(partitions=3, batch_size=50)
    rng = random.Random(71)
    crowd = audience(72, videos=6, viewers=30, sessions=90)
    items = sends(crowd, rng, retries=0.1, shuffle=True)
    with TestClient(create_app(settings)) as ingest:
        post(ingest, items, rng)
    keys = Keys.of(settings)
    assert redis_client.xlen(settings.stream) == 0  # the unpartitioned stream stays empty
    assert all(redis_client.xlen(s) > 0 for s in keys.partition_streams)
    arrivals, entries = stream_arrivals(redis_client, settings)
    for name in AGGREGATORS:
        run_burst(settings, name)
    print(f"\n{entries} entries over 3 partitions of one Redis, {len(arrivals)} distinct events")
    cmp = Comparison()
    for name in AGGREGATORS:
        compare_processor(cmp, name, db, arrivals, settings)
    cmp.report("3 partitions on one Redis")


def test_stream_gauges_sum_the_partitions_and_show_each(
    cluster_settings: Settings, cluster_client: redis.Redis
) -> None:
    """The Prometheus stream gauges are the partitions' sums; each partition has its own."""
    keys = Keys.of(cluster_settings)
    for stream in keys.partition_streams:
        ensure_groups(cluster_client, stream)
    minute_ago = int(time.time() * 1000) - 60_000
    for p, stream in enumerate(keys.partition_streams):
        for seq in range(p + 1):
            cluster_client.xadd(stream, {"event": b"{}"}, id=f"{minute_ago}-{seq}")
    cluster_client.xreadgroup("heatmap", "c1", {keys.partition_stream(5): ">"}, count=2)

    samples = parse(generate_latest(metrics_registry(cluster_settings)).decode())

    assert value(samples, "vidpulse_redis_up") == 1
    assert value(samples, "vidpulse_stream_length") == 21
    assert value(samples, "vidpulse_stream_lag", group="raw") == 21
    assert value(samples, "vidpulse_stream_lag", group="heatmap") == 19
    assert value(samples, "vidpulse_stream_pending", group="heatmap") == 2
    assert 59 <= value(samples, "vidpulse_stream_lag_seconds", group="raw") < 600
    for p in range(PARTITIONS):
        assert value(samples, "vidpulse_partition_length", partition=str(p)) == p + 1
    assert value(samples, "vidpulse_partition_pending", group="heatmap", partition="5") == 2
    assert value(samples, "vidpulse_partition_lag", group="heatmap", partition="5") == 4
