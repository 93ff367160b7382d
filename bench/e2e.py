"""End to end: ingest and every registered processor running, a steady tracker load.

`vidpulse simulate` sends tracker-like traffic at a steady rate to a real ingest
(uvicorn, one worker); every registered processor runs as its own `vidpulse process`.
Every 250 ms the bench samples, per consumer group, the age of the group's oldest
entry not yet acknowledged (an entry is acked right after its batch commits): its
pending entries' oldest id, or else the first entry after its last-delivered id. An
entry's id is the Redis server time at which the ingest appended it, so that age is
the lag of the group at that moment: no entry older than it is still uncommitted. The
p99 (and max) of those samples over the load is the figure. Throughput over time comes
from the same samples: the stream's entries-added and each group's read minus pending.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from bench import nofold, servers
from bench.cpu import CpuMeter
from bench.env import BenchEnv
from processors.registry import PROCESSORS
from processors.streams import ensure_groups, id_time_ms


@dataclass(frozen=True)
class E2EConfig:
    rate: float = 5000.0
    duration_s: float = 60.0
    sample_every_s: float = 0.25
    lag_target_s: float = 2.0
    settle_timeout_s: float = 60.0
    # Requests carry a session's events over this much client time (the tracker's own
    # beacons carry 1.5 s worth; a page hidden or offline for a while sends more).
    batch_window_ms: int = 60_000
    max_batch: int = 100
    connections: int = 64
    ingest_workers: int = 1


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def sample(client: redis.Redis, stream: str, names: list[str]) -> dict[str, Any]:
    """One observation: stream entries added, and per group committed count and lag."""
    seconds, micros = client.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    info = client.xinfo_stream(stream)
    groups = {_s(g["name"]): g for g in client.xinfo_groups(stream)}
    out: dict[str, Any] = {"t_ms": now_ms, "added": int(info.get("entries-added") or 0)}
    for name in names:
        g = groups.get(name)
        if g is None:
            continue
        pending = int(g["pending"])
        oldest: str | None = None
        if pending:
            first = client.xpending(stream, name)["min"]  # None if acked since XINFO
            oldest = None if first is None else _s(first)
        if oldest is None:
            nxt = client.xrange(stream, min=f"({_s(g['last-delivered-id'])}", count=1)
            if nxt:
                oldest = _s(nxt[0][0])
        lag = max(0.0, (now_ms - id_time_ms(oldest)) / 1000) if oldest else 0.0
        read = int(g.get("entries-read") or 0)
        out[name] = {"committed": read - pending, "pending": pending, "lag_s": lag}
    return out


class Sampler(threading.Thread):
    def __init__(self, env: BenchEnv, stream: str, names: list[str], every: float) -> None:
        super().__init__(daemon=True)
        self.client = env.redis()
        self.stream, self.names, self.every = stream, names, every
        self.samples: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.every):
            try:
                self.samples.append(sample(self.client, self.stream, self.names))
            except Exception as exc:  # a missed sample must not end the sampling
                self.errors.append(f"{type(exc).__name__}: {exc}")


def _percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def _stop_all(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs.values():
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


Sender = Callable[[str, dict[str, str]], dict[str, Any]]


def run(env: BenchEnv, cfg: E2EConfig) -> dict[str, Any]:
    """The bench shape: `vidpulse simulate` (Python) sends the load."""

    def simulate(url: str, proc_env: dict[str, str]) -> dict[str, Any]:
        sim = subprocess.run(
            [
                sys.executable,
                "-m",
                "vidpulse",
                "simulate",
                "--url",
                url,
                "--rate",
                str(cfg.rate),
                "--duration",
                str(cfg.duration_s),
                "--seed",
                "31",
                "--videos",
                "2000",
                "--viewers",
                "50000",
                "--batch-window-ms",
                str(cfg.batch_window_ms),
                "--max-batch",
                str(cfg.max_batch),
                "--connections",
                str(cfg.connections),
                "--json",
            ],
            env=proc_env,
            capture_output=True,
            text=True,
            timeout=cfg.duration_s + 120,
            check=False,
        )
        report: dict[str, Any] = (
            json.loads(sim.stdout.strip().splitlines()[-1]) if sim.stdout else {}
        )
        return report

    return run_pipeline(env, cfg, "e2e", simulate)


def run_pipeline(
    env: BenchEnv, cfg: E2EConfig, key: str, send: Sender, *, fold: bool = True
) -> dict[str, Any]:
    """Ingest and every processor running; `send(url, environment)` sends the load and
    returns what it reports; the groups' lag sampled throughout, until they catch up.
    `fold` False: every processor runs without its fold (bench.nofold)."""
    names = list(PROCESSORS)
    stream = env.stream(key)
    settings = env.settings(stream)
    proc_env = env.environ(settings)
    env.truncate_all()
    client = env.redis()
    ensure_groups(client, stream)

    procs: dict[str, subprocess.Popen[bytes]] = {}
    exited: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        logs = {name: stack.enter_context(tempfile.TemporaryFile()) for name in names}
        base, _ = stack.enter_context(
            servers.uvicorn_server(servers.INGEST_APP, proc_env, workers=cfg.ingest_workers)
        )
        stack.callback(_stop_all, procs)
        for name in names:
            procs[name] = subprocess.Popen(
                nofold.command(name, consumer="e2e", fold=fold),
                env=proc_env,
                stdout=subprocess.DEVNULL,
                stderr=logs[name],
            )
        time.sleep(2.0)  # let every processor connect and block on its group
        sampler = Sampler(env, stream, names, cfg.sample_every_s)
        sampler.start()
        meter = CpuMeter(env.database_url, env.redis_url)
        meter.start()
        stack.callback(meter.close)
        load_start = time.time() * 1000
        meter.start_counting()
        report = send(f"{base}/v1/events", proc_env)
        load_end = time.time() * 1000
        meter.stop_counting()
        # Let the groups catch up with what was sent, to report how long that takes.
        deadline = time.monotonic() + cfg.settle_timeout_s
        while time.monotonic() < deadline:
            last = sampler.samples[-1] if sampler.samples else None
            if last and all(last.get(n, {}).get("lag_s", 1) == 0 for n in names):
                break
            time.sleep(cfg.sample_every_s)
        sampler.stop.set()
        sampler.join()
        # A processor that stopped before being told to, or logged a warning, is a finding.
        for n, p in procs.items():
            tail = _log_tail(logs[n], p.poll())
            if tail["exit_code"] is not None or tail["stderr_tail"]:
                exited[n] = tail
    client.close()
    env.delete_keys([stream])
    result = summarise(sampler.samples, names, report, load_start, load_end, cfg)
    result["processors_exited_or_warned"] = exited
    result["folds"] = fold
    result["cpu"] = meter.result()
    return result


def _log_tail(log: Any, code: int | None) -> dict[str, Any]:
    log.seek(0)
    return {"exit_code": code, "stderr_tail": log.read()[-2000:].decode(errors="replace")}


def summarise(
    samples: list[dict[str, Any]],
    names: list[str],
    report: dict[str, Any],
    load_start_ms: float,
    load_end_ms: float,
    cfg: E2EConfig,
) -> dict[str, Any]:
    # The load starts with the first append (the simulator first makes its audience).
    first = next((s for s in samples if s["added"] > 0), None)
    if first is not None:
        load_start_ms = max(load_start_ms, first["t_ms"] - cfg.sample_every_s * 1000)
        load_end_ms = min(load_end_ms, load_start_ms + cfg.duration_s * 1000)
    during = [s for s in samples if load_start_ms <= s["t_ms"] <= load_end_ms]
    groups: dict[str, Any] = {}
    for name in names:
        lags = [s[name]["lag_s"] for s in during if name in s]
        settled = next(
            (
                (s["t_ms"] - load_end_ms) / 1000
                for s in samples
                if s["t_ms"] >= load_end_ms and s.get(name, {}).get("lag_s", 1) == 0
            ),
            None,
        )
        groups[name] = {
            "lag_p99_s": round(_percentile(lags, 99), 3),
            "lag_p50_s": round(_percentile(lags, 50), 3),
            "lag_max_s": round(max(lags, default=0.0), 3),
            "caught_up_after_load_s": None if settled is None else round(settled, 2),
        }
    series = []
    for prev, cur in itertools.pairwise(samples):
        dt = (cur["t_ms"] - prev["t_ms"]) / 1000
        if dt <= 0:
            continue
        point: dict[str, Any] = {
            "t_s": round((cur["t_ms"] - load_start_ms) / 1000, 2),
            "ingest_eps": round((cur["added"] - prev["added"]) / dt, 1),
        }
        for name in names:
            if name in cur and name in prev:
                done = cur[name]["committed"] - prev[name]["committed"]
                point[f"{name}_eps"] = round(done / dt, 1)
                point[f"{name}_lag_s"] = round(cur[name]["lag_s"], 3)
        series.append(point)
    worst = max(names, key=lambda n: groups[n]["lag_p99_s"]) if names else None
    return {
        "rate": cfg.rate,
        "duration_s": cfg.duration_s,
        "lag_target_s": cfg.lag_target_s,
        "sender": report,
        "groups": groups,
        "worst_group": worst,
        "worst_lag_p99_s": groups[worst]["lag_p99_s"] if worst else None,
        "samples_during_load": len(during),
        "accepted": samples[-1]["added"] if samples else 0,
        "series": series,
        "batch_window_ms": cfg.batch_window_ms,
        "max_batch": cfg.max_batch,
    }
