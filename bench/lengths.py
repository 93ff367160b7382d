"""Per-event cost against session length: progress and heatmap early and late in long sessions.

One live-shaped backlog of `sessions` concurrent hour-long lessons (`bench.live`, every
session 240 beacons, sessions round-robin, so each batch holds about one beacon of
each of up to 1,000 sessions), drained by each processor (`vidpulse process NAME
--burst`, fresh tables) while the bench samples its group every 10 ms: the entries
committed (read minus pending) against time. Two windows of the same drain are
compared, in stream positions known from the generation: beacon rounds 2-11 (sessions
10 beacons old; round 1, the session starts, is left out with the process warm-up) and
rounds 231-240 (the last 10 beacons of 240-beacon sessions, every session's state
already built by the 230 rounds before). A window's time runs from the first sample at
or past its first entry to the first sample at or past its last; its cost is that time
over the entries committed between those two samples, and, less moved by other work on
a shared machine, the median over the window's commits of each commit's time (since the
one before) over its entries: the figure printed.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from bench import drain, live
from bench.env import BenchEnv
from processors.streams import ensure_groups
from vidpulse.events import now_ms


@dataclass(frozen=True)
class LengthsConfig:
    sessions: int = 1_000
    window: int = 10  # beacon rounds per window
    processors: tuple[str, ...] = ("progress", "heatmap")
    sample_every_s: float = 0.01
    timeout_s: float = 300.0


def window_cost(trace: list[tuple[float, int]], first: int, last: int) -> dict[str, float] | None:
    """µs per event over stream positions [first, last) from (time, committed) samples.

    `us_per_event` is the window's time over its entries; `us_per_event_median` the
    median over its commits (batches) of each one's time over its entries, which a
    burst of other work on a shared machine moves less.
    """
    start = next((i for i, s in enumerate(trace) if s[1] >= first), None)
    end = next((i for i, s in enumerate(trace) if s[1] >= last), None)
    if start is None or end is None or trace[end][1] <= trace[start][1]:
        return None
    seconds = trace[end][0] - trace[start][0]
    events = trace[end][1] - trace[start][1]
    # Each commit shows as the first sample with a higher count than the one before.
    steps: list[float] = []
    previous = trace[start]
    for sample in trace[start + 1 : end + 1]:
        if sample[1] > previous[1]:
            steps.append((sample[0] - previous[0]) / (sample[1] - previous[1]))
            previous = sample
    return {
        "events": events,
        "seconds": round(seconds, 4),
        "us_per_event": round(seconds / events * 1e6, 2),
        "events_per_s": round(events / seconds, 1) if seconds > 0 else 0.0,
        "commits": len(steps),
        "us_per_event_median": round(statistics.median(steps) * 1e6, 2),
    }


def run(env: BenchEnv, cfg: LengthsConfig) -> dict[str, Any]:
    beacons = live.MAX_BEACONS
    traffic = live.LiveTraffic(
        cfg.sessions,
        seed=41,
        start_ms=live.backlog_start_ms(now_ms(), beacons),
        phase=False,
        long_only=True,
    )
    items: list[drain.Item] = []
    bounds = [0]  # stream position where each round starts
    for beacon_round in traffic.rounds(beacons):
        items += live.entries(iter(beacon_round))
        bounds.append(len(items))
    stream = env.stream("lengths")
    client = env.redis()
    try:
        ensure_groups(client, stream)
    finally:
        client.close()
    filled = drain.fill_stream(env, stream, items)
    w = cfg.window
    windows = {
        "early": (bounds[1], bounds[1 + w], f"beacons 2-{1 + w}"),
        "late": (bounds[beacons - w], bounds[beacons], f"beacons {beacons - w + 1}-{beacons}"),
    }
    out: dict[str, Any] = {
        "sessions": cfg.sessions,
        "beacons": beacons,
        "backlog": filled,
        "windows": {k: {"first": a, "last": b, "label": t} for k, (a, b, t) in windows.items()},
        "processors": {},
    }
    for name in cfg.processors:
        env.truncate_all()
        trace: list[tuple[float, int]] = []
        result = drain.drain_one(
            env,
            stream,
            name,
            filled,
            cfg.timeout_s,
            trace=trace,
            sample_every_s=cfg.sample_every_s,
        )
        for key, (first, last, _) in windows.items():
            result[key] = window_cost(trace, first, last)
        early, late = result["early"], result["late"]
        result["late_over_early"] = (
            round(late["us_per_event_median"] / early["us_per_event_median"], 2)
            if early and late
            else None
        )
        out["processors"][name] = result
    env.delete_keys([stream])
    return out
