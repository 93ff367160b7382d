"""`vidpulse simulate`: realistic tracker traffic at a steady event rate, to any ingest URL.

Viewers come from `tools.audience` (sessions of session_start, play, progress with
played ranges, pauses, seeks, milestones, completion...). Each request carries what a
tracker on one page would send in one beacon: consecutive events of one session whose
client times lie within a batch window (the tracker's is 1.5 s), as a JSON array in a
`text/plain` body (what sendBeacon sends), with the session's User-Agent and Referer.

Requests are paced so that events leave at `rate` per second; a 503 is honoured as the
tracker does, by keeping the batch and sending it again after Retry-After. The run is
bounded: it stops sending new batches after `duration` seconds and waits at most
`grace` seconds for requests in flight and retries already due; what is left then is
reported as undelivered.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import queue
import random
import ssl
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from tools.audience import generate_audience
from vidpulse.events import now_ms

TRACKER_BATCH_WINDOW_MS = 1500  # the tracker's BATCH_DELAY
MAX_EVENTS_PER_REQUEST = 500  # the ingest's default limit
_SESSIONS_PER_CHUNK = 400
_REQUEST_TIMEOUT_S = 10.0
_DEFAULT_RETRY_AFTER_S = 1.0


@dataclass(frozen=True, slots=True)
class Beacon:
    """One request's worth of one session's events."""

    body: bytes
    events: int
    user_agent: str
    referer: str | None


@dataclass
class Report:
    """What a simulation sent and what the ingest answered."""

    url: str
    rate: float
    duration_s: float
    seed: int
    requests: int = 0
    events_sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    retried: int = 0
    errors: int = 0
    undelivered: int = 0
    elapsed_s: float = 0.0
    generator_stalls: int = 0
    latency_ms: list[float] = field(default_factory=list, repr=False)
    first_error: str | None = None

    @property
    def achieved_rate(self) -> float:
        return self.events_sent / self.elapsed_s if self.elapsed_s else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        latencies = sorted(out.pop("latency_ms"))
        out["achieved_rate"] = round(self.achieved_rate, 1)
        out["latency_p50_ms"] = _percentile(latencies, 50)
        out["latency_p99_ms"] = _percentile(latencies, 99)
        return out

    def summary(self) -> str:
        d = self.as_dict()
        lines = [
            f"sent {self.events_sent} events in {self.requests} requests over "
            f"{self.elapsed_s:.1f}s ({d['achieved_rate']:.0f} events/s, target {self.rate:g})",
            f"accepted {self.accepted}, duplicates {self.duplicates}, rejected {self.rejected}, "
            f"errors {self.errors}, retried after 503 {self.retried}, "
            f"undelivered {self.undelivered}",
            f"latency p50 {d['latency_p50_ms']} ms, p99 {d['latency_p99_ms']} ms "
            f"(seed {self.seed})",
        ]
        if self.first_error:
            lines.append(f"first error: {self.first_error}")
        return "\n".join(lines)


def _percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    k = min(len(values) - 1, max(0, math.ceil(p / 100 * len(values)) - 1))
    return round(values[k], 2)


def beacons(
    rng: random.Random,
    *,
    sessions: int,
    videos: int,
    viewers: int,
    window_ms: int,
    max_batch: int,
) -> list[Beacon]:
    """Tracker-like beacons of `sessions` new sessions, in the order browsers would send them."""
    audience = generate_audience(
        rng, videos=videos, viewers=viewers, sessions=sessions, now_ms=now_ms()
    )
    timed: list[tuple[int, int, Beacon]] = []
    for s in audience:
        batch: list[dict[str, Any]] = []
        for event in s.events:
            if batch and (event["ts"] - batch[0]["ts"] > window_ms or len(batch) >= max_batch):
                timed.append((batch[0]["ts"], len(timed), _beacon(batch, s.user_agent, s.referer)))
                batch = []
            batch.append(event)
        if batch:
            timed.append((batch[0]["ts"], len(timed), _beacon(batch, s.user_agent, s.referer)))
    heapq.heapify(timed)
    return [heapq.heappop(timed)[2] for _ in range(len(timed))]


def _beacon(events: list[dict[str, Any]], user_agent: str, referer: str | None) -> Beacon:
    return Beacon(orjson.dumps(events), len(events), user_agent, referer)


class _Generator(threading.Thread):
    """Makes beacons ahead of the sender, chunk by chunk, from one seeded generator."""

    def __init__(self, seed: int, **params: int) -> None:
        super().__init__(name="vidpulse-simulate-generator", daemon=True)
        self.rng = random.Random(seed)
        self.params = params
        self.chunks: queue.Queue[list[Beacon]] = queue.Queue(maxsize=4)
        self.stop = threading.Event()

    def next_chunk(self) -> list[Beacon]:
        return beacons(self.rng, sessions=_SESSIONS_PER_CHUNK, **self.params)

    def run(self) -> None:
        while not self.stop.is_set():
            chunk = self.next_chunk()
            while not self.stop.is_set():
                try:
                    self.chunks.put(chunk, timeout=0.2)
                    break
                except queue.Full:
                    continue


class _Connection:
    """One keep-alive HTTP/1.1 connection to the ingest."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.tls = parts.scheme == "https"
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.host_header = parts.netloc.rsplit("@", 1)[-1]
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, beacon: Beacon) -> tuple[int, dict[str, str], bytes]:
        if self.writer is None or self.writer.is_closing():
            context = ssl.create_default_context() if self.tls else None
            self.reader, self.writer = await asyncio.open_connection(
                self.host, self.port, ssl=context
            )
        assert self.reader is not None
        head = [
            f"POST {self.path} HTTP/1.1",
            f"Host: {self.host_header}",
            "Content-Type: text/plain;charset=UTF-8",
            f"Content-Length: {len(beacon.body)}",
            f"User-Agent: {beacon.user_agent}",
        ]
        if beacon.referer:
            head.append(f"Referer: {beacon.referer}")
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + beacon.body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("connection closed by the server")
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _retry_after(headers: dict[str, str]) -> float:
    try:
        return max(0.0, float(headers.get("retry-after", "")))
    except ValueError:
        return _DEFAULT_RETRY_AFTER_S


async def _simulate(
    url: str,
    rate: float,
    duration: float,
    *,
    seed: int,
    videos: int,
    viewers: int,
    window_ms: int,
    max_batch: int,
    connections: int,
    grace: float,
    progress: Callable[[Report], None] | None,
) -> Report:
    report = Report(url=url, rate=rate, duration_s=duration, seed=seed)
    generator = _Generator(
        seed, videos=videos, viewers=viewers, window_ms=window_ms, max_batch=max_batch
    )
    pending: list[Beacon] = generator.next_chunk()  # ready before the clock starts
    generator.start()
    loop = asyncio.get_running_loop()
    outbox: asyncio.Queue[Beacon] = asyncio.Queue(maxsize=connections * 4)
    in_flight = 0
    retries: set[asyncio.Task[None]] = set()
    started = loop.time()
    end = started + duration
    hard_end = end + grace

    async def retry_later(beacon: Beacon, delay: float) -> None:
        await asyncio.sleep(delay)
        await outbox.put(beacon)

    async def worker() -> None:
        nonlocal in_flight
        conn = _Connection(url)
        while True:
            beacon = await outbox.get()
            in_flight += 1
            sent_at = loop.time()
            try:
                status, headers, body = await asyncio.wait_for(
                    conn.post(beacon), _REQUEST_TIMEOUT_S
                )
            except (OSError, TimeoutError, ValueError, IndexError) as exc:
                conn.close()
                report.errors += 1
                report.undelivered += beacon.events
                report.first_error = report.first_error or f"{type(exc).__name__}: {exc}"
                continue
            finally:
                in_flight -= 1
                report.requests += 1
            report.latency_ms.append((loop.time() - sent_at) * 1000)
            if status == 503 and loop.time() < hard_end:
                report.retried += 1
                task = asyncio.create_task(retry_later(beacon, _retry_after(headers)))
                retries.add(task)
                task.add_done_callback(retries.discard)
                continue
            if status in (202, 422):
                answer = orjson.loads(body)
                report.accepted += int(answer.get("accepted", 0))
                report.duplicates += int(answer.get("duplicates", 0))
                report.rejected += len(answer.get("rejected", ()))
                continue
            report.errors += 1
            report.undelivered += beacon.events
            report.first_error = report.first_error or f"HTTP {status}: {body[:200]!r}"

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    next_report = started + 5
    try:
        while loop.time() < end:
            if not pending:
                try:
                    pending = generator.chunks.get_nowait()
                except queue.Empty:
                    report.generator_stalls += 1
                    await asyncio.sleep(0.01)
                    continue
                pending.reverse()  # pop() from the end keeps the order
            due = started + report.events_sent / rate
            wait = due - loop.time()
            if wait > 0.002:
                await asyncio.sleep(wait)
            beacon = pending.pop()
            await outbox.put(beacon)
            report.events_sent += beacon.events
            if progress is not None and loop.time() >= next_report:
                next_report += 5
                report.elapsed_s = loop.time() - started
                progress(report)
        report.elapsed_s = loop.time() - started
        while (outbox.qsize() or in_flight or retries) and loop.time() < hard_end:
            await asyncio.sleep(0.05)
    finally:
        generator.stop.set()
        for task in [*workers, *retries]:
            task.cancel()
        await asyncio.gather(*workers, *retries, return_exceptions=True)
    while not outbox.empty():
        report.undelivered += outbox.get_nowait().events
    return report


def simulate(
    url: str,
    *,
    rate: float,
    duration: float,
    seed: int | None = None,
    videos: int = 200,
    viewers: int = 2000,
    window_ms: int = TRACKER_BATCH_WINDOW_MS,
    max_batch: int = MAX_EVENTS_PER_REQUEST,
    connections: int = 32,
    grace: float = 10.0,
    progress: Callable[[Report], None] | None = None,
) -> Report:
    """Send tracker-like traffic to `url` at `rate` events/s for `duration` seconds."""
    if rate <= 0 or duration <= 0:
        raise ValueError("rate and duration must be positive")
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    return asyncio.run(
        _simulate(
            url,
            rate,
            duration,
            seed=seed,
            videos=videos,
            viewers=viewers,
            window_ms=window_ms,
            max_batch=max_batch,
            connections=connections,
            grace=grace,
            progress=progress,
        )
    )


def main_progress(report: Report) -> None:
    print(
        f"  {report.elapsed_s:5.0f}s  sent {report.events_sent}  accepted {report.accepted}  "
        f"errors {report.errors}  retried {report.retried}",
        flush=True,
    )
