"""One Redis against a 3-master Redis Cluster, side by side in the same minutes.

A local cluster (three masters, a replica each, `redis-server` binaries) is started
for the part and removed after it. The two layouts take turns, round by round:

- 1 Redis: REDIS_URL, one stream (VIDPULSE_PARTITIONS=1), one consumer per processor;
- cluster: `redis+cluster://`, 6 partitions, two consumers per processor.

Each round measures
- ingest: events/s of POST /v1/events with 100 events a request (wrk, 2 workers);
- end to end: the ingest under the same load with the four processors running; events
  appended divided by the time from the load's start until every group has applied and
  acknowledged all of them.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import loadgen, servers, traffic
from bench.env import BenchEnv
from bench.report import Row
from processors.registry import PROCESSORS
from processors.streams import ensure_groups
from vidpulse import devservices
from vidpulse.keys import Keys
from vidpulse.redisclient import sync_client
from vidpulse.settings import Settings


@dataclass(frozen=True)
class ClusterConfig:
    duration_s: float = 10.0
    rounds: int = 2
    connections: int = 16
    workers: int = 2
    events_per_batch: int = 100
    partitions: int = 6
    consumers: int = 2  # per processor, on the cluster
    settle_timeout_s: float = 180.0


def _layouts(env: BenchEnv, cluster_url: str, cfg: ClusterConfig) -> dict[str, dict[str, Any]]:
    return {
        "redis": {"redis_url": env.redis_url, "partitions": 1, "consumers": 1},
        "cluster": {
            "redis_url": cluster_url,
            "partitions": cfg.partitions,
            "consumers": cfg.consumers,
        },
    }


def _settings(env: BenchEnv, stream: str, layout: dict[str, Any]) -> Settings:
    return env.settings(
        stream,
        redis_url=layout["redis_url"],
        partitions=layout["partitions"],
        max_stream_length=1_000_000_000,
    )


def _appended(client: Any, keys: Keys) -> int:
    return sum(int(client.xlen(s)) for s in keys.partition_streams)


def _caught_up(client: Any, keys: Keys, appended: int) -> bool:
    """Every group has had every entry delivered and acknowledged, in every partition."""
    for stream in keys.partition_streams:
        for group in client.xinfo_groups(stream):
            if int(group["pending"]) or group.get("lag") not in (0, None):
                return False
            read = int(group.get("entries-read") or 0)
            if group.get("lag") is None and read < int(client.xlen(stream)):
                return False  # lag unknown (entries deleted): entries read tell
    return appended > 0


def _load(
    environ: dict[str, str], bodies: Path, cfg: ClusterConfig
) -> tuple[loadgen.WrkResult, float]:
    """POST `bodies` to an ingest of `environ` under wrk for the round's duration; the
    result and the moment the load began."""
    with servers.uvicorn_server(servers.INGEST_APP, environ, workers=cfg.workers) as (base, _):
        started = time.monotonic()
        result = loadgen.run_wrk(
            f"{base}/v1/events", bodies, duration_s=cfg.duration_s, connections=cfg.connections
        )
    return result, started


def _ingest_round(
    env: BenchEnv, layout: dict[str, Any], bodies: Path, cfg: ClusterConfig, name: str
) -> dict[str, Any]:
    stream = env.stream(f"cluster-{name}")
    settings = _settings(env, stream, layout)
    keys = Keys.of(settings)
    client = sync_client(settings.redis_url)
    try:
        result, _ = _load(env.environ(settings), bodies, cfg)
        appended = _appended(client, keys)
        client.delete(*keys.partition_streams)
    finally:
        client.close()
    return {"events_per_s": appended / result.duration_s, "errors": result.errors}


def _e2e_round(
    env: BenchEnv, layout: dict[str, Any], bodies: Path, cfg: ClusterConfig, name: str
) -> dict[str, Any]:
    stream = env.stream(f"cluster-e2e-{name}")
    settings = _settings(env, stream, layout)
    keys = Keys.of(settings)
    proc_env = env.environ(settings)
    env.truncate_all()
    client = sync_client(settings.redis_url)
    for s in keys.partition_streams:
        ensure_groups(client, s)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for processor in PROCESSORS:
            for c in range(layout["consumers"]):
                command = [sys.executable, "-m", "vidpulse", "process", processor]
                procs.append(
                    subprocess.Popen(
                        [*command, "--consumer", f"bench{c}"],
                        env=proc_env,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
        result, started = _load(proc_env, bodies, cfg)
        appended = _appended(client, keys)
        deadline = time.monotonic() + cfg.settle_timeout_s
        while not _caught_up(client, keys, appended) and time.monotonic() < deadline:
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        done = _caught_up(client, keys, appended)
    finally:
        for proc in procs:
            servers.stop_process(proc)
        client.delete(*keys.partition_streams)
        client.close()
    return {
        "events": appended,
        "seconds": round(elapsed, 2),
        "events_per_s": appended / elapsed if done else 0.0,
        "caught_up": done,
        "errors": result.errors,
    }


def run(env: BenchEnv, cfg: ClusterConfig) -> dict[str, Any]:
    """Ingest and end-to-end events/s on one Redis and on the cluster, alternating."""
    tmp = Path(tempfile.mkdtemp(prefix="vidpulse-bench-cluster-"))
    cluster = devservices.start_redis_cluster(tmp)
    try:
        items = traffic.audience_events(100_000, seed=41)
        bodies = tmp / "batched.txt"
        traffic.write_bodies(bodies, [e for e, _, _ in items], cfg.events_per_batch)
        layouts = _layouts(env, cluster.url, cfg)
        rounds: list[dict[str, Any]] = []
        for i in range(cfg.rounds):
            order = ("redis", "cluster") if i % 2 == 0 else ("cluster", "redis")
            row: dict[str, Any] = {}
            for name in order:
                row[name] = {
                    "ingest": _ingest_round(env, layouts[name], bodies, cfg, f"{name}{i}"),
                    "e2e": _e2e_round(env, layouts[name], bodies, cfg, f"{name}{i}"),
                }
            rounds.append(row)
    finally:
        cluster.stop()
    out: dict[str, Any] = {"rounds": rounds, "partitions": cfg.partitions}
    for name in ("redis", "cluster"):
        out[name] = {
            part: statistics.median(r[name][part]["events_per_s"] for r in rounds)
            for part in ("ingest", "e2e")
        }
    return out


def rows(run: dict[str, Any]) -> list[Row]:
    """The cluster's figures beside one Redis's, measured in the same minutes."""
    out: list[Row] = []
    for part, label in (("ingest", "ingest, 100 events/request"), ("e2e", "end to end")):
        redis_value, cluster_value = run["redis"][part], run["cluster"][part]
        out.append(
            Row(
                figure=f"{label}: 3-master cluster, {run['partitions']} partitions",
                value=cluster_value,
                unit="events/s",
                baseline_name="1 Redis",
                baseline=redis_value,
                ratio=cluster_value / redis_value if redis_value else None,
                target="(reported)",
                passed=True,
            )
        )
    return out
