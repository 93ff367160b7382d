"""Prometheus metrics of the ingest and the processors, scraped over HTTP during real traffic."""

from __future__ import annotations

import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import psycopg
import pytest
import redis
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from ingest.app import create_app
from processors.registry import PROCESSORS
from processors.streams import ensure_groups
from tests.browser.servers import LiveIngest
from tests.commands import run_vidpulse, settings_env, start_vidpulse
from tests.factories import make_event, run_burst
from tools.supervisor import free_ports
from vidpulse.keys import Keys
from vidpulse.settings import Settings
from vidpulse.telemetry import PROCESSOR_OUTCOMES, metrics_registry

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

INGEST_NAMES = {
    "vidpulse_ingest_requests_total",
    "vidpulse_ingest_events_total",
    "vidpulse_ingest_append_seconds_bucket",
}
PROCESSOR_NAMES = {"vidpulse_processor_events_total", "vidpulse_processor_batch_seconds_bucket"}
STREAM_NAMES = {
    "vidpulse_redis_up",
    "vidpulse_stream_length",
    "vidpulse_stream_lag_seconds",
    "vidpulse_stream_pending",
    "vidpulse_dead_letters",
}


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text page, keyed by (name, labels)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return parse(response.read().decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def post(url: str, body: Any) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=orjson.dumps(body), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read() or b"null")


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def processes(settings: Settings) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Factory: `vidpulse ARGS` in the background with the test's settings; stopped after."""
    started: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryFile() as log:

        def start(*args: str) -> subprocess.Popen[bytes]:
            proc = start_vidpulse(*args, env=settings_env(settings), log=log)
            started.append(proc)
            return proc

        yield start
        for proc in started:
            proc.send_signal(signal.SIGTERM)
        for proc in started:
            proc.wait(timeout=20)


def test_counters_agree_with_answers_and_tables(
    live_ingest: LiveIngest,
    settings: Settings,
    redis_client: redis.Redis,
    db: psycopg.Connection[Any],
    processes: Callable[..., subprocess.Popen[bytes]],
) -> None:
    """Under simulated load the ingest's and each processor's counters equal the 202s and rows."""
    ensure_groups(redis_client, settings.stream)  # as `vidpulse migrate` does
    metrics_url = f"{live_ingest.origin}/metrics"
    events_url = f"{live_ingest.origin}/v1/events"
    before = scrape(metrics_url)

    done = run_vidpulse(
        "simulate",
        *("--rate", "300", "--duration", "1.5", "--seed", "5", "--connections", "4"),
        *("--json", "--url", events_url),
        env=settings_env(settings),
    )
    assert done.returncode == 0, done.stderr
    report = SimpleNamespace(**orjson.loads(done.stdout))
    assert report.errors == report.retried == 0
    assert report.accepted > 100
    # An event sent twice (applied once), a milestone reached twice (a duplicate at the
    # ingest), a rejected event beside an accepted one, and a request refused whole.
    again = make_event("play")
    answers = [post(events_url, again), post(events_url, again)]
    answers += [post(events_url, make_event("milestone", viewer_id="twice")) for _ in range(2)]
    answers.append(post(events_url, [make_event("pause"), {"type": "play"}]))
    answers.append(post(events_url, [{"type": "nonsense"}]))
    statuses = [status for status, _ in answers]
    assert statuses == [202, 202, 202, 202, 202, 422]
    accepted = report.accepted + sum(a.get("accepted", 0) for _, a in answers)
    duplicates = report.duplicates + sum(a.get("duplicates", 0) for _, a in answers)
    rejected = report.rejected + sum(len(a["rejected"]) for _, a in answers)
    assert answers[3][1]["duplicates"] == 1
    assert rejected >= 2

    after = scrape(metrics_url)
    assert names(after) >= INGEST_NAMES | STREAM_NAMES

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("vidpulse_ingest_events_total", outcome="accepted") == accepted
    assert delta("vidpulse_ingest_events_total", outcome="duplicate") == duplicates
    assert delta("vidpulse_ingest_events_total", outcome="rejected") == rejected
    requests = delta("vidpulse_ingest_requests_total", route="/v1/events", status="202")
    assert requests == report.requests + 5
    assert delta("vidpulse_ingest_requests_total", route="/v1/events", status="422") == 1
    assert delta("vidpulse_ingest_append_seconds_count") == report.requests + 5
    assert value(after, "vidpulse_stream_length") == accepted
    assert value(after, "vidpulse_redis_up") == 1

    ports = dict(zip(PROCESSORS, free_ports(19300, len(PROCESSORS)), strict=True))
    for name, port in ports.items():
        processes("process", name, "--metrics-port", str(port))

    def caught_up(name: str) -> bool:
        try:
            samples = scrape(f"http://127.0.0.1:{ports[name]}/metrics")
        except OSError:
            return False  # not listening yet
        done = sum(
            value(samples, "vidpulse_processor_events_total", processor=name, outcome=o)
            for o in ("applied", "skipped")
        )
        return done == accepted

    for name, port in ports.items():
        wait_for(lambda name=name: caught_up(name), f"{name} to apply every event")
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
        assert names(samples) >= PROCESSOR_NAMES | STREAM_NAMES
        applied = value(
            samples, "vidpulse_processor_events_total", processor=name, outcome="applied"
        )
        ledger = db.execute(f"SELECT count(*) FROM {PROCESSORS[name].ledger_table}").fetchone()
        assert ledger is not None
        skipped = value(
            samples, "vidpulse_processor_events_total", processor=name, outcome="skipped"
        )
        assert applied == ledger[0] == accepted - 1  # the event sent twice is applied once
        assert skipped == 1
        dead = value(
            samples, "vidpulse_processor_events_total", processor=name, outcome="dead_lettered"
        )
        assert dead == 0
    rows = db.execute("SELECT count(*) FROM video_events").fetchone()
    assert rows is not None
    assert rows[0] == accepted - 1


def test_stream_gauges_show_lag_pending_and_dead_letters(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """Entries a minute old and unread show a minute of lag; pending and dead letters per group."""
    keys = Keys(settings.stream)
    ensure_groups(redis_client, keys.stream)
    minute_ago = int(time.time() * 1000) - 60_000
    for seq in range(3):
        redis_client.xadd(keys.stream, {"event": b"{}"}, id=f"{minute_ago}-{seq}")
    redis_client.xreadgroup("heatmap", "c1", {keys.stream: ">"}, count=1)
    redis_client.xadd(keys.dlq, {"group": "progress", "error": "test"})

    samples = parse(generate_latest(metrics_registry(settings)).decode())

    assert value(samples, "vidpulse_redis_up") == 1
    assert value(samples, "vidpulse_stream_length") == 3
    for name in PROCESSORS:
        lag_seconds = value(samples, "vidpulse_stream_lag_seconds", group=name)
        assert 59 <= lag_seconds < 600
    assert value(samples, "vidpulse_stream_pending", group="heatmap") == 1
    assert value(samples, "vidpulse_stream_pending", group="raw") == 0
    assert value(samples, "vidpulse_stream_lag", group="raw") == 3
    assert value(samples, "vidpulse_stream_lag", group="heatmap") == 2
    assert value(samples, "vidpulse_dead_letters", group="progress") == 1
    assert value(samples, "vidpulse_dead_letters", group="raw") == 0


def test_caught_up_group_has_no_lag(settings: Settings, redis_client: redis.Redis) -> None:
    """A group that has acknowledged everything shows zero lag seconds and nothing pending."""
    keys = Keys(settings.stream)
    ensure_groups(redis_client, keys.stream)
    entry_id = redis_client.xadd(keys.stream, {"event": b"{}"})
    redis_client.xreadgroup("raw", "c1", {keys.stream: ">"})
    redis_client.xack(keys.stream, "raw", entry_id)

    samples = parse(generate_latest(metrics_registry(settings)).decode())

    assert value(samples, "vidpulse_stream_lag_seconds", group="raw") == 0
    assert value(samples, "vidpulse_stream_pending", group="raw") == 0
    assert value(samples, "vidpulse_stream_lag", group="raw") == 0


def test_scrape_with_redis_gone_answers_redis_down(make_settings: Callable[..., Settings]) -> None:
    """With Redis unreachable /metrics answers 200 with redis_up 0, and counts the 503s."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    settings = make_settings(redis_url=f"redis://127.0.0.1:{dead_port}/0")
    with TestClient(create_app(settings)) as client:
        before = parse(client.get("/metrics").text)
        assert client.post("/v1/events", json=make_event("play")).status_code == 503
        response = client.get("/metrics")
    assert response.status_code == 200
    samples = parse(response.text)
    assert value(samples, "vidpulse_redis_up") == 0
    assert "vidpulse_stream_length" not in names(samples)

    def delta(name: str, **labels: str) -> float:
        return value(samples, name, **labels) - value(before, name, **labels)

    assert delta("vidpulse_ingest_requests_total", route="/v1/events", status="503") == 1
    assert delta("vidpulse_ingest_events_total", outcome="accepted") == 0


def test_route_label_is_the_template_not_the_raw_path(ingest: TestClient) -> None:
    """Unknown paths share one route label, so hostile URLs cannot multiply the series."""
    before = parse(ingest.get("/metrics").text)
    for path in ("/no/such/path", "/etc/passwd", "/v1/events/../../x"):
        assert ingest.get(path).status_code == 404
    assert ingest.get("/v1/events").status_code == 405
    preflight = {"Origin": "https://site.example", "Access-Control-Request-Method": "POST"}
    assert ingest.options("/v1/events", headers=preflight).status_code == 200
    assert ingest.options("/nowhere", headers=preflight).status_code == 200
    after = parse(ingest.get("/metrics").text)

    def delta(**labels: str) -> float:
        name = "vidpulse_ingest_requests_total"
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta(route="unmatched", status="404") == 3
    assert delta(route="/v1/events", status="405") == 1
    assert delta(route="/v1/events", status="200") == 1
    assert delta(route="unmatched", status="200") == 1
    routes = {dict(labels)["route"] for name, labels in after if name.endswith("requests_total")}
    assert not routes & {"/no/such/path", "/etc/passwd", "/nowhere"}


def test_several_ingest_workers_count_together(
    settings: Settings, processes: Callable[..., subprocess.Popen[bytes]]
) -> None:
    """`vidpulse ingest --workers 2`: any worker's /metrics sums the events of both."""
    port = free_ports(19400, 1)[0]
    processes("ingest", "--port", str(port), "--workers", "2")
    origin = f"http://127.0.0.1:{port}"
    wait_for(lambda: _answers(f"{origin}/healthz"), "the ingest to listen")
    sent = 40
    for _ in range(sent):  # one connection each: the kernel spreads them over the workers
        status, _ = post(f"{origin}/v1/events", make_event("play"))
        assert status == 202
    for _ in range(4):
        samples = scrape(f"{origin}/metrics")
        assert value(samples, "vidpulse_ingest_events_total", outcome="accepted") == sent


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def test_metrics_port_taken_fails_with_one_line(settings: Settings) -> None:
    """A processor whose metrics port is taken exits 1 with one line naming the port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_vidpulse(
            "process", "raw", "--burst", "--metrics-port", str(port), env=settings_env(settings)
        )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"vidpulse: cannot serve metrics on 127.0.0.1:{port}: Address already in use"
    ]


def test_metrics_port_taken_moves_to_the_next_when_allowed(settings: Settings) -> None:
    """With --metrics-port-tries, a taken metrics port gives way to the next free one."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ("process", "raw", "--burst", "--metrics-port", str(port))
        result = run_vidpulse(*args, "--metrics-port-tries", "20", env=settings_env(settings))
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("metrics: ")]
    _, name, url = line.split()
    assert name == "raw"
    served = int(url.rsplit(":", 1)[1].split("/")[0])
    assert port < served < port + 20


def test_metrics_port_out_of_range_is_bad_usage(settings: Settings) -> None:
    """--metrics-port outside 0-65535 is refused as bad usage (exit 2)."""
    result = run_vidpulse("process", "raw", "--metrics-port", "70000", env=settings_env(settings))
    assert result.returncode == 2
    assert "must be a port number" in result.stderr


def test_run_gives_each_processor_a_metrics_port(settings: Settings, tmp_path: Path) -> None:
    """`vidpulse run --metrics-port P` prints one metrics URL per processor, each serving it."""
    port, base = free_ports(19500, 1)[0], free_ports(19510, 1)[0]
    log_path = tmp_path / "run.log"
    urls: dict[str, str] = {}

    def printed() -> bool:
        for line in log_path.read_text(errors="replace").splitlines():
            if line.startswith("metrics: "):
                _, name, url = line.split()
                urls[name] = url
        return len(urls) == len(PROCESSORS) + 1

    with log_path.open("wb") as log:
        args = ("run", "--port", str(port), "--metrics-port", str(base))
        proc = start_vidpulse(*args, env=settings_env(settings), log=log)
        try:
            wait_for(printed, "the metrics URLs")
            for name in PROCESSORS:
                wait_for(lambda name=name: _answers(urls[name]), f"{name} metrics")
                samples = scrape(urls[name])
                applied = ("processor", name), ("outcome", "applied")
                assert ("vidpulse_processor_events_total", frozenset(applied)) in samples
        finally:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=60) == 0
    assert urls["ingest"] == f"http://127.0.0.1:{port}/metrics"
    assert len(set(urls.values())) == len(urls)


def test_free_ports_skips_a_taken_port() -> None:
    """The ports handed to processors skip one something already listens on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = free_ports(port, 2)
    assert port not in ports
    assert len(ports) == 2
    assert ports[0] > port


def test_processor_counts_a_poison_entry_as_failed_then_dead_lettered(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    """A poison entry counts as failed and dead-lettered; the good one beside it as applied."""
    settings = make_settings(max_deliveries=1)
    keys = Keys(settings.stream)
    ensure_groups(redis_client, keys.stream)
    redis_client.xadd(keys.stream, {"event": orjson.dumps(make_event("play"))})
    redis_client.xadd(keys.stream, {"event": b"not an event"})

    def count(outcome: str) -> float:
        labels = {"processor": "progress", "outcome": outcome}
        return REGISTRY.get_sample_value("vidpulse_processor_events_total", labels) or 0.0

    before = {o: count(o) for o in PROCESSOR_OUTCOMES}
    run_burst(settings, "progress")
    after = {o: count(o) for o in PROCESSOR_OUTCOMES}

    changes = {o: after[o] - before[o] for o in PROCESSOR_OUTCOMES}
    assert changes == {"applied": 1, "skipped": 0, "failed": 1, "dead_lettered": 1}
    assert redis_client.xlen(keys.dlq) == 1
