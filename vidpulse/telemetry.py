"""Prometheus metrics: the counters every process keeps, and the stream gauges read at scrape.

One registry view per process (`metrics_registry`): this process's own counters and
histograms (from the files of every worker when PROMETHEUS_MULTIPROC_DIR is set, as
under `vidpulse ingest --workers N`) plus the stream gauges, which `StreamCollector`
reads from Redis when scraped. Served by `metrics_route` in a Starlette app (the
ingest; any other app can mount it) or by `serve_metrics` on a port of its own (the
processors).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import redis
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vidpulse.keys import Keys, text
from vidpulse.redisclient import sync_client
from vidpulse.settings import Settings
from vidpulse.status import gather

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED_ROUTE = "unmatched"
INGEST_OUTCOMES = ("accepted", "duplicate", "rejected")
PROCESSOR_OUTCOMES = ("applied", "skipped", "failed", "dead_lettered")

INGEST_REQUESTS = Counter(
    "vidpulse_ingest_requests",
    "HTTP requests answered by the ingest, by route template and status code.",
    ["route", "status"],
)
INGEST_EVENTS = Counter(
    "vidpulse_ingest_events",
    "Events the ingest answered for: accepted (appended), duplicate (already seen), "
    "rejected (invalid, listed in the answer).",
    ["outcome"],
)
INGEST_APPEND_SECONDS = Histogram(
    "vidpulse_ingest_append_seconds",
    "Time to append one request's valid events to the stream (appends that succeeded).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
PROCESSOR_EVENTS = Counter(
    "vidpulse_processor_events",
    "Stream entries a processor handled: applied (committed), skipped (committed without "
    "effect: applied before per the ledger, or of a forgotten viewer), failed (a delivery "
    "that failed: retried later, or dead-lettered once out of deliveries), dead_lettered "
    "(moved to the dead-letter stream).",
    ["processor", "outcome"],
)
PROCESSOR_BATCH_SECONDS = Histogram(
    "vidpulse_processor_batch_seconds",
    "Time to apply, commit and acknowledge one batch.",
    ["processor"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)


# -- the ingest -------------------------------------------------------------------


class RequestMetricsMiddleware:
    """Count every HTTP request by route template and status (pure ASGI: the hot path).

    The label is the matched route's path template; a request answered before routing
    (a CORS preflight) is labelled with its path if it is one of `paths`, the app's
    route paths; anything else is "unmatched", so hostile URLs cannot add series.
    """

    def __init__(self, app: ASGIApp, *, paths: Iterable[str] = ()) -> None:
        self.app = app
        self.paths = frozenset(paths)
        self._children: dict[tuple[str, int], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            if route is not None:
                label = getattr(route, "path", UNMATCHED_ROUTE)
            else:
                label = scope["path"] if scope["path"] in self.paths else UNMATCHED_ROUTE
            key = (label, status)
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = INGEST_REQUESTS.labels(*map(str, key))
            child.inc()


_ACCEPTED, _DUPLICATE, _REJECTED = (INGEST_EVENTS.labels(o) for o in INGEST_OUTCOMES)


def count_ingest_events(accepted: int, duplicates: int, rejected: int) -> None:
    """Add one answer's event counts (what a 202 or 422 tells the client)."""
    if accepted:
        _ACCEPTED.inc(accepted)
    if duplicates:
        _DUPLICATE.inc(duplicates)
    if rejected:
        _REJECTED.inc(rejected)


# -- the processors -----------------------------------------------------------------


class ProcessorMetrics:
    """The counters of one processor, label children resolved once."""

    def __init__(self, processor: str) -> None:
        self._events = {o: PROCESSOR_EVENTS.labels(processor, o) for o in PROCESSOR_OUTCOMES}
        self._batch_seconds = PROCESSOR_BATCH_SECONDS.labels(processor)

    def batch(self, *, applied: int, skipped: int, failed: int, seconds: float) -> None:
        """Record one batch: committed entries (applied or skipped) and retried ones."""
        self._events["applied"].inc(applied)
        self._events["skipped"].inc(skipped)
        self._events["failed"].inc(failed)
        self._batch_seconds.observe(seconds)

    def dead_lettered(self) -> None:
        self._events["dead_lettered"].inc()


# -- the stream gauges ----------------------------------------------------------------


class StreamCollector(Collector):
    """Stream length, per-group lag, pending and dead letters, read from Redis at scrape.

    Readings are cached for `cache_seconds` so that scrapes, however many, cost Redis
    at most one `gather` per interval. When Redis cannot be read the scrape still
    answers, with `vidpulse_redis_up 0` and no stream gauges.
    """

    def __init__(self, settings: Settings, *, cache_seconds: float = 1.0) -> None:
        self.keys = Keys.of(settings)
        self.redis_url = settings.redis_url
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._cached: list[Metric] = []
        self._expires = 0.0

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            now = time.monotonic()
            if now >= self._expires:
                self._cached = self._read()
                self._expires = now + self.cache_seconds
            return list(self._cached)

    def _read(self) -> list[Metric]:
        up = GaugeMetricFamily(
            "vidpulse_redis_up", "1 when the last scrape could read the stream from Redis, else 0."
        )
        try:
            # A connection per reading (at most one a cache interval): nothing to close
            # when the app or thread serving the scrapes goes away.
            with sync_client(self.redis_url, socket_timeout=2, socket_connect_timeout=1) as client:
                families = self._stream_families(client)
        except (RedisError, OSError):
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        return [up, *families]

    def _stream_families(self, client: redis.Redis) -> list[Metric]:
        report = gather(client, self.keys)
        now_ms = time.time() * 1000
        length = GaugeMetricFamily("vidpulse_stream_length", "Entries in the stream (XLEN).")
        length.add_metric([], report["length"])
        lag = GaugeMetricFamily(
            "vidpulse_stream_lag",
            "Entries of the stream not yet delivered to the group.",
            labels=["group"],
        )
        lag_seconds = GaugeMetricFamily(
            "vidpulse_stream_lag_seconds",
            "Age of the oldest entry the group has not finished with (pending or not yet "
            "delivered); 0 when it is caught up.",
            labels=["group"],
        )
        pending = GaugeMetricFamily(
            "vidpulse_stream_pending",
            "Entries delivered to the group's consumers and not yet acknowledged.",
            labels=["group"],
        )
        consumers = GaugeMetricFamily(
            "vidpulse_stream_consumers", "Consumers registered in the group.", labels=["group"]
        )
        dead = GaugeMetricFamily(
            "vidpulse_dead_letters",
            "Entries of the group in the dead-letter stream.",
            labels=["group"],
        )
        parts = report.get("partitions") or [report]
        streams = self.keys.partition_streams
        for g in report["groups"]:
            name = g["group"]
            ages: list[float] = []
            unread = 0
            for stream, part in zip(streams, parts, strict=True):
                for pg in part["groups"]:
                    if pg["group"] != name:
                        continue
                    oldest_unread_ms = self._oldest_unread_ms(
                        client, stream, pg["last_delivered_id"], pg["lag"]
                    )
                    if oldest_unread_ms:
                        ages.append((now_ms - oldest_unread_ms) / 1000)
                    if pg["oldest_pending_age_s"] is not None:
                        ages.append(pg["oldest_pending_age_s"])
                    unread += pg["lag"] if pg["lag"] is not None else int(bool(oldest_unread_ms))
            lag.add_metric([name], unread)
            lag_seconds.add_metric([name], max([0.0, *ages]))
            pending.add_metric([name], g["pending"])
            consumers.add_metric([name], g["consumers"])
            dead.add_metric([name], g["dead_letters"])
        families: list[Metric] = [length, lag, lag_seconds, pending, consumers, dead]
        if report.get("partitions"):
            families += self._partition_families(report["partitions"])
        return families

    @staticmethod
    def _partition_families(parts: list[dict[str, Any]]) -> list[Metric]:
        """Per partition (VIDPULSE_PARTITIONS > 1): its length, and each group's lag and
        pending entries in it."""
        length = GaugeMetricFamily(
            "vidpulse_partition_length", "Entries in the partition's stream.", labels=["partition"]
        )
        lag = GaugeMetricFamily(
            "vidpulse_partition_lag",
            "Entries of the partition not yet delivered to the group.",
            labels=["group", "partition"],
        )
        pending = GaugeMetricFamily(
            "vidpulse_partition_pending",
            "Entries of the partition delivered to the group and not yet acknowledged.",
            labels=["group", "partition"],
        )
        for p, part in enumerate(parts):
            length.add_metric([str(p)], part["length"])
            for g in part["groups"]:
                if g["lag"] is not None:
                    lag.add_metric([g["group"], str(p)], g["lag"])
                pending.add_metric([g["group"], str(p)], g["pending"])
        return [length, lag, pending]

    @staticmethod
    def _oldest_unread_ms(
        client: redis.Redis, stream: str, last_delivered_id: str, lag: int | None
    ) -> int | None:
        """Timestamp (ms) of the first entry after the group's last delivered one, if any."""
        if lag == 0:
            return None
        after: Any = client.xrange(stream, f"({last_delivered_id}", "+", count=1)
        if not after:
            return None
        return int(text(after[0][0]).split("-", 1)[0])


# -- serving ---------------------------------------------------------------------------


class _ProcessMetrics(Collector):
    """This process's own metrics, or every worker's when in multiprocess mode."""

    def __init__(self) -> None:
        self._multiprocess: CollectorRegistry | None = None
        if os.environ.get(MULTIPROC_ENV):
            self._multiprocess = CollectorRegistry()
            multiprocess.MultiProcessCollector(self._multiprocess)  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Metric]:
        return (self._multiprocess or REGISTRY).collect()


def metrics_registry(settings: Settings, *, stream_gauges: bool = True) -> CollectorRegistry:
    """A registry to expose: this process's metrics, plus the stream gauges if asked."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ProcessMetrics())
    if stream_gauges:
        registry.register(StreamCollector(settings))
    return registry


def metrics_route(settings: Settings, *, path: str = "/metrics") -> Route:
    """A Starlette route answering Prometheus text, for any app to include."""
    registry = metrics_registry(settings)

    async def endpoint(request: Request) -> Response:
        body = await run_in_threadpool(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return Route(path, endpoint, methods=["GET"])


@dataclass
class MetricsServer:
    """A Prometheus HTTP server on its own thread; `close()` stops it."""

    url: str
    _server: Any

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve_metrics(settings: Settings, *, port: int, host: str, tries: int = 1) -> MetricsServer:
    """Serve this process's metrics and the stream gauges on host:port (any path).

    When the port is taken, the next ones are tried, `tries` ports in all. Raises
    OSError when none can be bound.
    """
    registry = metrics_registry(settings)
    last = min(port + tries, 65536) - 1
    for candidate in range(port, last + 1):
        try:
            server, _ = start_http_server(candidate, addr=host, registry=registry)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE and candidate < last:
                continue
            raise
        return MetricsServer(url=f"http://{host}:{candidate}/metrics", _server=server)
    raise ValueError(f"no port to try from {port} ({tries} tries)")


@contextlib.contextmanager
def multiprocess_dir(workers: int) -> Iterator[str | None]:
    """For N worker processes, the directory their metric files go to.

    An operator's PROMETHEUS_MULTIPROC_DIR is used as given (empty it between runs);
    otherwise several workers get a fresh temporary one, removed afterwards. One
    worker needs none: its own registry is exact.
    """
    given = os.environ.get(MULTIPROC_ENV)
    if given or workers <= 1:
        yield given or None
        return
    path = tempfile.mkdtemp(prefix="vidpulse-metrics-")
    os.environ[MULTIPROC_ENV] = path
    try:
        yield path
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)
