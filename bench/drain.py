"""Processor throughput: each registered processor drains the same backlog, next to a
one-at-a-time worker (bench/baseline.py) consuming the same stream, in two shapes:

- bench shape: 100,000 events of the audience generator (`bench.traffic`), sessions of
  a few minutes spread over three days, so one session's events mostly come together;
- live shape: 10,000 concurrent lesson sessions x 10 beacons (`bench.live`), sessions
  round-robin, so a batch of 1,000 entries touches about 850 sessions (about 50 in the
  bench shape).

In the live shape, a processor without its fold (`bench.nofold`: reading, decoding,
the ledger and acknowledging, as every processor does them) drains the same backlog
too: the ceiling of any processor's rate on the machine.

The drain rate of a processor is timed from its first read to its last ack, sampled
from its consumer group (XINFO GROUPS every 20 ms); the process start-up around it is
reported too but left out of the rate, as it is for the one-at-a-time worker.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from dataclasses import dataclass
from typing import Any

import redis

from bench import baseline, live, nofold, traffic
from bench.env import BenchEnv
from processors.registry import PROCESSORS
from processors.streams import ensure_groups
from vidpulse.events import now_ms

Item = tuple[dict[str, Any], str, str]  # (event, user agent, referer)


SHAPES = ("bench", "live")
# The group (and ledger) the processor without a fold drains as (bench.nofold): one of
# the processors' own, reset like theirs between measurements.
NOFOLD_GROUP = "heatmap"


@dataclass(frozen=True)
class DrainConfig:
    backlog: int = 100_000
    live_sessions: int = 10_000
    live_beacons: int = 10
    shapes: tuple[str, ...] = SHAPES
    baseline_max_events: int = 100_000
    baseline_max_seconds: float = 20.0
    timeout_s: float = 300.0


def live_backlog(sessions: int, beacons: int, *, seed: int) -> tuple[list[Item], dict[str, Any]]:
    """`beacons` rounds of `sessions` concurrent sessions, in stream order; and their mix."""
    rounds = live.LiveTraffic(
        sessions, seed=seed, start_ms=live.backlog_start_ms(now_ms(), beacons)
    )
    items = list(live.entries(b for r in rounds.rounds(beacons) for b in r))
    return items, live.length_summary(rounds.lengths)


def fill_stream(env: BenchEnv, stream: str, items: list[Item]) -> int:
    """XADD `items` in order, fields exactly as the ingest writes them; the stream's length."""
    client = env.redis()
    try:
        pipe = client.pipeline(transaction=False)
        for i, fields in enumerate(traffic.stream_entries(items), 1):
            pipe.xadd(stream, fields)  # type: ignore[arg-type]
            if i % 2000 == 0:
                pipe.execute()
        pipe.execute()
        return int(client.xlen(stream))
    finally:
        client.close()


def _group(client: redis.Redis, stream: str, name: str) -> dict[str, Any]:
    for g in client.xinfo_groups(stream):
        gname = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
        if gname == name:
            return dict(g)
    return {}


def rewind(env: BenchEnv, stream: str, name: str) -> int:
    """Set group `name` back to the start of the stream (its backlog drained and acked);
    how many entries the stream still holds. Once every group had read past an entry
    the processors trimmed it: the entries the one-at-a-time worker read are gone."""
    client = env.redis()
    try:
        client.xgroup_setid(stream, name, "0", entries_read=0)
        return int(client.xlen(stream))
    finally:
        client.close()


def drain_one(
    env: BenchEnv,
    stream: str,
    name: str,
    total: int,
    timeout_s: float,
    *,
    trace: list[tuple[float, int]] | None = None,
    sample_every_s: float = 0.02,
    fold: bool = True,
) -> dict[str, Any]:
    """Run `vidpulse process NAME --burst` on the backlog; time it from its group's progress.

    With `trace`, every sample's (monotonic time, entries committed: read minus pending)
    is appended to it. `fold` False: the processor without its fold (bench.nofold).
    """
    settings = env.settings(stream)
    client = env.redis()
    started = time.monotonic()
    proc = subprocess.Popen(
        nofold.command(name, consumer="bench", burst=True, fold=fold),
        env=env.environ(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    first_read: float | None = None
    all_acked: float | None = None
    try:
        while proc.poll() is None and time.monotonic() - started < timeout_s:
            g = _group(client, stream, name)
            read = int(g.get("entries-read") or 0)
            pending = int(g.get("pending") or 0)
            now = time.monotonic()
            if read and first_read is None:
                first_read = now
            if read >= total and pending == 0 and all_acked is None:
                all_acked = now
            if trace is not None and g:
                trace.append((now, read - pending))
            time.sleep(sample_every_s)
        if proc.poll() is None:
            proc.kill()
            raise RuntimeError(f"processor {name} did not drain {total} events in {timeout_s}s")
        wall = time.monotonic() - started
        g = _group(client, stream, name)
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.returncode != 0:
            raise RuntimeError(f"processor {name} exited {proc.returncode}: {stderr[-800:]}")
        if all_acked is None:
            all_acked = time.monotonic()
        first = first_read if first_read is not None else started
        span = max(all_acked - first, 1e-6)
        with env.connect() as conn:
            applied = conn.execute(f'SELECT count(*) FROM "{name}_applied"').fetchone()
        return {
            "events": total,
            "drain_s": round(span, 3),
            "events_per_s": round(total / span, 1),
            "wall_s_with_startup": round(wall, 3),
            "entries_read": int(g.get("entries-read") or 0),
            "pending_after": int(g.get("pending") or 0),
            "ledger_rows": int(applied[0]) if applied else 0,
        }
    finally:
        client.close()


def run(env: BenchEnv, cfg: DrainConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"shapes": {}}
    for shape in cfg.shapes:
        if shape == "bench":
            items, mix = traffic.audience_events(cfg.backlog, seed=21), None
            label = "bench shape"
        elif shape == "live":
            items, mix = live_backlog(cfg.live_sessions, cfg.live_beacons, seed=22)
            label = f"live, {cfg.live_sessions:,} sessions x {cfg.live_beacons} beacons"
        else:
            raise ValueError(f"unknown backlog shape {shape!r}")
        result = drain_shape(env, cfg, shape, items)
        result["label"] = label
        if mix is not None:
            result["session_lengths"] = mix
        out["shapes"][shape] = result
    return out


def drain_shape(env: BenchEnv, cfg: DrainConfig, shape: str, items: list[Item]) -> dict[str, Any]:
    """The one-at-a-time worker, then every processor on fresh tables, on one stream of `items`."""
    stream = env.stream(f"drain-{shape}")
    client = env.redis()
    try:
        ensure_groups(client, stream)
    finally:
        client.close()
    filled = fill_stream(env, stream, items)
    sessions = [
        len({e["session_id"] for e, _, _ in items[i : i + 1000]})
        for i in range(0, len(items) - 999, 1000)
    ]
    out: dict[str, Any] = {
        "backlog": filled,
        "sessions_per_1000_entries": statistics.median(sessions) if sessions else 0,
        "processors": {},
    }
    env.truncate_all()
    one_at_a_time = baseline.run_one_at_a_time_worker(
        env.redis_url,
        env.database_url,
        stream,
        max_events=cfg.baseline_max_events,
        max_seconds=cfg.baseline_max_seconds,
    )
    out["baseline"] = one_at_a_time.as_dict()
    for name in PROCESSORS:
        env.truncate_all()
        result = drain_one(env, stream, name, filled, cfg.timeout_s)
        result["ratio"] = (
            result["events_per_s"] / one_at_a_time.events_per_s if one_at_a_time.events_per_s else 0
        )
        out["processors"][name] = result
    if shape == "live":
        # The ceiling: what reading, decoding, the ledger and acknowledging cost alone.
        env.truncate_all()
        left = rewind(env, stream, NOFOLD_GROUP)
        result = drain_one(env, stream, NOFOLD_GROUP, left, cfg.timeout_s, fold=False)
        result["ratio"] = (
            result["events_per_s"] / one_at_a_time.events_per_s if one_at_a_time.events_per_s else 0
        )
        out["without_fold"] = result
    env.delete_keys([stream])
    return out
