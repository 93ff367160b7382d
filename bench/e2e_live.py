"""End to end, live-shaped: the tracker's beacons of many concurrent sessions, paced by wrk.

The browser tracker posts what it collected in the last 1.5 s: while a video plays,
one or two events per request (a `progress`, with a `milestone` or a `complete` now
and then; `session_start` and `play` together). At 5,000 events/s that is over 4,000
requests/s from about 65,000 concurrent sessions, each beaconing every 15 s. The bodies
are made before the run (`bench.live`, sessions already under way at a steady state,
one beacon per session per 15 s round, each at its slot's own offset in the round; the
events' `ts` is the time the beacon is planned for, from the start of the run), each
with its session's User-Agent and Referer. wrk (`bench/live.lua`, one thread) sends
them in order at a steady request rate, so that the events leave at the target rate; a
Python sender at this rate would take a large share of the CPU the pipeline needs on
a small machine. Lag is measured as in `bench.e2e`.
"""

from __future__ import annotations

import json
import math
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench import e2e, live, loadgen
from bench.env import BenchEnv
from vidpulse.events import now_ms

LIVE_SCRIPT = Path(__file__).with_name("live.lua")
# Events per beacon of the live traffic at a steady state (measured: 1.16); only sizes
# the number of sessions, the pacing uses the generated bodies' own mean.
EVENTS_PER_BEACON = 1.16


@dataclass(frozen=True)
class LiveE2EConfig(e2e.E2EConfig):
    seed: int = 51
    # Bodies made for this much more than the run, in case the sender catches up late.
    spare: float = 0.25
    # Seconds between making the bodies and the first request (start-up of the pipeline).
    lead_s: float = 8.0


def make_bodies(path: Path, cfg: LiveE2EConfig, start_ms: int) -> dict[str, Any]:
    """Write the run's requests to `path` (the format of live.lua); what they hold."""
    slots = math.ceil(cfg.rate * live.BEACON_MS / 1000 / EVENTS_PER_BEACON)
    rounds = math.ceil(cfg.duration_s * (1 + cfg.spare) * 1000 / live.BEACON_MS)
    traffic = live.LiveTraffic(slots, seed=cfg.seed, start_ms=start_ms, phase=True)
    header_sets: dict[tuple[str, str], int] = {}
    lines: list[bytes] = []
    events_per_request: list[int] = []
    for beacon in traffic.timeline(rounds):
        key = (beacon.user_agent, beacon.referer)
        if key not in header_sets:
            header_sets[key] = len(header_sets) + 1
        lines.append(b"%d\t%s" % (header_sets[key], orjson.dumps(beacon.events)))
        events_per_request.append(len(beacon.events))
    heads = [f"H\t{ua}\t{ref}".encode() for ua, ref in header_sets]
    path.write_bytes(b"\n".join(heads + lines) + b"\n")
    events = sum(events_per_request)
    return {
        "sessions_concurrent": slots,
        "requests": len(lines),
        "events": events,
        "events_per_request": round(events / len(lines), 3),
        "requests_with_2_or_more": sum(1 for n in events_per_request if n > 1),
        "session_lengths": live.length_summary(traffic.lengths),
        "per_request": events_per_request,
    }


def run(env: BenchEnv, cfg: LiveE2EConfig, *, fold: bool = True) -> dict[str, Any]:
    """The run; `fold` False: every processor without its fold (the machine's ceiling)."""
    wrk = loadgen.ensure_wrk()
    with tempfile.TemporaryDirectory(prefix="vidpulse-bench-live-") as tmp:
        path = Path(tmp) / "beacons.txt"
        made_at = time.monotonic()
        made = make_bodies(path, cfg, now_ms() + int(cfg.lead_s * 1000))
        per_request = made.pop("per_request")
        made["made_in_s"] = round(time.monotonic() - made_at, 2)
        request_rate = cfg.rate / made["events_per_request"]

        def send(url: str, _env: dict[str, str]) -> dict[str, Any]:
            cmd = [
                wrk,
                "-t1",
                f"-c{cfg.connections}",
                f"-d{max(1, round(cfg.duration_s))}s",
                "--timeout=10s",
                "-s",
                str(LIVE_SCRIPT),
                url,
                "--",
                str(path),
                f"{request_rate:.3f}",
            ]
            started = time.monotonic()
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=cfg.duration_s + 120, check=False
            )
            wall = time.monotonic() - started
            summary = next(
                (
                    json.loads(line[len("WRKJSON ") :])
                    for line in done.stdout.splitlines()
                    if line.startswith("WRKJSON ")
                ),
                None,
            )
            if summary is None:
                raise RuntimeError(f"wrk printed no summary ({done.returncode}): {done.stderr}")
            requests = int(summary["requests"])
            seconds = summary["duration_us"] / 1e6
            sent = sum(per_request[:requests])
            errors = sum(
                summary[k]
                for k in (
                    "connect_errors",
                    "read_errors",
                    "write_errors",
                    "status_errors",
                    "timeouts",
                )
            )
            return {
                "sender": "wrk (bench/live.lua), 1 thread",
                "requests": requests,
                "events_sent": sent,
                "requests_per_s": round(requests / seconds, 1) if seconds else 0.0,
                "achieved_rate": round(sent / seconds, 1) if seconds else 0.0,
                "target_requests_per_s": round(request_rate, 1),
                "errors": errors,
                "bodies_exhausted": requests > len(per_request),
                "latency_p50_ms": summary["latency_p50_us"] / 1000,
                "latency_p99_ms": summary["latency_p99_us"] / 1000,
                "latency_max_ms": summary["latency_max_us"] / 1000,
                "elapsed_s": round(seconds, 2),
                "wall_s_with_loading": round(wall, 2),
            }

        result = e2e.run_pipeline(env, cfg, "e2e-live", send, fold=fold)
    result["traffic"] = made
    return result
