"""Ingest throughput, each figure beside its yardstick measured in the same run.

- single event per request vs a bare Starlette endpoint (same uvicorn flags, same
  wrk invocation, same bodies);
- 100 events per request (events/s) vs `redis-benchmark` doing pipelined XADD of the
  same entry (same fields, same sizes) into a stream on the same Redis.
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from bench import loadgen, servers, traffic
from bench.env import BenchEnv


@dataclass(frozen=True)
class IngestConfig:
    duration_s: float = 10.0
    warmup_s: float = 2.0
    rounds: int = 3
    connections: int = 64
    batch_connections: int = 16
    batch_workers: int = 2
    events_per_batch: int = 100
    redis_benchmark_requests: int = 1_000_000


def _ingest_env(env: BenchEnv, stream: str) -> dict[str, str]:
    # No backpressure during the measurement: the stream is deleted after each run.
    settings = env.settings(stream, max_stream_length=1_000_000_000)
    return env.environ(settings)


def _stream_length(env: BenchEnv, stream: str) -> int:
    client = env.redis()
    try:
        return int(client.xlen(stream))
    finally:
        client.close()


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def single_event(env: BenchEnv, cfg: IngestConfig, workdir: Path) -> dict[str, Any]:
    """Requests/s of POST /v1/events with one event, next to the bare endpoint's.

    Both servers run side by side; the rounds alternate between them so that any
    drift in what else the machine is doing falls on both alike. Medians are compared.
    """
    events = [e for e, _, _ in traffic.audience_events(20_000, seed=11)]
    bodies = workdir / "single.txt"
    traffic.write_bodies(bodies, events, 1)
    stream = env.stream("ingest-single")
    rounds: list[dict[str, Any]] = []
    with (
        servers.uvicorn_server(servers.BARE_APP) as (bare_base, _),
        servers.uvicorn_server(servers.INGEST_APP, _ingest_env(env, stream)) as (ingest_base, _),
    ):
        urls = {"bare": f"{bare_base}/v1/events", "ingest": f"{ingest_base}/v1/events"}
        for url in urls.values():
            loadgen.run_wrk(url, bodies, duration_s=cfg.warmup_s, connections=cfg.connections)
        for i in range(cfg.rounds):
            order = ("bare", "ingest") if i % 2 == 0 else ("ingest", "bare")
            row = {}
            for side in order:
                result = loadgen.run_wrk(
                    urls[side], bodies, duration_s=cfg.duration_s, connections=cfg.connections
                )
                row[side] = result.as_dict()
            rounds.append(row)
    appended = _stream_length(env, stream)
    env.delete_keys([stream])
    bare = _median([r["bare"]["rps"] for r in rounds])
    ingest = _median([r["ingest"]["rps"] for r in rounds])
    errors = sum(r[side]["errors"] for r in rounds for side in ("bare", "ingest"))
    return {
        "ingest": {"rps": ingest},
        "bare": {"rps": bare},
        "rounds": rounds,
        "errors": errors,
        "stream_entries_appended": appended,
        "connections": cfg.connections,
        "ratio": ingest / bare if bare else 0.0,
    }


def batched(env: BenchEnv, cfg: IngestConfig, workdir: Path) -> dict[str, Any]:
    """Events/s of POST /v1/events with 100 events a request, next to redis-benchmark XADD.

    Rounds alternate between the two, as for single events; medians are compared.
    """
    items = traffic.audience_events(100_000, seed=12)
    bodies = workdir / "batched.txt"
    traffic.write_bodies(bodies, [e for e, _, _ in items], cfg.events_per_batch)
    sample = next(traffic.stream_entries(items[:1]))
    stream = env.stream("ingest-batched")
    rounds: list[dict[str, Any]] = []
    with servers.uvicorn_server(
        servers.INGEST_APP, _ingest_env(env, stream), workers=cfg.batch_workers
    ) as (base, _):
        url = f"{base}/v1/events"
        loadgen.run_wrk(url, bodies, duration_s=cfg.warmup_s, connections=cfg.batch_connections)
        for i in range(cfg.rounds):
            row: dict[str, Any] = {}
            for side in ("ingest", "xadd") if i % 2 == 0 else ("xadd", "ingest"):
                if side == "ingest":
                    result = loadgen.run_wrk(
                        url, bodies, duration_s=cfg.duration_s, connections=cfg.batch_connections
                    )
                    row["ingest"] = {
                        **result.as_dict(),
                        "events_per_s": round(result.rps * cfg.events_per_batch, 1),
                    }
                else:
                    row["xadd"] = redis_benchmark_xadd(env, sample, cfg.redis_benchmark_requests)
            rounds.append(row)
            env.delete_keys([stream])  # keep Redis memory flat between rounds
    events_per_s = _median([r["ingest"]["events_per_s"] for r in rounds])
    xadd = _median([r["xadd"]["ops_per_s"] for r in rounds])
    return {
        "ingest": {"events_per_s": events_per_s},
        "redis_benchmark": {
            "ops_per_s": xadd,
            **{k: v for k, v in rounds[-1]["xadd"].items() if k != "ops_per_s"},
        },
        "rounds": rounds,
        "events_per_request": cfg.events_per_batch,
        "workers": cfg.batch_workers,
        "connections": cfg.batch_connections,
        "ratio": events_per_s / xadd if xadd else 0.0,
    }


def redis_benchmark_xadd(
    env: BenchEnv, fields: dict[str, bytes | str | int], requests: int
) -> dict[str, Any]:
    """Pipelined XADD ops/s from redis-benchmark, one entry shaped like the ingest's."""
    binary = loadgen.ensure_tool("redis-benchmark", "redis-tools")
    url = urlsplit(env.redis_url)
    stream = env.stream("redis-benchmark")
    args: list[str] = []
    for key, value in fields.items():
        args += [key, value.decode() if isinstance(value, bytes) else str(value)]
    cmd = [
        binary,
        "-h",
        url.hostname or "127.0.0.1",
        "-p",
        str(url.port or 6379),
        "-n",
        str(requests),
        "-c",
        "50",
        "-P",
        "100",
        "--csv",
        "XADD",
        stream,
        "*",
        *args,
    ]
    started = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
    elapsed = time.monotonic() - started
    appended = _stream_length(env, stream)
    env.delete_keys([stream])
    # The test name (the command) holds unescaped quotes: read the numbers from the right.
    last = done.stdout.strip().splitlines()[-1]
    ops = float(last.rsplit(",", 7)[1].strip('"'))
    return {
        "ops_per_s": ops,
        "requests": requests,
        "clients": 50,
        "pipeline": 100,
        "entry_bytes": len(orjson.dumps({k: str(v) for k, v in fields.items()})),
        "stream_entries_appended": appended,
        "wall_s": round(elapsed, 2),
    }


def run(env: BenchEnv, cfg: IngestConfig) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="vidpulse-bench-") as tmp:
        work = Path(tmp)
        return {"single": single_event(env, cfg, work), "batched": batched(env, cfg, work)}
